"""The one thread that owns the sqlite connection and runs every database call, in submission order.

A thread hop is the dominant cost of a storage call, so jobs queued while the thread was busy are run as
one batch and their results handed back to the event loop with a single wake-up. Consecutive grouped
jobs of a batch (finished turns, from several scopes) share one transaction, each in its own savepoint:
one commit instead of one each, and every result is handed back only after that commit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from acechat.storage.errors import StoreClosedError

T = TypeVar("T")

# Bounds how long the first result of a busy batch waits for the rest of it.
MAX_BATCH = 64

# How a job runs: alone (its own transaction if it wants one), grouped with its neighbours, or last.
ALONE, GROUPED, LAST = 0, 1, 2
_Job = tuple[Callable[[Database], Any], "asyncio.Future[Any]", int]
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
            self._jobs.put((Database.close, self._loop.create_future(), LAST))
            raise

    def submit(self, fn: Callable[[Database], T], *, grouped: bool = False) -> asyncio.Future[T]:
        """Queue `fn`; once queued it runs even if the caller stops waiting.

        A `grouped` job must not open a transaction: it runs inside one shared with the grouped jobs
        queued next to it; if it raises, only its own writes are undone."""
        if self._stopping:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future, GROUPED if grouped else ALONE))
        return future

    async def stop(self, finish: Callable[[Database], None]) -> None:
        """Run the queued jobs, then `finish` (which must close the connection), then end the thread."""
        self._stopping = True
        future: asyncio.Future[None] = self._loop.create_future()
        self._jobs.put((finish, future, LAST))
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
            start = 0
            while start < len(batch):
                fn, future, kind = batch[start]
                if kind == GROUPED:
                    end = start + 1
                    while end < len(batch) and batch[end][2] == GROUPED:
                        end += 1
                    outcomes += _run_group(db, batch[start:end])
                    start = end
                    continue
                try:
                    outcomes.append((future, fn(db), None))
                except Exception as exc:
                    outcomes.append((future, None, exc))
                start += 1
                if kind == LAST:
                    last = True
                    break
            delivered = self._deliver(outcomes)
            if last:
                return
            if not delivered:
                db.close()
                return


def _run_group(db: Database, group: list[_Job]) -> list[_Outcome]:
    """Run grouped jobs in one write transaction; every job fails if the commit does."""
    outcomes: list[_Outcome] = []
    alone = len(group) == 1
    try:
        # IMMEDIATE: take the write lock up front, so no job fails half way with SQLITE_BUSY.
        db.execute("BEGIN IMMEDIATE")
        for fn, future, _ in group:
            if not alone:
                db.execute("SAVEPOINT job")
            try:
                result = fn(db)
            except Exception as exc:
                if alone:
                    raise
                db.execute("ROLLBACK TO job")
                db.execute("RELEASE job")
                outcomes.append((future, None, exc))
                continue
            if not alone:
                db.execute("RELEASE job")
            outcomes.append((future, result, None))
        db.execute("COMMIT")
    except Exception as exc:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        return [(future, None, exc) for _, future, _ in group]
    return outcomes
