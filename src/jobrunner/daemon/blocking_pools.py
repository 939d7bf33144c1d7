"""The daemon's bounded pools for blocking handler code: `blocking_threads` threads, and a
process pool of `blocking_processes` workers started with the first call that needs it.

The threads are the daemon's own rather than a ThreadPoolExecutor's: Python joins an executor's
threads at exit, so one stuck call would keep a stopped daemon from ever exiting. Ours are daemon
threads, started as calls need them and never more than the bound: a call that never returns
holds one for good and cannot multiply.

A call whose job stops waiting (timeout, cancel request, lost lease, shutdown) is abandoned: a
call still queued is dropped, a running one is told through `jobrunner.blocking.cancelled()` and
its result is discarded when it ends. The job's outcome does not wait for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from jobrunner.blocking import run_cancellably

if TYPE_CHECKING:
    import multiprocessing.process
    from concurrent.futures import ProcessPoolExecutor

T = TypeVar("T")

_WorkItem = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


# how often a worker process checks that its daemon is still there
PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(daemon_pid: int) -> None:
    """A worker process's initializer: end the process when its daemon is gone. A daemon killed
    without its shutdown (SIGKILL, the OOM killer) cannot stop its workers, and they would not
    notice: each holds its own end of the pool's queues, so none of them ever reads an EOF and
    they would wait for calls forever, a running call to its end first. Under systemd or in a
    container the whole group goes with the daemon anyway; this covers every other way to run it."""

    def watch() -> None:
        while os.getppid() == daemon_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="jobrunner-exit-with-daemon", daemon=True).start()


class BoundedThreads:
    """At most `size` daemon threads running submitted calls in submission order."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._name = name
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn, args))
        # a thread that is idle takes it; else start one while under the bound
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if len(self._threads) < self.size:
                    thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                    self._threads.append(thread)
                    thread.start()
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(*item)
            del item  # nothing of a finished call stays alive in an idle thread

    def _run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():  # abandoned before it started
            self._idle.release()
            return
        try:
            result = fn(*args)
        except BaseException as exc:
            # idle before the caller hears of it: the next call it makes reuses this thread
            self._idle.release()
            future.set_exception(exc)
        else:
            self._idle.release()
            future.set_result(result)

    def shutdown(self) -> None:
        """Idle threads end; a thread still in a call ends with the process (a daemon thread)."""
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)


class BlockingPools:
    def __init__(self, threads: int, processes: int | None, log: structlog.typing.FilteringBoundLogger) -> None:
        self.threads = BoundedThreads(threads, "jobrunner-blocking")
        self._process_workers = processes or os.cpu_count() or 1
        self._processes: ProcessPoolExecutor | None = None
        self._log = log
        self._lock = threading.Lock()
        # calls whose job stopped waiting while they ran: they hold a pool place until they end
        self.abandoned = 0
        self._processes_busy = 0

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        cancel = threading.Event()
        context = contextvars.copy_context()  # the caller's log context (and trace) go along
        future = self.threads.submit(context.run, run_cancellably, cancel, fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            self._abandoned(future, fn)
            raise

    async def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        if self._processes is None:
            # loaded with the first process call: a daemon that never makes one never loads them
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, never fork: a forked copy of a running daemon inherits its threads' locks
            self._processes = ProcessPoolExecutor(
                self._process_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        pool = self._processes
        future = pool.submit(fn, *args)
        self._processes_busy += 1
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._abandoned(future, fn)
            raise
        except BrokenExecutor:  # BrokenProcessPool: its module loads multiprocessing, only imported on use
            # a worker died (killed, out of memory, a crash in C code): the pool fails every call
            # from now on, so the next call gets a new one; this call's job fails and is retried
            if self._processes is pool:
                self._processes = None
                pool.shutdown(wait=False, cancel_futures=True)
                self._log.error("a blocking worker process died: the process pool is started again")
            raise
        finally:
            self._processes_busy -= 1

    def _abandoned(self, future: Future[Any], fn: Callable[..., Any]) -> None:
        """Its job stopped waiting: a queued call is dropped, a running one counted until it ends."""
        if future.cancel():
            return
        with self._lock:
            self.abandoned += 1
        name = getattr(fn, "__qualname__", repr(fn))
        self._log.warning(
            "a blocking call runs on after its job stopped waiting for it; its result will be discarded",
            call=name,
            abandoned=self.abandoned,
            blocking_threads=self.threads.size,
        )
        future.add_done_callback(lambda _: self._abandoned_ended(name))

    def _abandoned_ended(self, name: str) -> None:
        with self._lock:
            self.abandoned -= 1
        self._log.info("an abandoned blocking call has ended; its result was discarded", call=name)

    def close(self) -> None:
        """The daemon stops: idle threads end, and the worker processes are terminated if a call
        still runs in one (a process, unlike a thread, would keep the daemon from exiting)."""
        self.threads.shutdown()
        pool, self._processes = self._processes, None
        if pool is None:
            return
        busy = self._processes_busy > 0 or self.abandoned > 0
        pool.shutdown(wait=False, cancel_futures=True)
        if busy:
            # ProcessPoolExecutor has no way to stop a running call before Python 3.14's
            # terminate_workers(): end its workers ourselves
            workers: dict[int, multiprocessing.process.BaseProcess] = getattr(pool, "_processes", None) or {}
            for process in list(workers.values()):
                process.terminate()
