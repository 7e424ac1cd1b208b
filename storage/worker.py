"""The one thread that owns the sqlite connection and runs every database call, in submission order.

A thread hop is the dominant cost of a storage call, so jobs queued while the thread was busy are run as
one batch and their results handed back to the event loop with a single wake-up.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from storage.errors import StoreClosedError

T = TypeVar("T")

# Bounds how long the first result of a busy batch waits for the rest of it.
MAX_BATCH = 64

_Job = tuple[Callable[[Database], Any], "asyncio.Future[Any]", bool]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class DatabaseThread:
    """Runs `fn(db)` jobs on a dedicated thread; the connection is made there and never leaves it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False

    async def start(self, connect: Callable[[], Database]) -> None:
        """Start the thread and connect on it; raises what `connect` raised."""
        opened: asyncio.Future[None] = self._loop.create_future()
        # Daemon: a store its owner never closed must not keep the interpreter from exiting.
        self._thread = threading.Thread(
            target=self._main, args=(connect, opened), name=self.name, daemon=True
        )
        self._thread.start()
        try:
            await opened
        except asyncio.CancelledError:
            # Nobody will own this store: have the thread close whatever it connected and end.
            self._stopping = True
            self._jobs.put((Database.close, self._loop.create_future(), True))
            raise

    def submit(self, fn: Callable[[Database], T]) -> asyncio.Future[T]:
        """Queue `fn`; once queued it runs even if the caller stops waiting."""
        if self._stopping:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future, False))
        return future

    async def stop(self, finish: Callable[[Database], None]) -> None:
        """Run the queued jobs, then `finish` (which must close the connection), then end the thread."""
        self._stopping = True
        future: asyncio.Future[None] = self._loop.create_future()
        self._jobs.put((finish, future, True))
        try:
            await future
        finally:
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join)

    def _deliver(self, outcomes: list[_Outcome]) -> bool:
        try:
            self._loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            return False
        return True

    def _main(self, connect: Callable[[], Database], opened: asyncio.Future[None]) -> None:
        try:
            db = connect()
        except Exception as exc:
            self._deliver([(opened, None, exc)])
            return
        if not self._deliver([(opened, None, None)]):
            db.close()
            return
        while True:
            batch = [self._jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            outcomes: list[_Outcome] = []
            last = False
            for fn, future, last in batch:
                try:
                    outcomes.append((future, fn(db), None))
                except Exception as exc:
                    outcomes.append((future, None, exc))
                if last:
                    break
            delivered = self._deliver(outcomes)
            if last:
                return
            if not delivered:
                db.close()
                return
