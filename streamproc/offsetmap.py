"""Finished offsets above a committed one, carried in the commit's metadata string.

Kafka commits one offset per partition: everything below it is done. Work finished above it (behind
a slow task at the committed offset) would run again on the partition's next owner. As Confluent's
Parallel Consumer does, the worker writes those offsets into the commit's metadata, and a new owner
skips them (KAFKA-NOTES "Commit metadata as an offset map").

Layout: `sp1:` + base64 of the zlib-compressed bitset whose bit *i* (least significant bit first)
says offset `committed + 1 + i` finished. The worker writes `sp2:<ms>:<0|1>:` + the same base64:
when the commit was made (its own clock) and whether it was its last for the partition (a release),
which tells the next owner where to look for work finished after it (`lifecycle.restore`).
A bitset costs one bit per offset whatever the pattern,
so its worst case is known: `MAX_SPAN` offsets always fit the broker's `offset.metadata.max.bytes`
default of 4096, and the worker never lets a partition's unfinished span exceed that. Metadata this
module did not write (another tool's, a corrupt one) decodes to "nothing known": the tasks then run
again, which is the at-least-once default, never a loss.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable

PREFIX = "sp1:"
NOTED_PREFIX = "sp2:"
MAX_METADATA_BYTES = 4096  # the broker's `offset.metadata.max.bytes` default
# Worst case: incompressible bits, zlib's stored-block overhead, base64's 4/3 and the sp2 prefix.
MAX_SPAN = 24_000


def encode(committed: int, finished: Iterable[int], *, at_ms: int | None = None, final: bool = False) -> str:
    """The metadata for a commit of `committed` with `finished` offsets (all above it) done; with
    `at_ms`, noting the commit's time and whether it is `final` (sp2: the owner let the partition go;
    for people reading the group's offsets, a successor reads the statuses either way)."""
    bitset = _bitset(committed, finished)
    if at_ms is not None:
        return f"{NOTED_PREFIX}{at_ms}:{int(final)}:{bitset}"
    return PREFIX + bitset if bitset else ""


def noted_at(metadata: str) -> int | None:
    """The commit time (ms) sp2 metadata notes; None for any other."""
    if not metadata.startswith(NOTED_PREFIX):
        return None
    at = metadata[len(NOTED_PREFIX) :].split(":", 1)[0]
    return int(at) if at.isdigit() and len(at) < 16 else None


def _bitset(committed: int, finished: Iterable[int]) -> str:
    above = [offset - committed - 1 for offset in finished]
    if not above:
        return ""
    bits = bytearray((max(above) >> 3) + 1)
    for i in above:
        if i < 0:
            raise ValueError(f"offset {committed + 1 + i} is not above the committed offset {committed}")
        bits[i >> 3] |= 1 << (i & 7)
    return base64.b64encode(zlib.compress(bytes(bits), 9)).decode("ascii")


def decode(committed: int, metadata: str) -> set[int]:
    """The finished offsets a commit of `committed` carries; empty for metadata not written by `encode`."""
    if metadata.startswith(NOTED_PREFIX):
        encoded = metadata.split(":", 3)[3] if metadata.count(":") >= 3 else ""
    elif metadata.startswith(PREFIX):
        encoded = metadata[len(PREFIX) :]
    else:
        return set()
    if not encoded:
        return set()
    try:
        # Bounded, so foreign metadata cannot inflate into a huge set.
        bits = zlib.decompressobj().decompress(base64.b64decode(encoded, validate=True), MAX_SPAN // 8)
    except (binascii.Error, zlib.error, ValueError):
        return set()
    base = committed + 1
    return {base + (i << 3) + bit for i, byte in enumerate(bits) if byte for bit in range(8) if byte >> bit & 1}
