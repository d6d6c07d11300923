"""Network namespaces, and the thread that owns a stack's netlink handle.

pyroute2 (0.9) gives every thread that uses an ``IPRoute`` its own netlink socket, made in
that thread's current namespace, and drives it with ``run_until_complete`` on a
thread-local asyncio loop, which fails in a thread whose asyncio loop is running. The
data path looks neighbours up through pyroute2 (on a cache miss), so a stack driven from
the application's asyncio loop cannot make those calls itself. :class:`NamespaceThread`
is one small thread, inside the stack's namespace and with no event loop of its own,
that builds the Host and runs every pyroute2 call afterwards (:class:`ThreadBound`):
a rare, short hand-off (once per neighbour and cache lifetime).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["NamespaceThread", "ThreadBound", "enter_netns", "netns_fd", "setns"]

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_fd(name: str) -> int:
    """Open the named namespace (``ip netns``); OSError(ENOENT) naming it if absent."""
    try:
        return os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, f"no network namespace named {name!r}") from None


@contextlib.contextmanager
def enter_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread in the named namespace, then come back."""
    if not name:
        yield
        return
    new = netns_fd(name)
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(new)
        try:
            yield
        finally:
            setns(old)
    finally:
        os.close(new)
        os.close(old)


class NamespaceThread:
    """A thread in namespace ``netns`` (None: the creator's) running calls handed to it."""

    def __init__(self, netns: str | None = None, name: str = "pystack-netlink") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue())
        fd = netns_fd(netns) if netns else os.open("/proc/thread-self/ns/net",
                                                  os.O_RDONLY | os.O_CLOEXEC)
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(fd, started), name=name,
                                        daemon=True)
        self._thread.start()
        started.result(30)

    def _run(self, fd: int, started: Future[None]) -> None:
        try:
            setns(fd)
        except BaseException as e:
            started.set_exception(e)
            return
        finally:
            os.close(fd)
        started.set_result(None)
        while (item := self._calls.get()) is not None:
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller
                fut.set_exception(e)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on this thread and return its result (directly if already there)."""
        if threading.current_thread() is self._thread:
            return fn()
        if not self._thread.is_alive():
            raise RuntimeError("the stack's netlink thread has stopped")
        fut: Future[T] = Future()
        self._calls.put((fn, fut))
        return fut.result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._calls.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join(10)


class ThreadBound:
    """A proxy whose method calls run on ``thread`` (attributes are read directly)."""

    def __init__(self, target: Any, thread: NamespaceThread) -> None:
        self._target = target
        self._thread = thread

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def bound(*args: Any, **kwargs: Any) -> Any:
            return self._thread.call(lambda: attr(*args, **kwargs))

        return bound
