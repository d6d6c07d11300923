"""Helpers of the reliability suite: a pystack host on the veth bed, a kernel client streaming
through pystack's echo, snapshots of a pystack connection, hand-made frames from the peer
namespace (AF_PACKET), counters, and one line per result (`report`).

Everything here talks to pystack through its public surface (Host, the engine's MIB, the
data path's and the XDP program's counters, a connection's RFC 9293 variables) so the suite
keeps working while the engine's internals change.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scapy.layers.inet import IP, in4_chksum

from pystack.apps import Echo
from pystack.host import Host
from pystack.tcp import seq as sq
from tests import helpers
from tests.helpers import wait_for

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class Testbed
    from pystack.testbed import Testbed

MB = 1_000_000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ECHO_PORT = 7
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
MASK = 0xFFFFFFFF

# struct tcp_info (linux/tcp.h): tcpi_notsent_bytes sits at byte 144.
TCP_INFO_LEN = 232
TCPI_NOTSENT_BYTES = 144

# TCP flag bits (RFC 9293 §3.1)
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def report(name: str, **figures: object) -> None:
    """One result line (counts tried, failures, figures) for the closing note; also appended
    to $PYSTACK_RELIABILITY_LOG when set."""
    line = f"reliability {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line, flush=True)
    path = os.environ.get("PYSTACK_RELIABILITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def ip_int(addr: str) -> int:
    return int.from_bytes(socket.inet_aton(addr), "big")


# ---- a host on the bed ---------------------------------------------------------------------
def running_host(bed: Testbed, program: Any, *sysctls: str, port: int = ECHO_PORT,
                 app: Callable[..., object] = Echo, **kw: Any
                 ) -> contextlib.AbstractContextManager[Host]:
    """tests.helpers.running_host serving Echo on ECHO_PORT unless told otherwise."""
    return helpers.running_host(bed, program, *sysctls, port=port, app=app, **kw)


def counters(h: Host) -> dict[str, int]:
    """Engine MIB (Linux names) + data-path refusals + XDP actions and drop reasons."""

    def grab() -> dict[str, int]:
        m = dict(h.mib())
        st = h.dp.stats
        m["PystackRxMalformed"] = st.rx_malformed
        m["PystackRxUnverified"] = st.rx_unverified
        m["PystackTxRingFull"] = st.tx_ring_full
        for reason, v in st.malformed_by_reason.items():
            m[f"PystackMalformed:{reason}"] = v
        return m

    out = h.call(grab)
    prog = h.dp.program
    out.update({f"XdpAction:{k}": v for k, v in prog.actions().items()})
    out.update({f"XdpDrop:{k}": v for k, v in prog.drops().items()})
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that changed."""
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys)
            if after.get(k, 0) != before.get(k, 0)}


# ---- a pystack connection, seen from outside -------------------------------------------------
@dataclass(frozen=True)
class Tcb:
    """A snapshot of one pystack connection's RFC 9293 §3.3.1 variables."""

    state: str
    error: int
    local_port: int
    remote_port: int
    iss: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    snd_wscale: int
    max_window: int
    irs: int
    rcv_nxt: int
    rcv_wnd: int
    rcv_wup: int  # RCV.NXT when the window was last advertised
    ts_recent: int
    bytes_received: int  # stream offset of rcv_nxt

    def rcv_offset(self, seq: int) -> int:
        """The receive stream offset of sequence number `seq`."""
        return self.bytes_received + sq.sub(seq, self.rcv_nxt)

    @property
    def right_edge(self) -> int:
        """RCV.NXT + the window now (the edge last advertised; it never moves back)."""
        return sq.add(self.rcv_wup, self.rcv_wnd)

    @property
    def wnd_now(self) -> int:
        return max(0, sq.sub(self.right_edge, self.rcv_nxt))

    def in_window(self, mss: int = 1448) -> int:
        """A sequence number inside the receive window when a frame sent now arrives, and
        not RCV.NXT: half an MSS below the right edge, which only moves forward, while
        RCV.NXT would need the kernel to fill almost the whole window to reach it."""
        w = self.wnd_now
        assert w > 1, f"the receive window is closed: {self}"
        off = w - mss // 2 if w > mss else w // 2
        return sq.add(self.rcv_nxt, off)

    def beyond_window(self) -> int:
        """A sequence number far past the right edge (but less than 2**31 ahead)."""
        return sq.add(self.right_edge, 1 << 28)


