"""TCP Fast Open (RFC 7413) on the veth bed, the Linux kernel's TCP as the peer.

Fast Open is switched on for the kernel in the peer namespace only (`net.ipv4.tcp_fastopen`
is per network namespace). Frames are captured on the peer's veth with an AF_PACKET socket
and read with scapy, so what each side put on the wire is checked independently of
pystack's own parser. The same `tcp_fastopen_key` is given to pystack and to the kernel:
a cookie made by either is then the other's, bit for bit (both use SipHash-2-4 of the two
addresses), which the tests check too."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pystack.host import Host
from pystack.tcp.connection import Connection
from pystack.tcp.fastopen import make_cookie, parse_keys
from pystack.tcp.state import TcpState
from tests.helpers import running_host, wait_for

KEY = "0badc0de-12345678-9abcdef0-0fedcba9"
PORT = 7000
KPORT = 7100  # kernel listener in the peer namespace
OTHER_IP = "198.18.0.3"  # a second address on the peer's veth
ETH_P_ALL = 0x0003


def ip_int(addr: str) -> int:
    return int.from_bytes(socket.inet_aton(addr), "big")


def cookie_for(client: str, server: str) -> bytes:
    return make_cookie(parse_keys(KEY)[0], ip_int(client), ip_int(server))


def sysctl(bed: Any, side: str, **values: object) -> None:
    for name, value in values.items():
        bed.run(side, ["sysctl", "-qw", f"net.ipv4.{name}={value}"])


def netstat(bed: Any, side: str) -> dict[str, int]:
    """The side's kernel TcpExt counters (/proc/net/netstat)."""
    out = bed.run(side, ["cat", "/proc/net/netstat"]).stdout.splitlines()
    rows = [line.split()[1:] for line in out if line.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def tfo_option(pkt: Any) -> bytes | None:
    """The Fast Open option's cookie in a scapy TCP packet (b"" = request), None if absent."""
    for name, value in pkt[TCP].options:
        if name == "TFO":
            if isinstance(value, tuple):
                return struct.pack("!" + "I" * len(value), *value)
            return bytes(value)
    return None


class Capture:
    """Every frame on the peer's veth, both directions, until closed."""

    def __init__(self, bed: Any) -> None:
        with bed.enter("peer"):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((bed.peer.ifname, 0))
        self.sock.settimeout(0.05)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    def tcp(self, port: int) -> list[Any]:
        """TCP packets to or from `port`, in capture order."""
        out = []
        for f in list(self.frames):
            p = Ether(f)
            if TCP in p and port in (p[TCP].sport, p[TCP].dport):
                out.append(p)
        return out

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def capture(bed) -> Iterator[Capture]:
    cap = Capture(bed)
    try:
        yield cap
    finally:
        cap.close()


@pytest.fixture
def host(bed, program) -> Iterator[Host]:
    with running_host(bed, program, "net.ipv4.tcp_fastopen=3",
                      f"net.ipv4.tcp_fastopen_key={KEY}") as h:
        yield h


class Upper:
    """Server app: notes what the connection looked like when accepted, answers each
    read with its upper-case copy, closes after the peer's FIN."""

    seen: list[dict[str, Any]]

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        Upper.seen.append({"state": conn.state, "readable": conn.readable,
                           "rcv_nxt": conn.rcv_nxt, "irs": conn.irs})
        conn.on_event = lambda c, kind: self.pump()
        self.pump()

    def pump(self) -> None:
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, OSError):
            return
        if data:
            self.conn.send(data.upper())
        else:
            self.conn.close()


