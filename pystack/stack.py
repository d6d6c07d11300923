"""The stack's event loop: a Datapath below, a segment handler (the TCP engine) above.

A handler has the engine's sans-I/O shape: `input(seg, now)` for each received segment
(or, if it has one, `input_batch(segs, now)` for a whole batch), `poll(now)` for the
segments to send, `next_deadline()` and `on_timer(now)` for timers.
The loop receives a whole batch, feeds it, then polls once, so replies to a batch leave in
one batch (and ACKs for a burst of data coalesce in the engine).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from pystack.iface.datapath import Datapath
from pystack.tcp.engine import TcpEngine
from pystack.wire.segment import ACK, RST, TcpSegment

log = logging.getLogger("pystack.stack")

MAX_IDLE_WAIT = 0.2  # seconds; bounds how late a stop request is noticed
# Busy polling (the idea of Linux's net.core.busy_poll): after a turn that received or
# sent something, spin on the rx ring this many microseconds before sleeping in poll().
# A reply to what we just sent typically comes back within tens of microseconds; catching
# it without a poll() wakeup saves the scheduler round trip. Bounded, and only right after
# activity, so an idle stack still uses no CPU. 0 disables it.
BUSY_POLL_US = int(os.environ.get("PYSTACK_BUSY_POLL_US", "100"))

T = TypeVar("T")


class SegmentHandler(Protocol):
    def input(self, seg: TcpSegment, now: float) -> None: ...
    def poll(self, now: float) -> list[TcpSegment]: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...


def batch_feeder(handler: SegmentHandler) -> Callable[[list[TcpSegment], float], None]:
    """How to feed a received batch to ``handler``: its ``input_batch`` (events once per
    batch, TcpEngine.input_batch) if it has one, else ``input`` segment by segment."""
    batch = getattr(handler, "input_batch", None)
    if batch is not None:
        return batch  # type: ignore[no-any-return]

    def each(segs: list[TcpSegment], now: float) -> None:
        for seg in segs:
            handler.input(seg, now)

    return each


class RefuseAll:
    """Answers every segment as a CLOSED port does (RFC 9293 §3.10.7.1): a RST, never a
    RST for a RST. The data path's first handler, and a reference for the engine's."""

    def __init__(self) -> None:
        self._out: list[TcpSegment] = []
        self.out_rsts = 0

    def input(self, seg: TcpSegment, now: float) -> None:
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, RST | ACK
        self._out.append(TcpSegment(seg.dst_ip, seg.src_ip, seg.dst_port, seg.src_port,
                                    seq, ack, flags, 0))
        self.out_rsts += 1

    def poll(self, now: float) -> list[TcpSegment]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> None:
        pass


class Stack:
    """Runs `handler` on `datapath` until `stop()` (or SIGINT/SIGTERM via `run_forever`).
    The handler is single-threaded: other threads reach it through `call()`."""

    def __init__(self, datapath: Datapath, handler: SegmentHandler,
                 busy_poll_us: int = BUSY_POLL_US) -> None:
        self.dp = datapath
        self.handler = handler
        self.busy_poll_us = busy_poll_us
        self._spin: Callable[[int], bool] | None = getattr(datapath, "spin", None)
        self._active = False  # the last turn received or sent something (busy polling)
        self._stopping = False
        self.started = time.monotonic()
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # the thread running the loop, if any
        self._background: threading.Thread | None = None  # the one start() made
        # Extra descriptors (see add_reader): fd -> {POLLIN/POLLOUT: callback}.
        self._fds: dict[int, dict[int, Callable[[], None]]] = {}
        self._poller: Any = None  # select.poll, made by the first add_reader/add_writer
        self._wake_fd = -1  # eventfd that ends the current wait (wakeup())
        self._xsk_fd = -1
        # TSO: the TCP engine (the handler, or the engine a wrapper holds) may hand over
        # segments of up to this many MSS-sized frames; the data path splits them.
        engine = getattr(handler, "engine", handler)
        if isinstance(engine, TcpEngine):
            engine.tso_segs = getattr(datapath, "tso_segs", 1)

    def stop(self) -> None:
        """Ask the loop to end; from another thread, also wait for a started loop thread."""
        self._stopping = True
        t = self._background
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
            self._background = None

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn on the loop's thread and return its result. From the loop's own thread,
        or when no loop is running, fn runs directly."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        fut: Future[T] = Future()
        self._calls.put((fn, fut))
        self.wakeup()
        return fut.result(timeout)

    def _run_calls(self) -> None:
        while not self._calls.empty():
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller
                fut.set_exception(e)

    def step(self, max_wait: float = MAX_IDLE_WAIT) -> int:
        """One turn of the loop: run queued calls, wait for frames or the next timer, feed,
        send."""
        self._run_calls()
        h, dp = self.handler, self.dp
        segs = dp.receive()
        wait = 0.0
        if not segs:  # nothing ready: how long may we wait (the next timer, max_wait)?
            now = time.monotonic()
            deadline = h.next_deadline()
            wait = max_wait if deadline is None else min(max_wait, max(0.0, deadline - now))
            if getattr(dp, "tx_backlog", 0):
                wait = 0.0  # segments wait for tx ring room, which our kicks free: no sleep
            if wait > 0 and self._active and self._spin is not None:
                busy = min(self.busy_poll_us, int(wait * 1e6))
                if busy > 0 and self._spin(busy):  # busy polling (BUSY_POLL_US)
                    segs = dp.receive()
        if self._poller is not None:  # extra descriptors too (add_reader): one poll for all
            if self._wait_fds(0.0 if segs else wait) and not segs:
                segs = dp.receive()
        elif not segs and wait > 0 and dp.wait(wait):
            segs = dp.receive()
        now = time.monotonic()
        if segs:
            batch_feeder(h)(segs, now)
        deadline = h.next_deadline()
        if deadline is not None and deadline <= now:
            h.on_timer(now)
        out = h.poll(now)
        dp.send(out)
        self._active = bool(segs or out)
        return len(segs)

    # ---- Extra file descriptors (hook for pystack.apps.proxy and pystack.control) ----------
    # The loop waits on them together with the AF_XDP socket and runs a descriptor's callback
    # on the loop thread when it is ready (POLLHUP/POLLERR count as ready for both), before
    # the turn's segments are fed, so whatever the callbacks queue leaves with the turn's
    # poll. Callbacks handle their own errors. wakeup() (any thread) ends the current wait:
    # call() from another thread is served at once instead of after up to MAX_IDLE_WAIT.
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._watch(fd, select.POLLIN, callback)

    def remove_reader(self, fd: int) -> None:
        self._watch(fd, select.POLLIN, None)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self._watch(fd, select.POLLOUT, callback)

    def remove_writer(self, fd: int) -> None:
        self._watch(fd, select.POLLOUT, None)

    def wakeup(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def _watch(self, fd: int, event: int, callback: Callable[[], None] | None) -> None:
        if self._thread is not None and threading.current_thread() is not self._thread:
            self.call(lambda: self._watch(fd, event, callback))
            return
        if self._poller is None:
            if callback is None:
                return
            self._poller = select.poll()
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._poller.register(self._wake_fd, select.POLLIN)
            self._xsk_fd = self.dp.fd  # every rx queue (an epoll set when several)
            self._poller.register(self._xsk_fd, select.POLLIN)
        cbs = self._fds.setdefault(fd, {})
        if callback is None:
            cbs.pop(event, None)
        else:
            cbs[event] = callback
        if cbs:
            self._poller.register(fd, sum(cbs))  # register again = modify
        else:
            del self._fds[fd]
            try:
                self._poller.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _wait_fds(self, timeout: float) -> bool:
        """Wait for any descriptor; run the ready ones' callbacks. True if frames wait."""
        frames = False
        for fd, ev in self._poller.poll(max(0, int(timeout * 1000 + 0.999))):
            if fd == self._xsk_fd:
                frames = True
            elif fd == self._wake_fd:
                try:
                    os.eventfd_read(fd)
                except BlockingIOError:
                    pass
            elif ev & select.POLLNVAL:  # closed without remove_*: forget it
                self._fds.pop(fd, None)
                self._poller.unregister(fd)
            else:
                for mask in (select.POLLIN, select.POLLOUT):
                    cb = self._fds.get(fd, {}).get(mask)
                    if cb is not None and ev & (mask | select.POLLHUP | select.POLLERR):
                        cb()
        return frames

    # ---- end of the extra-descriptor hook ----------------------------------------------

    def run_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run in this thread until stop() or SIGINT/SIGTERM. `on_ready` runs once the
        signal handlers are in place (a "ready" line printed earlier could let a signal in
        before them)."""

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            self.stop()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._thread = threading.current_thread()
        try:
            if on_ready is not None:
                on_ready()
            while not self._stopping:
                self.step()
        finally:
            self._thread = None
            for s, h in old.items():
                signal.signal(s, h)

    def start(self, max_wait: float = 0.02, setup: Callable[[], None] | None = None) -> None:
        """Run the loop on a background thread (for embedding); `setup` runs first on it.
        Reach the handler with `call()`; end with `stop()`."""

        def loop() -> None:
            if setup is not None:
                setup()
            while not self._stopping:
                self.step(max_wait)

        self._thread = self._background = threading.Thread(target=loop, name="pystack-loop",
                                                            daemon=True)
        self._thread.start()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pystack.stack IFACE --port P`: the data path with the RefuseAll handler,
    for tests of the data path alone. Prints `ready` when attached."""
    ap = argparse.ArgumentParser(prog="python -m pystack.stack")
    ap.add_argument("iface")
    ap.add_argument("--port", type=int, action="append", required=True)
    ap.add_argument("--mode", default="native", choices=["native", "skb"])
    args = ap.parse_args(argv)
    with Datapath(args.iface, mode=args.mode) as dp:
        for p in args.port:
            dp.own_port(p)
        stack = Stack(dp, RefuseAll())
        ready = f"ready pid={os.getpid()} iface={args.iface} ports={args.port}"
        stack.run_forever(on_ready=lambda: print(ready, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
