"""Whole batches of frames to and from `TcpSegment`s in C (`xsk.c`: ps_rx_parse, ps_rx_gather,
ps_tx_segs, ps_build_frames). Python touches each *segment* once, never each byte or header
field of a frame:

receive  C parses every frame of an rx batch (Ethernet/IPv4/TCP and options) into an array
         of `struct ps_rxseg`, merging as Linux's GRO does (in-order full-sized data of one
         flow into one segment; pure ACKs that only advance into the latest one); Python
         reads the array with one `struct` unpack per entry, and C copies each entry's
         payload, once, into a new bytes object.
transmit Python packs each segment into a `struct ps_txseg` (one `struct` pack) and one C
         call builds all frames of the batch, splitting a segment with `gso_size` into
         MSS-sized frames (TSO), fills checksums and queues them.

`pystack.wire.frame` has the same conversions in Python (`parse_frame` + `coalesce`,
`split_segment` + `build_frame`); tests/unit/test_wire_c_batch.py holds the two to the same
results.
"""

from __future__ import annotations

import struct
from typing import Any

from pystack.io._xsk import ffi, lib
from pystack.wire.errors import Reason
from pystack.wire.segment import TcpOptions, TcpSegment

MASK = 0xFFFFFFFF

# struct ps_rxseg / ps_txseg, field for field (xsk.h); no padding but the trailing byte.
RXSEG = struct.Struct("<6I8I5I7H6B16s6sBx")
TXSEG = struct.Struct("<Q6I8II6H6B16s6sHBx")
assert RXSEG.size == ffi.sizeof("struct ps_rxseg")
assert TXSEG.size == ffi.sizeof("struct ps_txseg")

O_MSS = lib.PS_O_MSS
O_WSCALE = lib.PS_O_WSCALE
O_SACK_PERM = lib.PS_O_SACK_PERM
O_TS = lib.PS_O_TS
O_FASTOPEN = lib.PS_O_FASTOPEN

GRO_DATA = lib.PS_GRO_DATA
GRO_ACKS = lib.PS_GRO_ACKS
GRO_ALL = GRO_DATA | GRO_ACKS

E_UNVERIFIED = lib.PS_E_UNVERIFIED
# PS_E_* code -> pystack.wire.errors reason (E_UNVERIFIED is counted apart).
REASON: dict[int, Reason] = {
    lib.PS_E_TRUNCATED: "truncated",
    lib.PS_E_NOT_IPV4: "not_ipv4",
    lib.PS_E_BAD_IHL: "bad_ihl",
    lib.PS_E_BAD_TOTAL_LENGTH: "bad_total_length",
    lib.PS_E_FRAGMENT: "fragment",
    lib.PS_E_NOT_TCP: "not_tcp",
    lib.PS_E_BAD_DOFF: "bad_doff",
    lib.PS_E_BAD_OPTION: "bad_option",
}

_NO_SACK = (0,) * 8


def _options(t: tuple[Any, ...]) -> TcpOptions:
    o = t[28]
    if o == O_TS and not t[30]:  # the common case: timestamps only
        return TcpOptions(timestamp=(t[4], t[5]))
    opts = TcpOptions()
    if o & O_MSS:
        opts.mss = t[23]
    if o & O_WSCALE:
        opts.wscale = t[29]
    if o & O_SACK_PERM:
        opts.sack_permitted = True
    if o & O_TS:
        opts.timestamp = (t[4], t[5])
    if o & O_FASTOPEN:
        opts.fastopen_cookie = t[32][: t[31]]
    nsack = t[30]
    if nsack:
        opts.sack_blocks = [(t[6 + 2 * k], t[7 + 2 * k]) for k in range(nsack)]
    return opts


