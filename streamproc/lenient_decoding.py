"""Fetched records whose header key is not UTF-8 reach the worker instead of wedging their partition.

aiokafka decodes header keys as UTF-8 while it parses a fetched batch: such a key raises
(`UnicodeDecodeError` from the C parser, `CorruptRecordException` from the Python one) out of
`getmany`. Worse, the raise kills the fetcher's record generator (`PartitionRecords._unpack_records`)
after it has advanced the position past the good records before the bad one, so the next `getmany`
drops those silently, refetches the bad record and raises again, forever. aiokafka offers no
option for this (no header decoder, no error callback), hence this module, written by hand.

`install()` replaces the `MemoryRecords` class that `aiokafka.consumer.fetcher` wraps around each
fetched partition's bytes: the one point both parsers pass through. (`memory_records` picks the
Cython `MemoryRecords` unless `AIOKAFKA_NO_EXTENSIONS`, and the Cython one builds C batches itself,
so replacing `memory_records.DefaultRecordBatch` would only reach the pure-Python path.) aiokafka
still parses every batch; only when it fails on a v2 batch is that batch parsed again by
`read_batch`, which decodes header keys with `surrogateescape` (so `key.encode("utf-8",
"surrogateescape")` gives back the original bytes), and its records come from there. A batch
malformed in any other way still raises aiokafka's error; a corrupted one never gets here, since
the fetcher checks the CRC first.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as fetcher
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBase
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint_py  # the C one reads past the end of a truncated buffer

_HEADER = DefaultRecordBase.HEADER_STRUCT  # the v2 batch header, up to and including the record count
_LENGTH = struct.Struct(">i")  # a batch's length, after its base offset
_LENGTH_AT = 8
_LOG_OVERHEAD = 12  # base offset and length: the bytes a batch's length does not count
_MAGIC_AT = 16
_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {
    DefaultRecordBase.CODEC_GZIP: gzip_decode,
    DefaultRecordBase.CODEC_SNAPPY: snappy_decode,
    DefaultRecordBase.CODEC_LZ4: lz4_decode,
    DefaultRecordBase.CODEC_ZSTD: zstd_decode,
}


@dataclass(frozen=True, slots=True)
class LenientRecord:
    """A record of a batch aiokafka could not parse, with what the fetcher reads of a record."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def read_batch(raw: bytes | memoryview) -> list[LenientRecord]:
    """Every record of a v2 record batch, as aiokafka reads them except that header keys are decoded
    with `surrogateescape`; `CorruptRecordException` for a batch that is malformed otherwise."""
    try:
        base_offset, _, _, magic, _, attributes, _, first_ts, max_ts, _, _, _, count = _HEADER.unpack_from(raw)
        if magic != 2:
            raise CorruptRecordException(f"not a v2 record batch (magic {magic})")
        data = bytes(raw[_HEADER.size :])
        codec = attributes & DefaultRecordBase.CODEC_MASK
        if codec != DefaultRecordBase.CODEC_NONE:
            data = _DECOMPRESS[codec](data)
        log_append_time = bool(attributes & DefaultRecordBase.TIMESTAMP_TYPE_MASK)
        buffer = bytearray(data)
        records = []
        pos = 0
        for _ in range(count):
            record, pos = _read_record(buffer, pos)
            offset_delta, ts_delta, key, value, headers = record
            timestamp = max_ts if log_append_time else first_ts + ts_delta
            records.append(
                LenientRecord(base_offset + offset_delta, timestamp, int(log_append_time), key, value, headers)
            )
        if pos != len(buffer):
            raise CorruptRecordException(f"{len(buffer) - pos} unconsumed bytes after all records")
    except CorruptRecordException:
        raise
    except Exception as exc:  # struct, varint and slice errors, and each codec's own: all a malformed batch
        raise CorruptRecordException(f"invalid record batch: {exc!r}") from exc
    return records


_Fields = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def _read_record(buffer: bytearray, pos: int) -> tuple[_Fields, int]:
    """(offset delta, timestamp delta, key, value, headers) of the record at `pos`, and the position after it."""
    length, pos = decode_varint_py(buffer, pos)
    start = pos
    _, pos = decode_varint_py(buffer, pos)  # attributes: none defined for records
    ts_delta, pos = decode_varint_py(buffer, pos)
    offset_delta, pos = decode_varint_py(buffer, pos)
    key, pos = _read_bytes(buffer, pos)
    value, pos = _read_bytes(buffer, pos)
    header_count, pos = decode_varint_py(buffer, pos)
    if header_count < 0:
        raise CorruptRecordException(f"invalid number of record headers {header_count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(header_count):
        name, pos = _read_bytes(buffer, pos)
        if name is None:
            raise CorruptRecordException("a header key is null")
        header_value, pos = _read_bytes(buffer, pos)
        headers.append((name.decode("utf-8", "surrogateescape"), header_value))
    if pos - start != length:
        raise CorruptRecordException(f"record length {length}, but {pos - start} bytes read")
    return (offset_delta, ts_delta, key, value, headers), pos


def _read_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    """A varint length and that many bytes; a negative length is null."""
    size, pos = decode_varint_py(buffer, pos)
    if size < 0:
        return None, pos
    end = pos + size
    if end > len(buffer):
        raise CorruptRecordException(f"a {size}-byte field runs past the end of the batch")
    return bytes(buffer[pos:end]), end


class _LenientBatch:
    """One fetched v2 batch: aiokafka's, whose records continue from `read_batch` if aiokafka fails."""

    __slots__ = ("_batch", "_raw")

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)  # offsets, flags, validate_crc(): the fetcher's other reads

    def __next__(self) -> Any:
        return next(self._batch)  # the fetcher reads a control batch's marker this way

    def __iter__(self) -> Iterator[Any]:
        """The batch's records, read at once: a list costs nothing per record, where a generator
        wrapping aiokafka's iterator cost a fifth of its parsing time."""
        try:
            return iter(list(self._batch))
        except (CorruptRecordException, UnicodeDecodeError) as exc:
            try:
                return iter(read_batch(self._raw))
            except CorruptRecordException:
                raise exc from None


class _LenientMemoryRecords:
    """aiokafka's `MemoryRecords` of one fetched partition, its v2 batches wrapped in `_LenientBatch`.

    It follows the batch boundaries alongside aiokafka's, since the C batches do not expose their bytes.
    """

    __slots__ = ("_buffer", "_pos", "_records")

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._buffer = memoryview(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        self._pos = start + _LOG_OVERHEAD + _LENGTH.unpack_from(self._buffer, start + _LENGTH_AT)[0]
        if self._buffer[start + _MAGIC_AT] < 2:
            return batch  # v0 and v1 records have no headers
        return _LenientBatch(batch, self._buffer[start : self._pos])


def install() -> None:
    """Make every consumer of this process read such batches leniently; calling it again changes nothing."""
    fetcher.MemoryRecords = _LenientMemoryRecords
