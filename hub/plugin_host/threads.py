"""A thread pool of daemon threads for plugins' plain-function hooks.

``ThreadPoolExecutor`` joins its threads when the interpreter exits, so one plugin stuck in
a blocking call would keep ``lydian serve`` from ever stopping. These threads are daemons:
the hub gives up on a stuck call after ``plugin_hook_timeout`` and the process can still
exit. Idle threads are reused; at most ``max_workers`` exist.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = None


class DaemonExecutor(Executor):
    def __init__(self, max_workers: int = 8, name: str = "lydian-plugin") -> None:
        self._max = max_workers
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._counter = itertools.count()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the plugin thread pool is shut down")
        future: Future[Any] = Future()
        self._work.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if len(self._threads) < self._max:
                    thread = threading.Thread(
                        target=self._worker, name=f"{self._name}-{next(self._counter)}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
        return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop idle threads; a thread stuck in a plugin is left behind (it is a daemon)."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        for _ in self._threads:
            self._work.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()