def kernel_sendto(bed: Any, data: bytes, dst: str, port: int) -> bytes:
    """A kernel client's sendto(MSG_FASTOPEN) (connect + write in one), then its answer."""
    s = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    try:
        # A blocking socket, as Python's settimeout would make it non-blocking (then
        # sendto reports EINPROGRESS without a cookie); the kernel's own timeouts bound it.
        tv = struct.pack("ll", 10, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        assert s.sendto(data, socket.MSG_FASTOPEN, (dst, port)) == len(data)
        answer = s.recv(65536)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""
        return answer
    finally:
        s.close()


def syn_and_synack(cap: Capture, port: int, client_port: int) -> tuple[Any, Any]:
    """The handshake's SYN and SYN-ACK, once the capture thread has caught up with them."""

    def both() -> tuple[Any, Any] | None:
        pkts = [p for p in cap.tcp(port) if client_port in (p[TCP].sport, p[TCP].dport)]
        syn = next((p for p in pkts if p[TCP].flags == "S"), None)
        synack = next((p for p in pkts if p[TCP].flags == "SA"), None)
        return (syn, synack) if syn is not None and synack is not None else None

    return wait_for(both, 10, f"the SYN and SYN-ACK of port {client_port} in the capture")


# =====================================================================================
# Kernel client, pystack server
# =====================================================================================
def test_kernel_client_gets_a_cookie_then_its_syn_data_is_read_before_the_handshake(
        bed, host, capture):
    sysctl(bed, "peer", tcp_fastopen=1)
    Upper.seen = []
    lst = host.call(lambda: host.serve(PORT, Upper))
    host.call(lambda: lst.set_option("TCP_FASTOPEN", 16))

    # First contact: the kernel asks for a cookie; its data follows the handshake.
    assert kernel_sendto(bed, b"first", bed.stack.ip, PORT) == b"FIRST"
    cookie = cookie_for(bed.peer.ip, bed.stack.ip)
    first = wait_for(lambda: capture.tcp(PORT), 10, "the first connection in the capture")
    syn, synack = syn_and_synack(capture, PORT, first[0][TCP].sport)
    assert tfo_option(syn) == b"" and not syn[TCP].payload
    assert tfo_option(synack) == cookie  # the cookie is bound to the client's address
    assert synack[TCP].ack == syn[TCP].seq + 1
    assert Upper.seen[0]["state"] == TcpState.ESTABLISHED
    metrics = bed.run("peer", ["ip", "tcp_metrics", "show", bed.stack.ip]).stdout
    assert f"fo_cookie {cookie.hex()}" in metrics, metrics

    # Second connection: the SYN carries the cookie and the data; pystack's SYN-ACK
    # acknowledges both, and the application read the data while still in SYN-RECEIVED.
    data = b"request in the SYN"
    assert kernel_sendto(bed, data, bed.stack.ip, PORT) == data.upper()
    # The SYN with the cookie and data (the capture thread may still trail it).
    syn = wait_for(lambda: next((p for p in capture.tcp(PORT) if p[TCP].flags == "S"
                                 and bytes(p[TCP].payload) == data), None), 10,
                   "the SYN with data in the capture")
    syn, synack = syn_and_synack(capture, PORT, syn[TCP].sport)
    assert tfo_option(syn) == cookie and bytes(syn[TCP].payload) == data
    assert synack[TCP].ack == syn[TCP].seq + 1 + len(data)
    assert tfo_option(synack) is None
    first_sight = Upper.seen[1]
    assert first_sight["state"] == TcpState.SYN_RECEIVED
    assert first_sight["readable"] == len(data)
    assert first_sight["rcv_nxt"] == (first_sight["irs"] + 1 + len(data)) & 0xFFFFFFFF
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["TCPFastOpenCookieReqd"] == 1 and mib["TCPFastOpenPassive"] == 1
    assert mib["TCPFastOpenPassiveFail"] == 0 and mib["PassiveOpens"] == 2
    assert netstat(bed, "peer")["TCPFastOpenActive"] == 1


def test_cookie_from_another_address_is_refused(bed, host, capture):
    sysctl(bed, "peer", tcp_fastopen=1)
    Upper.seen = []
    lst = host.call(lambda: host.serve(PORT, Upper))
    host.call(lambda: lst.set_option("TCP_FASTOPEN", 16))
    bed.run("peer", ["ip", "addr", "add", f"{OTHER_IP}/24", "dev", bed.peer.ifname])
    # A genuine cookie, obtained by the kernel client at 198.18.0.2 ...
    assert kernel_sendto(bed, b"hello", bed.stack.ip, PORT) == b"HELLO"
    metrics = bed.run("peer", ["ip", "tcp_metrics", "show", bed.stack.ip]).stdout
    good = cookie_for(bed.peer.ip, bed.stack.ip)
    assert f"fo_cookie {good.hex()}" in metrics
    # ... replayed from 198.18.0.3 in a SYN with data.
    data = b"replayed"
    syn = (Ether(src=bed.peer.mac, dst=bed.stack.mac)
           / IP(src=OTHER_IP, dst=bed.stack.ip)
           / TCP(sport=40000, dport=PORT, flags="S", seq=1000, window=64240,
                 options=[("MSS", 1460), ("TFO", good)])
           / Raw(data))
    capture.send(bytes(syn))
    wait_for(lambda: any(p[TCP].flags == "SA" and p[IP].dst == OTHER_IP
                         for p in capture.tcp(PORT)), 10, "the SYN-ACK to 198.18.0.3")
    synack = next(p for p in capture.tcp(PORT) if p[TCP].flags == "SA" and p[IP].dst == OTHER_IP)
    assert synack[TCP].ack == 1001  # the SYN only: the data is not accepted
    fresh = tfo_option(synack)
    assert fresh == cookie_for(OTHER_IP, bed.stack.ip) and fresh != good
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["TCPFastOpenPassiveFail"] == 1 and mib["TCPFastOpenPassive"] == 0
    assert len(Upper.seen) == 1  # no connection was handed to the application for it


class OneShot:
    """Server app: answers the first bytes and closes at once (HTTP/1.0 style); with Fast
    Open that happens before the client has even seen the SYN-ACK."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.done = False
        conn.on_event = lambda c, kind: self.pump()
        self.pump()

    def pump(self) -> None:
        if self.done:
            return
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, OSError):
            return
        self.done = True
        self.conn.send(b"answer to " + data)
        self.conn.close()


def kernel_request(bed: Any, data: bytes, port: int) -> bytes:
    """sendto(MSG_FASTOPEN), then everything until the server's FIN."""
    s = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    try:
        tv = struct.pack("ll", 10, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        s.sendto(data, socket.MSG_FASTOPEN, (bed.stack.ip, port))
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got
    finally:
        s.close()


def test_kernel_client_answered_and_closed_before_the_handshake_completes(bed, host, capture):
    sysctl(bed, "peer", tcp_fastopen=1)
    lst = host.call(lambda: host.serve(PORT, OneShot))
    host.call(lambda: lst.set_option("TCP_FASTOPEN", 16))
    assert kernel_request(bed, b"one", PORT) == b"answer to one"  # gets the cookie
    assert kernel_request(bed, b"two", PORT) == b"answer to two"

    def frames() -> list[Any]:
        return [p for p in map(Ether, list(capture.frames)) if TCP in p]

    # The second connection is the one whose SYN carried "two"; the capture thread may
    # still trail its last frames (and the first connection's), so select by its port
    # and wait for our FIN.
    syn = wait_for(lambda: next((p for p in frames() if p[TCP].dport == PORT
                                 and "S" in str(p[TCP].flags)
                                 and bytes(p[TCP].payload) == b"two"), None), 10,
                   "the client's SYN with data in the capture")
    client_port = syn[TCP].sport

    def ours_now() -> list[Any]:
        return [p for p in frames() if p[TCP].sport == PORT and p[TCP].dport == client_port]

    ours = wait_for(lambda: (o := ours_now()) and any("F" in str(p[TCP].flags) for p in o)
                    and o, 10, "our FIN in the capture")
    # Our SYN-ACK first, then the answer and the FIN.
    assert ours[0][TCP].flags == "SA"
    assert any(bytes(p[TCP].payload) == b"answer to two" for p in ours)
    assert any("F" in str(p[TCP].flags) for p in ours)
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["TCPFastOpenPassive"] == 1
    wait_for(lambda: host.call(lambda: not [
        c for c in host.engine.connections.values()
        if c.state not in (TcpState.TIME_WAIT, TcpState.CLOSED)]), 10,
        "both connections finished")


# =====================================================================================
# pystack client, kernel server
# =====================================================================================
class KernelServer:
    """A kernel listener with TCP_FASTOPEN in the peer namespace; for each connection it
    notes whether data was readable as accept() returned, answers, and closes."""

    def __init__(self, bed: Any, port: int) -> None:
        self.sock = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bed.peer.ip, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
        self.sock.listen(16)
        self.sock.settimeout(30)
        self.got: list[tuple[bytes, bytes]] = []  # (readable at accept, everything)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with s:
                s.setblocking(False)
                try:
                    early = s.recv(65536)
                except BlockingIOError:
                    early = b""
                s.settimeout(10)
                data = early
                while chunk := s.recv(65536):
                    data += chunk
                s.sendall(b"got " + data)
            self.got.append((early, data))

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def kserver(bed) -> Iterator[KernelServer]:
    sysctl(bed, "peer", tcp_fastopen=2, tcp_fastopen_key=KEY)
    srv = KernelServer(bed, KPORT)
    try:
        yield srv
    finally:
        srv.close()


class Client:
    """pystack side of one connection: its events and everything received."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[str] = []
        self.received = b""
        conn.on_event = self.on_event

    def on_event(self, conn: Connection, kind: str) -> None:
        self.events.append(kind)
        if kind == "readable":
            try:
                while data := conn.recv(65536):
                    self.received += data
            except (BlockingIOError, OSError):
                pass


def finish(host: Host, cl: Client, expect: bytes) -> None:
    """Send our FIN, wait for the server's answer (it answers after our FIN)."""
    host.call(cl.conn.shutdown_write)
    wait_for(lambda: host.call(lambda: cl.received) == expect, 15, f"the answer {expect!r}")


def test_pystack_client_sendto_style_against_kernel_listener(bed, host, kserver, capture):
    peer = bed.peer.ip
    before = netstat(bed, "peer")
    assert host.call(lambda: host.engine.fastopen_cookie(ip_int(peer))) is None
    # No cookie yet: connect returns at once with everything queued ("in progress" for a
    # non-blocking caller); the SYN asks for a cookie and carries no data.
    cl = host.call(lambda: Client(host.connect(peer, KPORT, fastopen=True, data=b"one")))
    assert host.call(lambda: cl.conn.fastopen_queued) == 3
    # Blocking semantics: wait for the handshake and for the data to be acknowledged.
    wait_for(lambda: host.call(lambda: "connected" in cl.events and cl.conn.outq == 0), 10,
             "the handshake and the data acknowledged")
    finish(host, cl, b"got one")
    cookie = host.call(lambda: host.engine.fastopen_cookie(ip_int(peer)))
    assert cookie == cookie_for(bed.stack.ip, peer)  # the kernel's own cookie, bit for bit
    syn, synack = syn_and_synack(capture, KPORT, host.call(lambda: cl.conn.local_port))
    assert tfo_option(syn) == b"" and not syn[TCP].payload
    assert tfo_option(synack) == cookie
    assert netstat(bed, "peer")["TCPFastOpenCookieReqd"] == before["TCPFastOpenCookieReqd"] + 1

    # With the cookie: the SYN carries the data; the kernel's accept() returns with it
    # already readable and its SYN-ACK acknowledges it.
    cl = host.call(lambda: Client(host.connect(peer, KPORT, fastopen=True, data=b"two")))
    assert host.call(lambda: cl.conn.fastopen_queued) == 3
    wait_for(lambda: host.call(lambda: "connected" in cl.events), 10, "the handshake")
    finish(host, cl, b"got two")
    syn, synack = syn_and_synack(capture, KPORT, host.call(lambda: cl.conn.local_port))
    assert tfo_option(syn) == cookie and bytes(syn[TCP].payload) == b"two"
    assert synack[TCP].ack == syn[TCP].seq + 1 + 3
    assert kserver.got[-1] == (b"two", b"two")
    after = netstat(bed, "peer")
    assert after["TCPFastOpenPassive"] == before["TCPFastOpenPassive"] + 1
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["TCPFastOpenActive"] == 1 and mib["TCPFastOpenActiveFail"] == 0


def test_pystack_client_fastopen_connect_style_against_kernel_listener(bed, host, kserver,
                                                                         capture):
    peer = bed.peer.ip
    before = netstat(bed, "peer")
    opts = {"TCP_FASTOPEN_CONNECT": 1}
    # Without a cookie the SYN leaves at once, asking for one; data follows the handshake.
    cl = host.call(lambda: Client(host.connect(peer, KPORT, options=opts)))
    assert not host.call(lambda: cl.conn.fastopen_deferred)
    wait_for(lambda: host.call(lambda: "connected" in cl.events), 10, "the handshake")
    assert host.call(lambda: cl.conn.send(b"three")) == 5
    finish(host, cl, b"got three")
    assert host.call(lambda: host.engine.fastopen_cookie(ip_int(peer))) is not None

    # With a cookie connect returns at once and nothing is sent until the first write.
    cl = host.call(lambda: Client(host.connect(peer, KPORT, options=opts)))
    assert host.call(lambda: cl.conn.fastopen_deferred)
    port = host.call(lambda: cl.conn.local_port)
    host.call(lambda: None)  # the loop has run a whole turn (polls included) since
    host.call(lambda: None)
    assert not any(p[TCP].sport == port for p in capture.tcp(KPORT)), "a SYN left early"
    assert host.call(lambda: cl.conn.send(b"four")) == 4
    wait_for(lambda: host.call(lambda: "connected" in cl.events), 10, "the handshake")
    finish(host, cl, b"got four")
    syn, synack = syn_and_synack(capture, KPORT, port)
    assert bytes(syn[TCP].payload) == b"four" and tfo_option(syn)
    assert synack[TCP].ack == syn[TCP].seq + 1 + 4
    assert kserver.got[-1] == (b"four", b"four")
    after = netstat(bed, "peer")
    assert after["TCPFastOpenPassive"] == before["TCPFastOpenPassive"] + 1
    assert after["TCPFastOpenCookieReqd"] == before["TCPFastOpenCookieReqd"] + 1


def test_kernel_drops_syn_data_with_a_stale_cookie_and_pystack_resends_it(bed, host, kserver,
                                                                           capture):
    """The kernel's key changed since its cookie was issued: it acknowledges only the SYN
    and grants a new cookie; pystack sends the data again right after the handshake."""
    peer = bed.peer.ip
    cl = host.call(lambda: Client(host.connect(peer, KPORT, fastopen=True, data=b"five")))
    wait_for(lambda: host.call(lambda: "connected" in cl.events), 10, "the handshake")
    finish(host, cl, b"got five")
    old = host.call(lambda: host.engine.fastopen_cookie(ip_int(peer)))
    assert old == cookie_for(bed.stack.ip, peer)
    new_key = "11111111-22222222-33333333-44444444"
    sysctl(bed, "peer", tcp_fastopen_key=new_key)
    cl = host.call(lambda: Client(host.connect(peer, KPORT, fastopen=True, data=b"six")))
    wait_for(lambda: host.call(lambda: "connected" in cl.events), 10, "the handshake")
    finish(host, cl, b"got six")
    syn, synack = syn_and_synack(capture, KPORT, host.call(lambda: cl.conn.local_port))
    assert tfo_option(syn) == old and bytes(syn[TCP].payload) == b"six"
    assert synack[TCP].ack == syn[TCP].seq + 1  # the kernel did not take the data
    fresh = make_cookie(parse_keys(new_key)[0], ip_int(bed.stack.ip), ip_int(peer))
    assert tfo_option(synack) == fresh
    assert host.call(lambda: host.engine.fastopen_cookie(ip_int(peer))) == fresh
    mib = host.call(lambda: dict(host.engine.mib))
    assert mib["TCPFastOpenActiveFail"] == 1 and mib["TCPFastOpenActive"] == 0
    assert mib["RetransSegs"] >= 1
    assert kserver.got[-1][1] == b"six"
