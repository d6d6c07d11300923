"""One interface's data path: the XDP program attached to it, one AF_XDP socket per rx
queue, and the conversion between frames and `TcpSegment`s.

Queues: an AF_XDP socket receives only what arrives on the rx queue it is bound to, so
there is one socket (each with its own UMEM) per rx queue of the interface, all feeding
the same engine; a flow stays on its queue (RSS, or on veth the sender's tx queue), so
its order holds. Transmit goes through the first socket. With several sockets one epoll
set watches them all (`fd`, `wait`).

Receive: a batch of frames comes off the rx ring and one C call parses all of them
(pystack.io.batch), merging in-order data of a flow into one segment and runs of pure ACKs
into the latest (GRO); each merged payload is copied out once and the frames go straight
back to the fill ring. Transmit: one C call builds every frame of the batch from the
segments (splitting a segment with gso_size into MSS-sized frames: TSO), fills checksums
and queues them. The XDP program has already verified every received frame's checksums
(META_CSUM_OK), so parsing does not verify them again.

`c_batch=False` runs the same conversions in Python (pystack.wire.frame: parse_frame +
coalesce, split_segment + build_frame): the reference the C path is tested against.
"""

from __future__ import annotations

import array
import fcntl
import logging
import select
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pystack.iface.neighbors import NeighbourTable
from pystack.io._xsk import ffi
from pystack.io.batch import E_UNVERIFIED, GRO_ALL, REASON, RxParser, TxPacker
from pystack.io.xsk import XskError, XskSocket
from pystack.wire.errors import WireError
from pystack.wire.frame import (
    RxFrame,
    build_frame,
    coalesce,
    parse_frame,
    split_segment,
)
from pystack.wire.segment import TcpSegment
from pystack.xdp import abi
from pystack.xdp.program import IngressProgram

log = logging.getLogger("pystack.datapath")

UNRESOLVED_QLEN = 101  # like the kernel's default unres_qlen_bytes / typical frame
# TSO: MSS-sized frames one segment may be split into (64 KiB of 1448-byte segments, the
# size of Linux's GSO limit); the TCP engine learns it through pystack.stack.
TSO_SEGS = 44
TX_BACKLOG = 4096  # segments waiting for tx ring room; more are dropped (tx_ring_full)


@dataclass
class DatapathStats:
    """Control-plane side counters (the XDP program keeps its own)."""

    rx_frames: int = 0
    rx_malformed: int = 0  # frames the XDP program passed but the parser refused
    rx_unverified: int = 0  # frames without the XDP "checksum verified" mark, dropped
    rx_segments: int = 0  # segments handed on (fewer than frames when GRO merged some)
    tx_frames: int = 0
    tx_segments: int = 0  # segments queued (more frames than segments when TSO split some)
    tx_no_neighbour: int = 0  # segments dropped: no MAC and the wait queue was full
    tx_ring_full: int = 0  # segments dropped: no frame or ring slot and the backlog full
    tx_invalid: int = 0  # segments dropped: cannot be built (fields out of range, too big)
    malformed_by_reason: dict[str, int] = field(default_factory=dict)