def tcb(h: Host, remote_port: int | None = None) -> Tcb | None:
    """The connection to `remote_port` (or the only one), None if there is none."""

    def grab() -> Tcb | None:
        for c in h.engine.connections.values():
            t = c.four_tuple
            if remote_port is not None and t.remote_port != remote_port:
                continue
            return Tcb(str(c.state.name), int(c.error), t.local_port, t.remote_port, c.iss,
                       c.snd_una, c.snd_nxt, c.snd_wnd, c.snd_wscale, c.max_window, c.irs,
                       c.rcv_nxt, c.rcv_wnd, c.rcv_wup, c.ts_recent or 0, c.bytes_received)
        return None

    return h.call(grab)


# ---- a kernel client streaming through pystack's echo -----------------------------------------
class PeerStream:
    """A kernel TCP client in the peer namespace writing an endless paced byte stream to
    pystack's echo and reading it back, each direction hashed with SHA-256. `stop()` ends
    the stream (FIN after the current chunk) and returns when the echo has ended.

    The stream is `pattern` repeated, so the byte at any stream offset is known
    (`bytes_at`): forged segments can carry the stream's true bytes."""

    def __init__(self, bed: Testbed, port: int = ECHO_PORT, *, rate: float = 8e6,
                 pattern_size: int = 4 * 1024 * 1024, chunk: int = 32768,
                 timeout: float = 60.0) -> None:
        assert pattern_size % chunk == 0
        self.pattern = os.urandom(pattern_size)
        self.rate = rate
        self.chunk = chunk
        self.sock = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((bed.stack.ip, port))
        self.local_port = self.sock.getsockname()[1]
        self.sent = 0
        self.received = 0
        self.errors: list[str] = []
        self._tx = hashlib.sha256()
        self._rx = hashlib.sha256()
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._idle = threading.Event()  # the writer waits at the gate (or has ended)
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()

    def bytes_at(self, offset: int, n: int) -> bytes:
        p, size = self.pattern, len(self.pattern)
        out = bytearray()
        while len(out) < n:
            i = (offset + len(out)) % size
            out += p[i : i + n - len(out)]
        return bytes(out)

    def kernel_sent(self) -> int:
        """A stream offset the kernel client has surely sent (its SND.NXT or less): what
        was written minus what its socket still holds unsent (tcp_info notsent_bytes).
        Read in this order, a write racing with it only makes the answer smaller."""
        written = self.sent
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
        return written - struct.unpack_from("=I", info, TCPI_NOTSENT_BYTES)[0]

    def _write(self) -> None:
        t0 = time.monotonic()
        size = len(self.pattern)
        mv = memoryview(self.pattern)
        try:
            while not self._stop.is_set():
                if not self._go.is_set():
                    self._idle.set()
                    self._go.wait()
                    self._idle.clear()
                    t0 = time.monotonic() - self.sent / self.rate  # no burst after a pause
                ahead = self.sent / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not synchronisation
                i = self.sent % size
                piece = mv[i : i + self.chunk]
                self.sock.sendall(piece)
                self._tx.update(piece)
                self.sent += len(piece)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(f"writer: {e!r}")
        finally:
            self._idle.set()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 20):
                self._rx.update(chunk)
                self.received += len(chunk)
        except OSError as e:
            self.errors.append(f"reader: {e!r}")

    def pause(self, timeout: float = 30.0) -> None:
        """Stop writing after the current chunk and wait until everything written has come
        back: the connection is then quiet in both directions (apart from ACKs)."""
        self._go.clear()
        wait_for(lambda: self._idle.is_set() and self.received == self.sent, timeout,
                 "the stream to pause and drain")

    def resume(self) -> None:
        self._go.set()

    def stop(self, timeout: float = 60.0) -> tuple[int, int, bool]:
        """End the stream; (bytes sent, bytes echoed back, the two SHA-256 match)."""
        self._stop.set()
        self._go.set()
        self._writer.join(timeout)
        self._reader.join(timeout)
        assert not self._writer.is_alive() and not self._reader.is_alive(), \
            f"the stream did not end within {timeout}s (sent {self.sent}, " \
            f"echoed {self.received})"
        return self.sent, self.received, self._tx.digest() == self._rx.digest()

    def close(self) -> None:
        self._stop.set()
        self._go.set()
        with contextlib.suppress(OSError):
            self.sock.close()


