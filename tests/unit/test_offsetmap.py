import random

from hypothesis import given
from hypothesis import strategies as st

from streamproc import offsetmap


@given(st.integers(0, 2**62), st.sets(st.integers(1, offsetmap.MAX_SPAN)))
def test_finished_offsets_round_trip(committed: int, above: set[int]) -> None:
    finished = {committed + i for i in above}
    assert offsetmap.decode(committed, offsetmap.encode(committed, finished)) == finished


def test_the_worst_case_map_fits_the_brokers_metadata_limit() -> None:
    rng = random.Random(7)
    for _ in range(20):  # random halves of the span: incompressible bits
        finished = {1000 + i for i in range(1, offsetmap.MAX_SPAN + 1) if rng.random() < 0.5}
        assert len(offsetmap.encode(1000, finished)) <= offsetmap.MAX_METADATA_BYTES


def test_metadata_written_by_others_means_nothing_is_known() -> None:
    assert offsetmap.decode(5, "") == set()
    assert offsetmap.decode(5, "replayed 1-3") == set()
    assert offsetmap.decode(5, "sp1:not base64!") == set()
    assert offsetmap.decode(5, "sp1:" + "QUFB") == set()  # base64, but not zlib


def test_a_map_that_would_inflate_past_the_span_is_cut_there() -> None:
    import base64
    import zlib

    bomb = offsetmap.PREFIX + base64.b64encode(zlib.compress(b"\xff" * 10_000_000)).decode()
    assert len(offsetmap.decode(0, bomb)) <= offsetmap.MAX_SPAN
