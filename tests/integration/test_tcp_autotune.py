"""Receive-buffer autotuning against the Linux kernel: a kernel sender streams into a
pystack receiver over XDP + AF_XDP on a veth pair; the window pystack advertises grows
past what tcp_rmem[1] allows (tcp_moderate_rcvbuf=1), as the kernel's own TCP_INFO
confirms, and stays there with tcp_moderate_rcvbuf=0."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from pystack.host import Host
from pystack.tcp.connection import Connection
from tests.helpers import wait_for

MB = 1_000_000
SIZE = 40 * MB
PORT = 5001
TCPI_SND_WND = 228  # offset of tcpi_snd_wnd in Linux's struct tcp_info (6.x)


class Sink:
    """Reads everything as it arrives (an application keeping up), hashing it, and notes
    the largest window pystack advertised and the receive buffer it ended with."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.n = 0
        self.sha = hashlib.sha256()
        self.max_wnd = 0
        self.rcvbuf = 0
        self.eof = False
        conn.on_event = self.on_event

    def on_event(self, conn: Connection, kind: str) -> None:
        while True:
            try:
                data = conn.recv(1 << 20)
            except (BlockingIOError, OSError):
                break
            if not data:
                self.eof = True
                self.rcvbuf = conn.rcvbuf_size
                conn.close()
                break
            self.n += len(data)
            self.sha.update(data)
        self.max_wnd = max(self.max_wnd, conn.rcv_wnd)


@pytest.fixture
def make_host(bed, program) -> Iterator[object]:
    hosts: list[Host] = []

    def make(*sysctls: str) -> Host:
        with bed.enter("stack"):
            h = Host(bed.stack.ifname, program=program, sysctls=sysctls)
        hosts.append(h)
        h.start()
        return h

    yield make
    for h in hosts:
        h.close()


def _transfer(bed, host: Host) -> tuple[Sink, int]:
    """SIZE bytes from a kernel client; returns the sink and the largest send window the
    kernel saw (its tcpi_snd_wnd, sampled between writes)."""
    sinks: list[Sink] = []
    host.call(lambda: host.serve(PORT, lambda c: sinks.append(Sink(c))))
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(30)
    c.connect((bed.stack.ip, PORT))
    data = os.urandom(SIZE)
    seen = {"snd_wnd": 0}

    errors: list[BaseException] = []

    def writer() -> None:
        try:
            mv = memoryview(data)
            for off in range(0, SIZE, 256 * 1024):
                c.sendall(mv[off : off + 256 * 1024])
                info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
                (wnd,) = struct.unpack_from("<I", info, TCPI_SND_WND)
                seen["snd_wnd"] = max(seen["snd_wnd"], wnd)
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "the transfer did not finish"
    assert not errors, f"kernel sender failed: {errors[0]!r}"
    wait_for(lambda: host.call(lambda: bool(sinks) and sinks[0].eof), 30, "pystack's EOF")
    c.close()
    sink = sinks[0]
    assert host.call(lambda: (sink.n, sink.sha.hexdigest())) == (
        SIZE, hashlib.sha256(data).hexdigest())
    return sink, seen["snd_wnd"]


def test_receive_window_grows_past_tcp_rmem_default(bed, make_host):
    host = make_host()
    rmem = host.settings.tcp_rmem
    sink, kernel_wnd = _transfer(bed, host)
    first = rmem[1] // 2  # the window part of tcp_rmem[1] (tcp_adv_win_scale 1)
    max_wnd, rcvbuf = host.call(lambda: (sink.max_wnd, sink.rcvbuf))
    assert rcvbuf > rmem[1] and rcvbuf <= rmem[2]
    assert max_wnd > 2 * first, (max_wnd, rcvbuf)
    assert kernel_wnd > 2 * first, "the kernel never saw the larger window"


def test_no_autotuning_with_moderate_rcvbuf_0(bed, make_host):
    host = make_host("net.ipv4.tcp_moderate_rcvbuf=0")
    rmem = host.settings.tcp_rmem
    sink, kernel_wnd = _transfer(bed, host)
    max_wnd, rcvbuf = host.call(lambda: (sink.max_wnd, sink.rcvbuf))
    assert rcvbuf == rmem[1]
    assert max_wnd <= rmem[1] // 2 and kernel_wnd <= rmem[1] // 2
