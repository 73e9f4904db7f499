"""Outbound delivery to platforms: one ordered queue per channel, retried with backoff.

Every send to a platform channel is a job in that channel's queue, run one at a time, so
messages and edits keep their order per channel while channels proceed independently.
A job that raises :class:`RateLimited` is retried after the platform's ``Retry-After``;
any other error except :class:`PermanentError`, and a call hanging past ``job_timeout``, is
retried with capped exponential backoff (a platform outage delays delivery, it loses
nothing). Permanent errors are logged and the
job is dropped, because retrying a request the platform rejects cannot succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[Any]]


class RateLimited(Exception):
    """The platform answered 429: wait ``retry_after`` seconds, then retry."""

    def __init__(self, retry_after: float, detail: str = "rate limited") -> None:
        super().__init__(f"{detail}; retry after {retry_after:g} s")
        self.retry_after = max(0.0, float(retry_after))


class PermanentError(Exception):
    """The platform rejected the request for good (bad channel, no permission, ...)."""


class Outbox:
    """Ordered, retried delivery per ``(platform, channel)`` key."""

    def __init__(
        self,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_attempts: int | None = None,
        job_timeout: float = 60.0,
    ) -> None:
        self.job_timeout = job_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self._queues: dict[tuple[str, str], asyncio.Queue[tuple[str, Job]]] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.retries = 0
        self.dropped = 0

    def put(self, key: tuple[str, str], job: Job, label: str = "send") -> None:
        """Queue ``job`` behind everything already queued for ``key``."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.create_task(self._work(key, queue), name=f"outbox:{key}")
        queue.put_nowait((label, job))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) until every queue is empty and idle."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    async def _work(self, key: tuple[str, str], queue: asyncio.Queue[tuple[str, Job]]) -> None:
        while True:
            label, job = await queue.get()
            try:
                await self._run(key, label, job)
            finally:
                queue.task_done()

    async def _run(self, key: tuple[str, str], label: str, job: Job) -> None:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self.job_timeout):
                    await job()
                return
            except asyncio.CancelledError:
                raise
            except RateLimited as exc:
                self.retries += 1
                log.info("%s %s: %s", key, label, exc)
                await asyncio.sleep(exc.retry_after)
            except PermanentError as exc:
                self.dropped += 1
                log.error("%s %s dropped: %s", key, label, exc)
                return
            except Exception as exc:
                attempt += 1
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    self.dropped += 1
                    log.error("%s %s dropped after %d attempts: %s", key, label, attempt, exc)
                    return
                self.retries += 1
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                log.warning("%s %s failed (%s); retry in %.1f s", key, label, exc, delay)
                await asyncio.sleep(delay)
