"""Small helpers for integration tests: bounded waits on conditions, never bare sleeps."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any


def read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The next line the process prints, or AssertionError after timeout."""
    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    assert r, f"no output from pid {proc.pid} within {timeout}s (rc={proc.poll()})"
    return proc.stdout.readline()


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll cond() until truthy; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def connect_error(sock: socket.socket, addr: tuple[str, int], timeout: float = 5.0) -> int:
    """Non-blocking connect; the errno it ends with (0 = connected)."""
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, 115):  # EINPROGRESS
        return err
    _, w, _ = select.select([], [sock], [], timeout)
    assert w, f"connect to {addr} neither completed nor failed within {timeout}s"
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


@contextlib.contextmanager
def running_host(bed: Any, program: Any, *sysctls: str, port: int = 0,
                 app: Callable[..., object] | None = None, **kw: Any) -> Iterator[Any]:
    """A started pystack Host on the bed's stack side (serving `app` on `port` when both
    are given), closed afterwards whatever happens."""
    from pystack.host import Host  # not at import time: unit tests never need it

    with bed.enter("stack"):
        h = Host(bed.stack.ifname, program=program, sysctls=sysctls, **kw)
    try:
        if port and app is not None:
            h.serve(port, app)  # the loop is not running yet: this thread may touch it
        h.start()
        yield h
    finally:
        h.close()
