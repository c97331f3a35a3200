"""`tests.worker_app:app`, imported only once the file `STREAMPROC_TEST_RELEASE` names exists.

A worker loading it is held in start-up (after the CLI's imports, before its event loop) for as
long as a test needs: the startup SIGTERM test signals it there.
"""

import os
import time
from pathlib import Path

_release = Path(os.environ["STREAMPROC_TEST_RELEASE"])
_deadline = time.monotonic() + 60
while not _release.exists() and time.monotonic() < _deadline:
    time.sleep(0.01)

from tests.worker_app import app  # noqa: E402

__all__ = ["app"]
