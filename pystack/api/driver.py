"""Drive a TCP engine from inside an asyncio event loop: no thread of its own.

The engine is sans-I/O and single-threaded. The driver gives it a clock (``loop.time()``),
input (the link's batches, when the loop's selector says the link is readable) and
output (one ``poll`` + ``send`` per loop turn in which anything changed):

* link readable -> every waiting batch goes through ``engine.input_batch``; connection
  events reach transports synchronously, once per connection and batch; one flush is
  scheduled (``call_soon``) once the whole batch is fed, i.e. after every task the batch
  woke (a StreamReader's waiter), so the writes those tasks make on the next loop turn
  leave together, in one ``send`` (one kick of the AF_XDP socket), with the ACKs they
  piggyback.
* any change from the user side (write, close, read opening the window) calls
  :meth:`Driver.kick`: at most one flush per loop turn, however many connections wrote.
* one ``TimerHandle`` tracks ``engine.next_deadline()``; it is moved only when the deadline
  gets earlier (a timer that fires early just re-arms), so delayed-ACK churn costs little.

Other threads reach the engine with :meth:`Driver.call` (blocking) or :meth:`Driver.post`
(fire and forget); both hop into the loop with ``call_soon_threadsafe`` and kick after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pystack.api.link import Link
from pystack.stack import SegmentHandler, batch_feeder

__all__ = ["Driver"]

T = TypeVar("T")

MAX_BATCHES = 8  # link batches taken per readable wakeup before letting the loop run
PENDING_RETRY = 0.01  # seconds between retries of segments waiting for a neighbour


class Driver:
    """Runs ``handler`` (a TcpEngine, or a Host's handler: the engine plus its periodic
    tick) over ``link`` in one asyncio loop (see the module docstring)."""

    def __init__(self, handler: SegmentHandler, link: Link) -> None:
        self.engine = handler
        self.link = link
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self.turns = 0  # flushes done (for tests and benchmarks)
        self._flush_handle: asyncio.Handle | None = None  # a flush scheduled, not yet run
        self._feeding = False  # inside _on_ready: kicks wait for the end of the batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._retry: asyncio.TimerHandle | None = None

    # -- binding -----------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start driving in ``loop``; call from the thread that runs it."""
        if self.loop is not None:
            raise RuntimeError("this stack is already driven by an event loop")
        self.loop = loop
        self.thread_id = threading.get_ident()
        self.link.attach(loop, self._on_ready)
        self.kick()

    def unbind(self) -> None:
        """Stop driving (on the loop's thread): no more reads, timers or flushes."""
        self.link.detach()
        for h in (self._timer, self._retry):
            if h is not None:
                h.cancel()
        self._timer = self._retry = None
        self._cancel_flush()
        self.loop = None
        self.thread_id = None

    def in_thread(self) -> bool:
        """True on the loop's thread (or when no loop drives the engine yet)."""
        return self.thread_id is None or self.thread_id == threading.get_ident()

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    # -- other threads ----------------------------------------------------------------
    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run ``fn`` on the loop's thread and return its result (raise its exception)."""
        loop = self.loop
        if loop is None or self.in_thread() or not loop.is_running():
            # Nothing else can be driving the engine (a loop that stopped, e.g. after
            # asyncio.run returned, never will again): run it here.
            try:
                return fn()
            finally:
                self.kick()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller's thread
                fut.set_exception(e)
            self.kick()

        loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop's thread soon; do not wait."""
        loop = self.loop
        if loop is None or self.in_thread() or not loop.is_running():
            fn()
            self.kick()
            return

        def run() -> None:
            fn()
            self.kick()

        loop.call_soon_threadsafe(run)

    # -- the engine's turns ------------------------------------------------------------
    def kick(self) -> None:
        """Something changed: poll the engine and send on this loop turn (once)."""
        if self._flush_handle is not None or self._feeding:
            return  # already scheduled, or _on_ready schedules it after the whole batch
        loop = self.loop
        if loop is not None and not loop.is_closed():
            self._flush_handle = loop.call_soon(self._flush)

    def flush_now(self) -> None:
        """Poll and send immediately (used at shutdown)."""
        self._cancel_flush()
        self._flush()

    def _cancel_flush(self) -> None:
        h = self._flush_handle
        if h is not None:
            h.cancel()
            self._flush_handle = None

    def _on_ready(self) -> None:
        loop = self.loop
        if loop is None:
            return
        eng = self.engine
        feed = batch_feeder(eng)
        receive = self.link.receive
        now = loop.time()
        self._feeding = True
        try:
            for _ in range(MAX_BATCHES):
                segs = receive()
                if not segs:
                    break
                feed(segs, now)  # (input_batch: a connection's events fire once per batch)
                if self.loop is None:
                    break  # a callback closed the stack: the link is gone
        finally:
            self._feeding = False
            # The flush goes after every callback the batch scheduled (tasks it woke): one
            # already pending would run before them and their writes would need another.
            self._cancel_flush()
            self.kick()

    def _flush(self, at: float = 0.0) -> None:
        self._flush_handle = None
        loop = self.loop
        eng = self.engine
        now = loop.time() if loop is not None else time.monotonic()
        if at > now:
            now = at  # a timer fires within the clock's resolution of its time: it is due
        d = eng.next_deadline()
        if d is not None and d <= now:
            eng.on_timer(now)
        segs = eng.poll(now)
        link = self.link
        if segs or link.pending:
            link.send(segs)
        self.turns += 1
        if loop is None:
            return
        d = eng.next_deadline()
        if d is not None:
            if d <= now:
                self.kick()  # an event callback wrote during poll
            elif self._timer is None or d < self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = d
                self._timer = loop.call_at(d, self._on_timer)
        if link.pending and self._retry is None:
            self._retry = loop.call_later(PENDING_RETRY, self._on_retry)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush(self._timer_at)

    def _on_retry(self) -> None:
        self._retry = None
        self._flush()