class Datapath:
    """Attach to `ifname` in the caller's network namespace. Always `close()`."""

    def __init__(
        self,
        ifname: str,
        *,
        mode: str = "native",
        xsk_mode: str = "copy",
        frames: int = 8192,
        ring_size: int = 2048,
        batch: int = 256,
        program: IngressProgram | None = None,
        c_batch: bool = True,
        gro: int = GRO_ALL,
        queues: int | None = None,
    ) -> None:
        """`queues`: how many rx queues to take, from queue 0 (default: every rx queue the
        interface has, as far as they bind). `frames` is the UMEM size when there is one
        queue; with n queues each gets frames/n (at least 1024), with rings no larger
        than half of that."""
        self.ifname = ifname
        self.mode = mode
        self.c_batch = c_batch
        self.tso_segs = TSO_SEGS  # _open_queues bounds it by the rings it makes
        self.gro = gro  # pystack.io.batch GRO_DATA | GRO_ACKS, 0: every frame alone
        self.stats = DatapathStats()
        self._own_program = program is None
        self.program = program or IngressProgram()
        self.xsk: XskSocket | None = None  # queue 0's socket; transmit goes through it
        self.xsks: list[XskSocket] = []  # one per rx queue, index = queue
        self._epoll: select.epoll | None = None
        self.neigh: NeighbourTable | None = None
        self.ifindex = 0
        self._owned: set[tuple[int, str | int]] = set()
        # Segments waiting for ARP, per destination (the kernel's arp_queue, bounded).
        self._unresolved: dict[int, list[TcpSegment]] = {}
        self._backlog: list[TcpSegment] = []  # waiting for tx ring room, in order
        self._backlog_macs: list[bytes] = []
        self._ring_pending = 0  # frames left in the tx ring by a kick that gave up
        try:
            self.neigh = NeighbourTable(ifname)
            self._open_queues(queues, frames, ring_size, xsk_mode, batch)
            self.ifindex = self.program.attach(ifname, mode)
        except BaseException:
            self.close()
            raise
        self.local_mac = self.neigh.local_mac
        self.local_ips = _interface_ips(self.neigh)
        self._rx = RxParser(batch)
        self._tx = TxPacker(batch)
        self._txout = ffi.new("uint32_t[2]")

    def _open_queues(self, queues: int | None, frames: int, ring_size: int, xsk_mode: str,
                     batch: int) -> None:
        assert self.neigh is not None
        have = _rx_queue_count(self.neigh)
        if queues is not None and not 1 <= queues <= min(have, abi.MAX_QUEUES):
            raise XskError(f"{self.ifname} has {have} rx queues; cannot take {queues}")
        n = min(queues or have, abi.MAX_QUEUES)
        # The UMEM is shared out, not multiplied: 64 queues must not take 64 x 32 MiB. A
        # queue keeps at least 1024 frames and rings at most half its frames (powers of 2).
        per = frames if n == 1 else max(1024, frames // n)
        ring = ring_size
        while ring * 2 > per and ring > 64:
            ring //= 2
        # A TSO segment must fit the tx ring at once (half of it, so a batch still moves).
        self.tso_segs = max(1, min(TSO_SEGS, ring // 2))
        for q in range(n):
            try:
                x = XskSocket(self.ifname, q, frames=per, ring_size=ring, mode=xsk_mode,
                              batch=batch)
            except XskError as e:
                if q == 0 or queues is not None:
                    raise
                # Allocated but not in use (ethtool -L lowered the count): stop here.
                log.info("%s: rx queue %d does not bind (%s); using %d", self.ifname, q, e, q)
                break
            self.xsks.append(x)
            self.program.set_xsk(q, x.fd)
        self.xsk = self.xsks[0]
        if len(self.xsks) > 1:
            self._epoll = select.epoll()
            for x in self.xsks:
                self._epoll.register(x.fd, select.EPOLLIN)

    @property
    def queues(self) -> int:
        return len(self.xsks)

    @property
    def fd(self) -> int:
        """A descriptor that polls readable when any queue has frames (the socket itself
        with one queue, an epoll set with several): for an event loop's add_reader."""
        if self._epoll is not None:
            return self._epoll.fileno()
        assert self.xsk is not None
        return self.xsk.fd

    def close(self) -> None:
        """Detach the program first (the kernel takes the ports back), then free the rest."""
        for port, addr in self._owned:
            self.program.disown_port(port, addr)
        self._owned.clear()
        if self.ifindex:
            self.program.detach(self.ifindex)
            self.ifindex = 0
        if self._own_program:
            self.program.close()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        for x in self.xsks:
            x.close()
        self.xsks = []
        self.xsk = None
        if self.neigh is not None:
            self.neigh.close()
            self.neigh = None

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- steering ----
    def own_port(self, port: int, addr: str | int = 0) -> None:
        self.program.own_port(port, addr)
        self._owned.add((port, addr))

    def disown_port(self, port: int, addr: str | int = 0) -> None:
        self.program.disown_port(port, addr)
        self._owned.discard((port, addr))

    # ---- receive ----
    def wait(self, timeout: float | None) -> bool:
        """Block until some queue has frames or `timeout` seconds pass (None: forever)."""
        if self._epoll is None:
            assert self.xsk is not None
            return self.xsk.wait(timeout)
        try:
            return bool(self._epoll.poll(-1 if timeout is None else timeout, 1))
        except InterruptedError:
            return False

    def spin(self, usec: int) -> bool:
        """Busy-poll for frames up to `usec` microseconds; True when frames are ready."""
        if self._epoll is None:
            assert self.xsk is not None
            return self.xsk.spin(usec)
        end = time.monotonic() + usec / 1e6
        while True:
            for x in self.xsks:
                if x.spin(0):
                    return True
            if time.monotonic() >= end:
                return False

    def receive(self) -> list[TcpSegment]:
        """One batch of received segments (possibly empty): up to a batch from each queue,
        queue after queue. Never raises on bad frames."""
        if self._epoll is None:
            assert self.xsk is not None
            return self._receive(self.xsk)
        segs: list[TcpSegment] = []
        for x in self.xsks:
            segs += self._receive(x)
        return segs

    def _receive(self, xsk: XskSocket) -> list[TcpSegment]:
        assert self.neigh is not None
        n = xsk.recv()
        if n == 0:
            return []
        descs = xsk.rx_descs
        if self.c_batch:
            segs, macs, errors = self._rx.parse(xsk.area, descs, n, self.gro)
            if errors:
                self._count_errors(errors)
        else:
            segs, macs = self._receive_py(xsk, descs, n)
        xsk.release(descs, n)
        learn = self.neigh.learn
        for seg, mac in zip(segs, macs, strict=True):
            learn(seg.src_ip, mac)
        self.stats.rx_frames += n
        self.stats.rx_segments += len(segs)
        return segs

    def _count_errors(self, errors: list[int]) -> None:
        r = self.stats.malformed_by_reason
        for e in errors:
            if e == E_UNVERIFIED:
                self.stats.rx_unverified += 1
            else:
                self.stats.rx_malformed += 1
                reason = REASON.get(e, "truncated")
                r[reason] = r.get(reason, 0) + 1

    def _receive_py(self, xsk: XskSocket, descs: object, n: int
                    ) -> tuple[list[TcpSegment], list[bytes]]:
        """The Python reference of RxParser.parse: parse_frame each frame, then coalesce."""
        frames: list[RxFrame] = []
        for i in range(n):
            d = descs[i]  # type: ignore[index]
            if not d.flags & abi.META_CSUM_OK:
                self.stats.rx_unverified += 1
                continue
            try:
                parsed = parse_frame(xsk.frame(d), verify_checksums=False)
            except WireError as e:
                self.stats.rx_malformed += 1
                r = self.stats.malformed_by_reason
                r[e.reason] = r.get(e.reason, 0) + 1
                continue
            seg = parsed.segment
            seg.payload = bytes(seg.payload)  # the frame is about to go back to the kernel
            if d.flags & abi.META_COOKIE_OK:
                seg.syncookie = d.syncookie
            frames.append(RxFrame(seg, parsed.eth_src, d.flags))
        merged = coalesce(frames, self.gro)
        return [f.segment for f in merged], [f.eth_src for f in merged]

    # ---- transmit ----
    def send(self, segments: Iterable[TcpSegment]) -> int:
        """Build and queue segments; returns how many were queued (a segment with gso_size
        may leave as several frames). Segments to a neighbour not yet resolved wait (up to
        UNRESOLVED_QLEN each), and segments the tx ring has no room for wait in order (up
        to TX_BACKLOG, like a qdisc: the kernel drains the ring as we kick it); both go
        first at the next call."""
        segs = segments if isinstance(segments, list) else list(segments)
        if self._ring_pending:
            assert self.xsk is not None
            self._ring_pending = self.xsk.flush()
        if self._unresolved:
            segs = self._take_resolved() + segs
        ready, macs = self._backlog, self._backlog_macs
        if not segs and not ready:
            return 0
        self._backlog, self._backlog_macs = [], []
        neigh = self.neigh
        assert neigh is not None
        cache: dict[int, bytes | None] = {}
        for seg in segs:
            ip = seg.dst_ip
            mac = cache[ip] if ip in cache else cache.setdefault(ip, neigh.lookup(ip))
            if mac is None:
                self._wait_for_neighbour(seg)
                continue
            ready.append(seg)
            macs.append(mac)
        if not ready:
            return 0
        send = self._send_c if self.c_batch else self._send_py
        sent, left, left_macs = send(ready, macs)
        assert self.xsk is not None
        self._ring_pending = self.xsk.flush()  # no syscall unless frames are still queued
        if left:
            self._backlog, self._backlog_macs = left[:TX_BACKLOG], left_macs[:TX_BACKLOG]
            self.stats.tx_ring_full += max(0, len(left) - TX_BACKLOG)
        return sent

    @property
    def tx_backlog(self) -> int:
        """Segments waiting for room in the tx ring, plus frames in the ring a kick could
        not send yet (the loop should call send() again soon: the ring drains as it is
        kicked, and only then)."""
        return len(self._backlog) + self._ring_pending

    @property
    def tx_pending(self) -> int:
        """Segments held for a later send(): waiting for ARP or for tx ring room."""
        return self.tx_backlog + sum(len(q) for q in self._unresolved.values())

    def _send_c(self, ready: list[TcpSegment], macs: list[bytes]
                ) -> tuple[int, list[TcpSegment], list[bytes]]:
        """One C call (ps_tx_segs): (segments queued, the rest that found no room)."""
        xsk = self.xsk
        assert xsk is not None
        bad = self._tx.pack(ready, macs)
        if bad:
            skip = set(bad)
            ready = [s for i, s in enumerate(ready) if i not in skip]
            macs = [m for i, m in enumerate(macs) if i not in skip]
        out = self._txout
        consumed = xsk.transmit_segments(self._tx.segs, len(ready), self.local_mac, out)
        self._tx.release()
        st = self.stats
        st.tx_invalid += len(bad) + out[1]
        st.tx_frames += out[0]
        sent = consumed - out[1]
        st.tx_segments += sent
        return sent, ready[consumed:], macs[consumed:]

    def _send_py(self, segs: list[TcpSegment], macs: list[bytes]
                 ) -> tuple[int, list[TcpSegment], list[bytes]]:
        """The Python reference of _send_c: split_segment, then build_frame each."""
        xsk = self.xsk
        assert xsk is not None
        st = self.stats
        split = [split_segment(seg) for seg in segs]
        descs, k = xsk.alloc(sum(len(p) for p in split))
        used = 0
        ends: list[tuple[int, int]] = []  # (segment index, frames used up to its end)
        stop = len(segs)
        for i, (pieces, mac) in enumerate(zip(split, macs, strict=True)):
            if used + len(pieces) > k:
                stop = i
                break
            try:
                lens = [build_frame(p, self.local_mac, mac, out=xsk.buffer(descs[used + j]),
                                    fill_checksums=False) for j, p in enumerate(pieces)]
            except ValueError:
                st.tx_invalid += 1
                continue
            for j, n in enumerate(lens):
                descs[used + j].len = n
            used += len(pieces)
            ends.append((i, used))
        sent = xsk.transmit(descs, used, checksum=True) if used else 0
        if sent < k:  # unused allocations and anything the ring refused go back
            xsk.release(descs + sent, k - sent)
        st.tx_frames += sent
        queued = [i for i, e in ends if e <= sent]  # a segment counts when all its frames do
        if len(queued) < len(ends):  # the ring took only part: the rest waits
            stop = ends[len(queued)][0]
        st.tx_segments += len(queued)
        return len(queued), segs[stop:], macs[stop:]

    def _wait_for_neighbour(self, seg: TcpSegment) -> None:
        q = self._unresolved.setdefault(seg.dst_ip, [])
        if len(q) < UNRESOLVED_QLEN:
            q.append(seg)
        else:
            self.stats.tx_no_neighbour += 1

    def _take_resolved(self) -> list[TcpSegment]:
        assert self.neigh is not None
        out: list[TcpSegment] = []
        for ip in list(self._unresolved):
            if self.neigh.lookup(ip) is not None:
                out += self._unresolved.pop(ip)
        return out


SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x3C


def _rx_queue_count(neigh: NeighbourTable) -> int:
    """The interface's rx queues in use: ethtool's channels (rx + combined, what
    `ethtool -l` shows as current), else IFLA_NUM_RX_QUEUES, which counts the allocated
    ones (a veth allocates one per possible CPU and uses one unless told otherwise)."""
    # struct ethtool_channels: cmd, 4 maxima, rx_count, tx_count, other_count, combined
    ch = array.array("I", [ETHTOOL_GCHANNELS] + [0] * 8)
    ifr = struct.pack("16sP", neigh.ifname.encode(), ch.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr + bytes(40 - len(ifr)))
        if ch[5] + ch[8]:
            return int(ch[5] + ch[8])
    except OSError:
        pass  # no channels to ask about (EOPNOTSUPP)
    link = neigh.ipr.get_links(neigh.ifindex)[0]
    return max(1, int(link.get_attr("IFLA_NUM_RX_QUEUES") or 1))


def _interface_ips(neigh: NeighbourTable) -> list[int]:
    ips = []
    for a in neigh.ipr.get_addr(family=socket.AF_INET, index=neigh.ifindex):
        ips.append(int.from_bytes(socket.inet_aton(a.get_attr("IFA_ADDRESS")), "big"))
    return ips
