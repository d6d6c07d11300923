"""TSO and GRO end to end without a NIC: two TCP engines whose segments cross as real
frames, built by the C transmit path (a TSO segment split into MSS-sized frames) and
parsed by the C receive path (in-order frames merged again), with seeded frame loss."""

from __future__ import annotations

import hashlib
import random

import pytest
from pystack.io._xsk import ffi, lib

from pystack.io.batch import GRO_ALL, RxParser, TxPacker
from pystack.sim.apps import StreamApp, accept_into
from pystack.tcp.engine import TcpEngine
from pystack.wire.segment import TcpSegment
from pystack.xdp.abi import META_CSUM_OK

IP_A = 0x0A000001
IP_B = 0x0A000002
MAC = bytes(6)
SLOT = 2048
DELAY = 0.0005  # one-way, seconds
BATCH = 256


class Wire:
    """Frames from one engine to the other, a delay apart, some dropped."""

    def __init__(self, loss: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.packer = TxPacker(64)
        self.parser = RxParser(BATCH)
        self.queue: list[tuple[float, TcpEngine, list[bytes]]] = []
        self.sent_segments: list[TcpSegment] = []
        self.received_segments: list[TcpSegment] = []
        self.frames = 0

    def send(self, segs: list[TcpSegment], dst: TcpEngine, now: float) -> None:
        if not segs:
            return
        self.sent_segments += segs
        assert self.packer.pack(segs, [MAC] * len(segs)) == []
        nd = sum(max(1, -(-len(s.payload) // s.gso_size) if s.gso_size else 1) for s in segs)
        area = bytearray(SLOT * nd)
        descs = ffi.new("struct ps_desc[]", nd)
        for i in range(nd):
            descs[i].addr = i * SLOT
        n = lib.ps_build_frames(ffi.from_buffer("uint8_t[]", area), SLOT, self.packer.segs,
                                len(segs), MAC, descs, nd)
        self.packer.release()
        assert n == nd
        self.frames += n
        frames = [bytes(area[i * SLOT : i * SLOT + descs[i].len]) for i in range(n)]
        kept = [f for f in frames if self.rng.random() >= self.loss]
        self.queue.append((now + DELAY, dst, kept))

    def deliver(self, now: float) -> None:
        due = [q for q in self.queue if q[0] <= now]
        self.queue = [q for q in self.queue if q[0] > now]
        for _, dst, frames in due:
            for i in range(0, len(frames), BATCH):
                self.receive(dst, frames[i : i + BATCH], now)

    def receive(self, dst: TcpEngine, frames: list[bytes], now: float) -> None:
        area = bytearray(SLOT * max(len(frames), 1))
        descs = ffi.new("struct ps_desc[]", max(len(frames), 1))
        for i, f in enumerate(frames):
            area[i * SLOT : i * SLOT + len(f)] = f
            descs[i].addr, descs[i].len, descs[i].flags = i * SLOT, len(f), META_CSUM_OK
        segs, _, errors = self.parser.parse(ffi.from_buffer("uint8_t[]", area), descs,
                                            len(frames), GRO_ALL)
        assert errors == []
        self.received_segments += segs
        for s in segs:
            dst.input(s, now)

    def next_time(self) -> float | None:
        return min((q[0] for q in self.queue), default=None)


def transfer(size: int, loss: float, seed: int = 1) -> tuple[TcpEngine, TcpEngine, Wire, Wire,
                                                              bytes, bytearray]:
    a, b = TcpEngine(), TcpEngine()
    a.tso_segs = 44  # what pystack.stack sets for a data path that splits (TSO)
    ab, ba = Wire(loss, seed), Wire(loss, seed + 1)
    data = random.Random(seed).randbytes(size)
    lst = b.listen(IP_B, 80)
    servers = accept_into(lst)
    client = StreamApp(a.connect(IP_A, IP_B, 80, now=0.0), data)
    now = 0.0
    for _ in range(200000):
        ab.send(a.poll(now), b, now)
        ba.send(b.poll(now), a, now)
        if servers and servers[0].eof and client.eof:
            break
        times = [t for t in (ab.next_time(), ba.next_time(), a.next_deadline(),
                             b.next_deadline()) if t is not None]
        now = max(now, min(times))
        ab.deliver(now)
        ba.deliver(now)
        for e in (a, b):
            d = e.next_deadline()
            if d is not None and d <= now:
                e.on_timer(now)
    assert servers, "no connection was accepted"
    return a, b, ab, ba, data, servers[0].received


@pytest.mark.parametrize("loss", [0.0, 0.01])
def test_bulk_transfer_with_tso_and_gro_delivers_every_byte(loss: float) -> None:
    size = 3_000_000
    a, b, ab, ba, data, got = transfer(size, loss)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    tso = [s for s in ab.sent_segments if s.gso_segs > 1]
    assert tso, "the sender never used TSO"
    assert all(len(s.payload) <= s.gso_size * s.gso_segs for s in tso)
    gro = [s for s in ab.received_segments if s.gso_segs > 1 and s.payload]
    assert gro, "the receiver never merged frames"
    # Counters count frames, as Linux counts tcp_skb_pcount / gso_segs.
    assert a.mib["OutSegs"] == ab.frames
    conn = next(iter(a.connections.values()), None)
    if conn is not None:
        assert conn.data_segs_out >= size // conn.snd_mss
    if loss:
        assert a.mib["RetransSegs"] > 0
        # Retransmissions go one MSS at a time: no TSO segment re-sends old data.
        high = 0
        for s in ab.sent_segments:
            if s.payload and (s.seq - high) & 0x80000000 and high:
                assert s.gso_segs == 1, "a retransmission was sent as a TSO segment"
            end = (s.seq + len(s.payload)) & 0xFFFFFFFF
            if not high or not (end - high) & 0x80000000:
                high = end
    else:
        assert a.mib["RetransSegs"] == 0


def test_without_tso_segments_are_never_larger_than_the_mss() -> None:
    a, b = TcpEngine(), TcpEngine()
    assert getattr(a, "tso_segs", 1) == 1
    lst = b.listen(IP_B, 80)
    accept_into(lst)
    client = StreamApp(a.connect(IP_A, IP_B, 80, now=0.0), b"z" * 200_000)
    wire = Wire(0.0, 3)
    now = 0.0
    for _ in range(2000):
        wire.send(a.poll(now), b, now)
        for s in b.poll(now):
            a.input(s, now)
        now += DELAY
        wire.deliver(now)
        if client.sent == 200_000 and not client.conn.outq:
            break
    assert all(s.gso_segs == 1 for s in wire.sent_segments)
    assert client.sent == 200_000
