"""Asking `streamproc web` for a task's status over HTTP (what `Producer.status()` does when
`STREAMPROC_WEB_URL` is set): one point lookup instead of reading the status topic.

Every failure is a `StreamprocError` with one line naming the URL, so a caller never has to tell
httpx's exceptions apart.
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import quote

import httpx

from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskStatus

DEFAULT_TIMEOUT_S = 5.0


class WebClient:
    """A connection pool to one `streamproc web`; reuse it for every lookup of a process."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def status(self, task_id: str) -> TaskStatus:
        """The status of `task_id` (state `unknown` when the view has none within the TTL)."""
        return (await self.lookup(task_id))[0]

    async def lookup(self, task_id: str) -> tuple[TaskStatus, dict[int, int]]:
        """The status of `task_id`, and each status partition's offset before which the view had read
        everything when it answered (where to follow the partition from)."""
        where = f"streamproc web at {self.base_url}"
        try:
            response = await self._http.get(f"/api/tasks/{quote(task_id, safe='')}")
        except httpx.TimeoutException:
            raise StreamprocError(f"{where} did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise StreamprocError(f"{where} is unreachable: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise StreamprocError(f"{where} answered HTTP {response.status_code} to a status lookup of {task_id!r}")
        status = TaskStatus.from_json(response.content)
        if status is None or status.task_id != task_id:
            raise StreamprocError(f"{where} answered something that is not the status of {task_id!r}")
        read_to = response.json().get("read_to")
        positions = {int(p): o for p, o in read_to.items() if isinstance(o, int)} if isinstance(read_to, dict) else {}
        return status, positions

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def fetch_status(base_url: str, task_id: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> TaskStatus:  # noqa: ASYNC109 (the HTTP timeout)
    """One lookup with a client of its own (a process doing many should keep a `WebClient`)."""
    async with WebClient(base_url, timeout=timeout) as client:
        return await client.status(task_id)