class RxParser:
    """Parses rx batches of up to `batch` frames; reusable, one per data path."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self._segs = ffi.new("struct ps_rxseg[]", batch)
        self._frags = ffi.new("struct ps_rxfrag[]", batch)
        self._dst = ffi.new("uint8_t *[]", batch)
        self._raw = memoryview(ffi.buffer(self._segs))

    def parse(
        self, area: Any, descs: Any, n: int, coalesce: int = GRO_ALL
    ) -> tuple[list[TcpSegment], list[bytes], list[int]]:
        """Segments of the n frames at area + descs[i].addr, the source MAC of each, and
        the PS_E_* code of each refused frame. The frames can be released afterwards."""
        if n > self.batch:
            raise ValueError(f"batch of {n} frames; this parser takes {self.batch}")
        m = lib.ps_rx_parse(area, descs, n, self._segs, self._frags, coalesce)
        rows = list(RXSEG.iter_unpack(self._raw[: m * RXSEG.size]))
        payloads: list[bytes | None] = []
        keep: list[Any] = []
        dst = self._dst
        for i, t in enumerate(rows):
            if t[14] and not t[34]:
                # A new bytes object C fills before anything else sees it (as C code does
                # with PyBytes_FromStringAndSize(NULL, n)): the payload is copied once.
                b = bytes(t[14])
                cd = ffi.from_buffer("uint8_t[]", b)
                keep.append(cd)
                dst[i] = cd
                payloads.append(b)
            else:
                dst[i] = ffi.NULL
                payloads.append(None)
        if keep:
            lib.ps_rx_gather(area, self._segs, m, self._frags, dst)
        segs: list[TcpSegment] = []
        macs: list[bytes] = []
        errors: list[int] = []
        for t, payload in zip(rows, payloads, strict=True):
            if t[34]:
                errors.append(t[34])
                continue
            segs.append(TcpSegment(t[0], t[1], t[19], t[20], t[2], t[3], t[26], t[21], t[22],
                                   _options(t), payload if payload is not None else b"",
                                   t[27], t[16], t[15], t[24]))
            macs.append(t[33])
        return segs, macs, errors


class TxPacker:
    """Packs segments into a `struct ps_txseg` array for ps_tx_segs / ps_build_frames."""

    def __init__(self, capacity: int = 64) -> None:
        self._grow(capacity)
        self._keep: list[Any] = []

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self.segs = ffi.new("struct ps_txseg[]", capacity)
        self._raw = memoryview(ffi.buffer(self.segs))

    def pack(self, segs: list[TcpSegment], macs: list[bytes]) -> list[int]:
        """Fill the array from segs (dst MAC macs[i]); returns the indices of segments whose
        fields are out of range (left out: the array holds the others, in order)."""
        if len(segs) > self.capacity:
            self._grow(max(len(segs), 2 * self.capacity))
        keep = self._keep = []
        raw = self._raw
        pack_into = TXSEG.pack_into
        size = TXSEG.size
        bad: list[int] = []
        k = 0
        for i, seg in enumerate(segs):
            o = seg.options
            bits = 0
            tsval = tsecr = mss = ws = 0
            ts = o.timestamp
            if ts is not None:
                bits = O_TS
                tsval, tsecr = ts[0] & MASK, ts[1] & MASK
            if o.mss is not None:
                bits |= O_MSS
                mss = o.mss
            if o.wscale is not None:
                bits |= O_WSCALE
                ws = o.wscale
            if o.sack_permitted:
                bits |= O_SACK_PERM
            blocks = o.sack_blocks
            sack = _NO_SACK
            if blocks:
                if len(blocks) > 4:
                    bad.append(i)
                    continue
                flat = [e & MASK for b in blocks for e in b]
                sack = (*flat, *_NO_SACK[len(flat):])
            cookie = o.fastopen_cookie
            if cookie is not None:
                bits |= O_FASTOPEN
                if len(cookie) > 16:
                    bad.append(i)
                    continue
            payload = seg.payload
            n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
            addr = 0
            if n:
                cd = ffi.from_buffer(payload)
                keep.append(cd)
                addr = int(ffi.cast("uintptr_t", cd))
            try:
                pack_into(raw, k * size, addr, seg.src_ip, seg.dst_ip, seg.seq & MASK,
                          seg.ack & MASK, tsval, tsecr, *sack, n, seg.src_port, seg.dst_port,
                          seg.window, seg.urgent, mss, seg.gso_size, seg.flags, seg.ecn, bits,
                          ws, len(blocks), len(cookie) if cookie else 0, cookie or b"",
                          macs[i], 0, 0)
            except struct.error:
                bad.append(i)
                continue
            k += 1
        return bad

    def release(self) -> None:
        """Drop the references to payload buffers (after the C call)."""
        self._keep = []