# ---- hand-made frames from the peer namespace -----------------------------------------------
def ts_option(tsval: int, tsecr: int = 0) -> bytes:
    """NOP NOP Timestamps (RFC 7323 §3)."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval & MASK, tsecr & MASK)


class Injector:
    """Sends hand-made Ethernet frames on the peer's veth: the kernel TCP in the peer
    namespace does not see them, pystack sees them as if the peer had sent them. They
    bypass the veth's qdisc and tc egress (PACKET_QDISC_BYPASS), so a loss injector there
    (pystack.faults) acts on the kernel's segments only."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        with bed.enter("peer"):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.bind((bed.peer.ifname, 0))
        self.eth = bytes.fromhex(bed.stack.mac.replace(":", "")) + \
            bytes.fromhex(bed.peer.mac.replace(":", "")) + b"\x08\x00"
        self.sent = 0

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, *,
            window: int = 65535, options: bytes = b"", payload: bytes = b"",
            src: str | None = None, ip_flags: str = "DF") -> bytes:
        """An Ethernet/IPv4/TCP frame with raw option bytes (padded with EOL to a 32-bit
        boundary, so any junk fits) and correct checksums (scapy's, not pystack's)."""
        opts = options + b"\x00" * (-len(options) % 4)
        assert len(opts) <= 40, "TCP options are at most 40 bytes"
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & MASK, ack & MASK,
                          (5 + len(opts) // 4) << 4, flags, window, 0, 0)
        tcp = bytearray(hdr + opts + payload)
        ip = IP(src=src or self.bed.peer.ip, dst=self.bed.stack.ip, proto=6, ttl=64,
                flags=ip_flags)
        struct.pack_into("!H", tcp, 16, in4_chksum(6, ip, bytes(tcp)))
        return self.eth + bytes(ip / bytes(tcp))

    def send(self, *frames: bytes) -> None:
        for f in frames:
            self.sock.send(f)
            self.sent += 1

    def close(self) -> None:
        self.sock.close()


# ---- processes ---------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class StackProcess:
    """tests/reliability/stackproc.py on the bed's stack side (its own XDP program, so it
    compiles one: seconds). `request(verb)` talks to its control socket; `stop()` is
    SIGTERM (a clean detach), `kill()` SIGKILL."""

    def __init__(self, bed: Testbed, *args: str, ready_timeout: float = 90.0) -> None:
        import sys

        from tests.helpers import read_line

        self.bed = bed
        self.proc = bed.spawn("stack", [sys.executable, "-m", "tests.reliability.stackproc",
                                        bed.stack.ifname, *args],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
        line = read_line(self.proc, ready_timeout)
        assert line.startswith("ready "), f"stack process did not start: {line!r} " \
            f"rc={self.proc.poll()}"
        self.pid = int(line.split()[1])

    def request(self, verb: str, **args: Any) -> Any:
        from pystack.control import request

        with self.bed.enter("stack"):
            return request(self.bed.stack.ifname, verb, **args)

    def probe(self) -> dict[str, Any]:
        return self.request("probe")

    def sysctl(self, name: str, value: object | None = None) -> str:
        """Read a setting (as /proc/sys prints it), or write it first."""
        if value is not None:
            return str(self.request("sysctl", write=f"{name}={value}")[0][1])
        return str(self.request("sysctl", names=[name])[0][1])

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
