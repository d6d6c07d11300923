"""The stack loop's extra-descriptor hook (Stack.add_reader/add_writer/wakeup) that the
proxy app and the control socket run on, with a stand-in data path (no AF_XDP needed)."""

from __future__ import annotations

import os
import socket
import threading
import time
from types import SimpleNamespace

from pystack.stack import RefuseAll, Stack


class FakeDatapath:
    """A data path whose 'AF_XDP socket' is an eventfd: readable = frames waiting."""

    def __init__(self) -> None:
        self.xsk = SimpleNamespace(fd=os.eventfd(0, os.EFD_NONBLOCK))
        self.fd = self.xsk.fd  # Datapath.fd: what the loop polls for every rx queue
        self.receives = 0

    def receive(self) -> list[object]:
        self.receives += 1  # the "frames" stay readable: enough to see the loop wake
        return []

    def wait(self, timeout: float) -> bool:
        raise AssertionError("with extra descriptors the loop polls them all at once")

    def send(self, segs: list[object]) -> int:
        return 0


def make() -> tuple[Stack, FakeDatapath]:
    dp = FakeDatapath()
    return Stack(dp, RefuseAll()), dp  # type: ignore[arg-type]


def test_reader_runs_when_ready_and_not_after_removal() -> None:
    stack, _ = make()
    a, b = socket.socketpair()
    got: list[bytes] = []
    stack.add_reader(a.fileno(), lambda: got.append(a.recv(100)))
    stack.step(0.0)
    assert got == []
    b.send(b"hi")
    t = time.monotonic()
    stack.step(5.0)
    assert got == [b"hi"] and time.monotonic() - t < 2.0  # woke on the fd, not the timeout
    stack.remove_reader(a.fileno())
    b.send(b"again")
    stack.step(0.0)
    assert got == [b"hi"]
    a.close()
    b.close()


def test_writer_and_reader_on_one_descriptor() -> None:
    stack, _ = make()
    a, b = socket.socketpair()
    calls: list[str] = []
    stack.add_writer(a.fileno(), lambda: calls.append("w"))
    stack.add_reader(a.fileno(), lambda: calls.append("r"))
    stack.step(0.0)
    assert calls == ["w"]  # writable, nothing to read
    b.send(b"x")
    stack.remove_writer(a.fileno())
    stack.step(0.0)
    assert calls == ["w", "r"]
    a.close()
    b.close()


def test_frames_still_wake_the_loop() -> None:
    stack, dp = make()
    a, b = socket.socketpair()
    stack.add_reader(a.fileno(), lambda: None)
    before = dp.receives
    os.eventfd_write(dp.xsk.fd, 1)
    t = time.monotonic()
    stack.step(5.0)
    assert time.monotonic() - t < 2.0 and dp.receives == before + 2  # received again
    a.close()
    b.close()


def test_call_from_another_thread_wakes_the_wait() -> None:
    stack, _ = make()
    a, b = socket.socketpair()
    stack.add_reader(a.fileno(), lambda: None)
    stop = threading.Event()
    stack._thread = threading.current_thread()  # this thread runs the loop below

    def other() -> None:
        t = time.monotonic()
        assert stack.call(lambda: 42, timeout=10) == 42
        took.append(time.monotonic() - t)
        stop.set()
        stack.wakeup()

    took: list[float] = []
    th = threading.Thread(target=other)
    th.start()
    deadline = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < deadline:
        stack.step(5.0)  # without wakeup() a call would wait for this 5 s timeout
    th.join(5)
    stack._thread = None
    assert took and took[0] < 2.0
    a.close()
    b.close()


def test_a_descriptor_closed_without_removal_is_forgotten() -> None:
    stack, _ = make()
    a, b = socket.socketpair()
    calls: list[int] = []
    stack.add_reader(a.fileno(), lambda: calls.append(1))
    fd = a.fileno()
    a.close()
    stack.step(0.0)
    stack.step(0.0)
    assert calls == [] and fd not in stack._fds
    b.close()
