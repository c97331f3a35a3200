"""`--loop`: asyncio's loop by default, uvloop's on request, a clear error when uvloop is missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from streamproc.errors import StreamprocError
from streamproc.event_loop import EventLoop


def test_asyncio_is_the_default_loop_factory() -> None:
    assert EventLoop.ASYNCIO.factory() is None  # `asyncio.Runner`'s own loop


def test_uvloop_gives_uvloops_loop() -> None:
    factory = EventLoop.UVLOOP.factory()
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")


def test_uvloop_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with pytest.raises(StreamprocError, match=r"--loop uvloop needs uvloop: pip install 'streamproc\[uvloop\]'"):
        EventLoop.UVLOOP.factory()
