"""pystack's TCP engine against the Linux kernel's TCP, over XDP + AF_XDP on a veth pair."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from pystack.apps import Echo
from pystack.sim.apps import StreamApp
from pystack.tcp.state import TcpState
from tests.helpers import connect_error, wait_for

MB = 1_000_000
BIG = 100 * MB


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def test_kernel_client_to_pystack_echo_100mb_with_half_close(bed, host):
    host.call(lambda: host.serve(7, Echo))
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(30)
    c.connect((bed.stack.ip, 7))
    data = os.urandom(BIG)

    def writer() -> None:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)  # our FIN; pystack keeps echoing, then sends its own

    t = threading.Thread(target=writer)
    t.start()
    got = bytearray()
    while chunk := c.recv(1 << 20):
        got += chunk
    t.join()
    c.close()
    assert len(got) == BIG and digest(got) == digest(data)
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["PassiveOpens"] == 1 and mib["EstabResets"] == 0


def test_pystack_client_to_kernel_server_100mb_each_way(bed, host):
    srv = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((bed.peer.ip, 9000))
    srv.listen()
    up = os.urandom(BIG)
    down = os.urandom(BIG)
    seen: dict[str, object] = {}

    def server() -> None:
        s, _ = srv.accept()
        s.settimeout(30)
        h = hashlib.sha256()
        n = 0
        while chunk := s.recv(1 << 20):  # until pystack's FIN
            h.update(chunk)
            n += len(chunk)
        seen["up"] = (n, h.hexdigest())
        s.sendall(down)  # half-close: data still flows towards pystack after its FIN
        s.close()

    t = threading.Thread(target=server)
    t.start()
    app = host.call(lambda: StreamApp(host.connect(bed.peer.ip, 9000), up))
    wait_for(lambda: host.call(lambda: app.done), 60, "the transfer to finish")
    t.join(timeout=30)
    srv.close()
    assert app.error == 0
    assert seen["up"] == (BIG, digest(up))
    assert len(app.received) == BIG and digest(app.received) == digest(down)
    local_port = host.call(lambda: app.conn.four_tuple.local_port)
    lo, hi = host.settings.ip_local_port_range
    assert lo <= local_port <= hi and local_port > 60999, "collides with the kernel's range"


class AbortOnData:
    """Aborts (RST) as soon as the peer's first bytes arrive: connect has surely returned."""

    def __init__(self, conn) -> None:
        self.conn = conn
        conn.on_event = self.on_event

    def on_event(self, conn, kind: str) -> None:
        if kind == "readable":
            conn.abort()


def test_abort_sends_rst_to_the_kernel(bed, host):
    host.call(lambda: host.serve(8, AbortOnData))
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect((bed.stack.ip, 8))
    c.sendall(b"hello")
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    assert host.call(lambda: host.engine.mib["OutRsts"]) >= 1


def test_owned_port_without_listener_refuses(bed, host):
    host.call(lambda: host.dp.own_port(9))
    before = bed.snmp("stack")["OutRsts"]
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    assert connect_error(c, (bed.stack.ip, 9)) == 111  # ECONNREFUSED
    assert bed.snmp("stack")["OutRsts"] == before, "the kernel answered instead of pystack"
    assert host.call(lambda: host.engine.mib["OutRsts"]) == 1


def test_kernel_keepalive_probes_are_answered(bed, host):
    host.call(lambda: host.serve(7, Echo))
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    c.settimeout(10)
    c.connect((bed.stack.ip, 7))
    c.sendall(b"x")
    assert c.recv(1) == b"x"
    base = host.call(lambda: host.engine.mib["InSegs"])
    # Unanswered, the kernel would reset after idle + 2 probes (3 s). Four probes answered
    # prove each was acknowledged; the connection must still be alive and echoing.
    wait_for(lambda: host.call(lambda: host.engine.mib["InSegs"]) - base >= 4, 15,
             "four keepalive probes")
    c.sendall(b"still here")
    assert c.recv(100) == b"still here"
    states = host.call(lambda: [k.state for k in host.engine.connections.values()])
    assert states == [TcpState.ESTABLISHED]
    c.close()
