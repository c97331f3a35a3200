"""Signatures, chain, group and chord before anything is sent (SPEC §13): construction and the
type check across chain steps; the workflow header's round trip."""

from __future__ import annotations

import uuid

import pytest

from streamproc import Signature, chain, chord, group
from streamproc.envelope import ROOT_ID, WORKFLOW
from streamproc.errors import StreamprocError
from streamproc.workflows import wire
from tests.workflow_app import Priced, app, charge, count, notify, price, total


def test_signatures_fix_fields_by_task_or_by_name() -> None:
    sig = price.s({"label": "a"})
    assert sig == Signature("price", {"label": "a"}) and sig.task is price and sig.model is not None
    assert app.signature("price", {"label": "a"}).task is price
    unknown = app.signature("elsewhere")
    assert unknown.task is None and unknown.payload == {}
    assert charge.s(Priced(label="x", cents=1, tax=0)).payload == {"label": "x", "cents": 1, "tax": 0}
    with pytest.raises(StreamprocError, match="not JSON-serialisable"):
        price.s({"label": object()})


def test_a_chain_whose_results_fit_is_built() -> None:
    built = chain(price.s({"label": "a"}), charge.s(), notify.s({"channel": "mail"}))
    assert [step.name for step in built.steps] == ["price", "charge", "notify"]
    chain(app.signature("elsewhere"), charge.s())  # unknown return annotation: not checked
    chain(notify.s(), charge.s())  # a dict result: not checked


def test_a_chain_whose_step_cannot_feed_the_next_is_refused_naming_both() -> None:
    with pytest.raises(StreamprocError) as refused:
        chain(price.s({"label": "a"}), notify.s())
    message = str(refused.value)
    assert "chain step 1 (price) cannot feed step 2 (notify)" in message
    assert "channel, total" in message and "Notice" in message and "Priced" in message
    assert "\n" not in message
    with pytest.raises(StreamprocError, match=r"step 1 \(count\) cannot feed step 2 \(charge\): it returns int"):
        chain(count.s(), charge.s())
    chain(price.s({"label": "a"}), notify.s({"channel": "mail", "total": 1}))  # fixed fields cover them


def test_groups_and_chords() -> None:
    members = [price.s({"label": str(i)}) for i in range(3)]
    assert group(members) == group(*members)
    made = chord(group(members), total.s({"label": "sum"}))
    assert made.callback.name == "total" and len(made.group.members) == 3
    with pytest.raises(StreamprocError, match="needs label"):
        chord(members, total.s())
    with pytest.raises(StreamprocError, match="takes signatures"):
        group([price])  # type: ignore[list-item]
    with pytest.raises(StreamprocError, match="at least one"):
        chain()


def test_the_workflow_header_round_trips_and_junk_reads_as_none() -> None:
    root = str(uuid.uuid4())
    rest = (wire.Step("charge", {"x": 1}, 3), wire.Step("notify", {}, 5))
    position = wire.ChainStep(root, 0, 3, wire.step_id(root, 2), 5, rest)
    headers = {ROOT_ID: root, WORKFLOW: position.header().decode()}
    assert wire.read(headers) == position
    assert wire.step_id(root, 0) == root and wire.step_id(root, 1) != wire.step_id(root, 2)
    member = wire.ChordMember(root, 4, 2, 7, 1000, wire.Step("total", {"label": "s"}, 7))
    assert wire.read({WORKFLOW: member.header().decode()}) == member
    assert len(set(member.member_ids())) == 4 and member.callback_id == wire.callback_id(root)
    for junk in ("", "{", "[]", '{"chain": {}}', '{"chord": 1}', '{"group": {"group": "g"}}'):
        assert wire.read({WORKFLOW: junk}) is None
