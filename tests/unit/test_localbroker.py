"""The local broker's storage format arguments."""

from __future__ import annotations

import uuid

import pytest

from streamproc import localbroker


def test_a_cluster_id_never_starts_with_a_dash_that_the_storage_tool_would_read_as_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))

    cluster_id = localbroker.new_cluster_id()

    assert cluster_id == "AQAAAAAAAAAAAAAAAAAAAA"


def test_a_cluster_id_is_22_url_safe_characters() -> None:
    cluster_id = localbroker.new_cluster_id()

    assert len(cluster_id) == 22
    assert not cluster_id.startswith("-")
