"""One interface's data path: the XDP program attached to it, one AF_XDP socket per rx
queue, and the conversion between frames and `TcpSegment`s.

Receive: a batch of frames comes off the rx ring, each is parsed into a segment whose
payload is copied out once (the frame goes straight back to the fill ring), and the batch
is handed on. Transmit: each segment is built into a UMEM frame and the batch is queued
with checksums computed in C. The XDP program has already verified every received
frame's checksums (META_CSUM_OK), so parsing does not verify them again.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from pystack.iface.neighbors import NeighbourTable
from pystack.io.xsk import XskSocket
from pystack.wire.errors import WireError
from pystack.wire.frame import build_frame, frame_len, parse_frame
from pystack.wire.segment import TcpSegment
from pystack.xdp import abi
from pystack.xdp.program import IngressProgram

log = logging.getLogger("pystack.datapath")

UNRESOLVED_QLEN = 101  # like the kernel's default unres_qlen_bytes / typical frame


@dataclass
class DatapathStats:
    """Control-plane side counters (the XDP program keeps its own)."""

    rx_frames: int = 0
    rx_malformed: int = 0  # frames the XDP program passed but the parser refused
    rx_unverified: int = 0  # frames without the XDP "checksum verified" mark, dropped
    tx_frames: int = 0
    tx_no_neighbour: int = 0  # segments dropped: no MAC and the wait queue was full
    tx_ring_full: int = 0  # segments dropped: no frame or ring slot
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
        batch: int = 64,
        program: IngressProgram | None = None,
    ) -> None:
        self.ifname = ifname
        self.mode = mode
        self.stats = DatapathStats()
        self._own_program = program is None
        self.program = program or IngressProgram()
        self.xsk: XskSocket | None = None
        self.neigh: NeighbourTable | None = None
        self.ifindex = 0
        self._owned: set[tuple[int, str | int]] = set()
        # Segments waiting for ARP, per destination (the kernel's arp_queue, bounded).
        self._unresolved: dict[int, list[TcpSegment]] = {}
        try:
            self.neigh = NeighbourTable(ifname)
            self.xsk = XskSocket(ifname, 0, frames=frames, ring_size=ring_size,
                                 mode=xsk_mode, batch=batch)
            self.program.set_xsk(0, self.xsk.fd)
            self.ifindex = self.program.attach(ifname, mode)
        except BaseException:
            self.close()
            raise
        self.local_mac = self.neigh.local_mac
        self.local_ips = _interface_ips(self.neigh)

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
        if self.xsk is not None:
            self.xsk.close()
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
        assert self.xsk is not None
        return self.xsk.wait(timeout)

    def receive(self) -> list[TcpSegment]:
        """One batch of received segments (possibly empty). Never raises on bad frames."""
        xsk = self.xsk
        assert xsk is not None and self.neigh is not None
        n = xsk.recv()
        if n == 0:
            return []
        out: list[TcpSegment] = []
        descs = xsk.rx_descs
        for i in range(n):
            d = descs[i]
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
            self.neigh.learn(seg.src_ip, parsed.eth_src)
            out.append(seg)
        xsk.release(descs, n)
        self.stats.rx_frames += n
        return out

    # ---- transmit ----
    def send(self, segments: Iterable[TcpSegment]) -> int:
        """Build and queue segments; returns how many were queued. Segments to a neighbour
        not yet resolved wait (up to UNRESOLVED_QLEN each) and go with a later call."""
        segs = list(segments)
        if self._unresolved:
            segs = self._take_resolved() + segs
        if not segs:
            return 0
        xsk = self.xsk
        assert xsk is not None and self.neigh is not None
        descs, k = xsk.alloc(len(segs))
        if k < len(segs):
            self.stats.tx_ring_full += len(segs) - k
        used = 0
        for seg in segs[:k]:
            mac = self.neigh.lookup(seg.dst_ip)
            if mac is None:
                self._wait_for_neighbour(seg)
                continue
            if frame_len(seg) > xsk.frame_size:
                raise ValueError(f"segment of {len(seg.payload)} bytes exceeds a frame")
            d = descs[used]
            d.len = build_frame(seg, self.local_mac, mac, out=xsk.buffer(d), fill_checksums=False)
            used += 1
        sent = xsk.transmit(descs, used, checksum=True) if used else 0
        if sent < k:  # unused allocations and anything the ring refused go back
            xsk.release(descs + sent, k - sent)
            self.stats.tx_ring_full += used - sent
        self.stats.tx_frames += sent
        return sent


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


def _interface_ips(neigh: NeighbourTable) -> list[int]:
    ips = []
    for a in neigh.ipr.get_addr(family=socket.AF_INET, index=neigh.ifindex):
        ips.append(int.from_bytes(socket.inet_aton(a.get_attr("IFA_ADDRESS")), "big"))
    return ips
