"""A pause after each failed metadata refresh of an aiokafka client, so an outage cannot spin a core.

aiokafka refreshes metadata in one background task per client, woken by `force_metadata_update()`.
Several of its loops wait for nothing but that refresh: the consumer's fetcher whenever a partition
has no leader, the producer's sender whenever a queued batch's partition has none. During a clean
broker shutdown a single-node broker answers metadata for about 0.1 s with every leader at -1 (its
partitions have moved off it and there is nowhere to move them); a client that refreshes in that
moment keeps leaderless metadata for the whole outage. Its refreshes then fail at once (connection
refused), so those loops go round without any pause: 98 % of a core and 14,000 log lines a second.
`retry_backoff_ms` does not apply to that path, so no client setting helps.

`install()` makes a failed refresh of a client's own metadata wait before it returns: 0.1 s after the
first failure, doubling up to `MAX_PAUSE_S` while the failures go on, and nothing once one succeeded.
Every loop that waits for a refresh is thereby paced to at most one round per pause, and a returning
broker is noticed within `MAX_PAUSE_S`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.client import AIOKafkaClient

FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 1.0

_Update = Callable[[AIOKafkaClient, Any, Any], Awaitable[bool]]
_failures: weakref.WeakKeyDictionary[AIOKafkaClient, int] = weakref.WeakKeyDictionary()


def pause_after(failures: int) -> float:
    """Seconds to wait after the `failures`-th failed refresh in a row (1 is the first)."""
    return min(MAX_PAUSE_S, FIRST_PAUSE_S * 2.0 ** (failures - 1))


def _paced(update: _Update) -> _Update:
    async def metadata_update(client: AIOKafkaClient, cluster: Any, topics: Any) -> bool:
        updated = await update(client, cluster, topics)
        if cluster is not client.cluster:  # a one-off query (`fetch_all_metadata`): its caller decides
            return updated
        if updated:
            _failures.pop(client, None)
        else:
            failures = _failures[client] = _failures.get(client, 0) + 1
            await asyncio.sleep(pause_after(failures))
        return updated

    metadata_update.paced = True  # type: ignore[attr-defined]
    return metadata_update


def install() -> None:
    """Pace every aiokafka client of this process (producers, consumers, admin); calling it again changes nothing."""
    current: Any = AIOKafkaClient._metadata_update
    if not getattr(current, "paced", False):
        AIOKafkaClient._metadata_update = _paced(current)
