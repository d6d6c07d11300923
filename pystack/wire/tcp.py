"""TCP headers and options (RFC 9293 §3.1, §3.2)."""

from __future__ import annotations

import struct

from pystack.wire.errors import WireError
from pystack.wire.segment import TcpOptions, TcpSegment
from pystack.wire.view import Buffer, byte_view

TCP_MIN_HLEN = 20
TCP_MAX_OPTIONS = 40  # data offset is 4 bits: at most 15 words, 5 of them fixed

# Option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018, RFC 7413).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8
OPT_FASTOPEN = 34
OPT_EXP = 254  # RFC 6994 experimental; Linux still accepts TFO here with this ExID
TFO_EXP_MAGIC = 0xF989

FASTOPEN_COOKIE_MIN = 4  # RFC 7413 §4.1.1: 4 to 16 bytes, even length
FASTOPEN_COOKIE_MAX = 16

# ports, seq, ack, data offset/reserved, flags, window, checksum, urgent
_HDR = struct.Struct(">HHIIBBHHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TS = struct.Struct(">II")


class TcpHeader:
    """A view over a TCP segment (header, options, payload). `check_len` (or
    `new_checked`) validates the data offset; after it the accessors cannot fail."""

    __slots__ = ("buf",)

    def __init__(self, buf: Buffer) -> None:
        self.buf = byte_view(buf)

    @classmethod
    def new_checked(cls, buf: Buffer) -> TcpHeader:
        hdr = cls(buf)
        hdr.check_len()
        return hdr

    def check_len(self) -> None:
        n = len(self.buf)
        if n < TCP_MIN_HLEN:
            raise WireError("truncated", f"tcp: {n} < {TCP_MIN_HLEN} bytes")
        # Data Offset counts 32-bit words, at least 5 (RFC 9293 §3.1).
        doff = self.data_offset
        if doff < 5:
            raise WireError("bad_doff", f"data offset {doff} < 5")
        if doff * 4 > n:
            raise WireError("bad_doff", f"data offset {doff} runs past the {n}-byte segment")

    @property
    def src_port(self) -> int:
        return int.from_bytes(self.buf[0:2], "big")

    @property
    def dst_port(self) -> int:
        return int.from_bytes(self.buf[2:4], "big")

    @property
    def seq(self) -> int:
        return int.from_bytes(self.buf[4:8], "big")

    @property
    def ack(self) -> int:
        return int.from_bytes(self.buf[8:12], "big")

    @property
    def data_offset(self) -> int:
        return self.buf[12] >> 4

    @property
    def header_len(self) -> int:
        return (self.buf[12] >> 4) * 4

    @property
    def flags(self) -> int:
        """CWR..FIN; the reserved bits of octet 12 are ignored (RFC 9293 §3.1)."""
        return self.buf[13]

    @property
    def window(self) -> int:
        return int.from_bytes(self.buf[14:16], "big")

    @property
    def checksum(self) -> int:
        return int.from_bytes(self.buf[16:18], "big")

    @property
    def urgent(self) -> int:
        return int.from_bytes(self.buf[18:20], "big")

    @property
    def options(self) -> memoryview:
        return self.buf[TCP_MIN_HLEN : self.header_len]

    @property
    def payload(self) -> memoryview:
        return self.buf[self.header_len :]


def _bad(detail: str) -> WireError:
    return WireError("bad_option", detail)


def parse_options(data: Buffer) -> TcpOptions:
    """Parse the option bytes of a TCP header (RFC 9293 §3.2).

    Unknown kinds are skipped by their length. A length below 2 or past the end, or a
    wrong length for a known kind, raises WireError("bad_option"). A repeated option
    replaces the earlier one.
    """
    b = byte_view(data)
    n = len(b)
    opts = TcpOptions()
    i = 0
    while i < n:
        kind = b[i]
        if kind == OPT_EOL:  # the rest is padding (RFC 9293 §3.2)
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise _bad(f"kind {kind} at offset {i} has no length byte")
        length = b[i + 1]
        # Every option but EOL/NOP is kind, length, data; length counts all three, so a
        # length of 0 or 1 would never advance (RFC 9293 §3.2).
        if length < 2 or i + length > n:
            raise _bad(f"kind {kind} length {length} at offset {i} of {n}")
        if kind == OPT_MSS:  # RFC 9293 §3.2: length 4
            if length != 4:
                raise _bad(f"MSS length {length}")
            opts.mss = _U16.unpack_from(b, i + 2)[0]
        elif kind == OPT_WSCALE:  # RFC 7323 §2.2: length 3
            if length != 3:
                raise _bad(f"window scale length {length}")
            opts.wscale = b[i + 2]
        elif kind == OPT_SACK_PERM:  # RFC 2018 §2: length 2
            if length != 2:
                raise _bad(f"SACK-permitted length {length}")
            opts.sack_permitted = True
        elif kind == OPT_SACK:  # RFC 2018 §3: length 2 + 8n
            nblocks, rem = divmod(length - 2, 8)
            if rem or not 1 <= nblocks <= 4:
                raise _bad(f"SACK length {length}")
            edges = struct.unpack_from(f">{2 * nblocks}I", b, i + 2)
            opts.sack_blocks = list(zip(edges[0::2], edges[1::2], strict=True))
        elif kind == OPT_TIMESTAMP:  # RFC 7323 §3.2: length 10
            if length != 10:
                raise _bad(f"timestamps length {length}")
            opts.timestamp = _TS.unpack_from(b, i + 2)
        elif kind == OPT_FASTOPEN:  # RFC 7413 §4.1.1: length 2 (request) or 6..18, even
            clen = length - 2
            if clen and (clen & 1 or not FASTOPEN_COOKIE_MIN <= clen <= FASTOPEN_COOKIE_MAX):
                raise _bad(f"Fast Open length {length}")
            opts.fastopen_cookie = bytes(b[i + 2 : i + length])
        elif kind == OPT_EXP and length >= 4 and _U16.unpack_from(b, i + 2)[0] == TFO_EXP_MAGIC:
            # Pre-RFC Fast Open (RFC 6994 ExID 0xF989), accepted as Linux does; a kind 34
            # option wins. A malformed one is ignored like any unknown option.
            clen = length - 4
            valid = clen == 0 or (
                not clen & 1 and FASTOPEN_COOKIE_MIN <= clen <= FASTOPEN_COOKIE_MAX
            )
            if valid and opts.fastopen_cookie is None:
                opts.fastopen_cookie = bytes(b[i + 4 : i + length])
        i += length
    return opts


def _fastopen_len(cookie: bytes) -> int:
    # kind, length, cookie; padded with NOP NOP to a 4-byte boundary as Linux does.
    return (2 + len(cookie) + 3) & ~3


def options_len(opts: TcpOptions) -> int:
    """Bytes `emit_options` would write for `opts` (a multiple of 4, possibly > 40)."""
    n = 0
    if opts.mss is not None:
        n += 4
    if opts.timestamp is not None:
        n += 12  # SACKOK or NOP NOP, then TS
    elif opts.sack_permitted:
        n += 4  # NOP NOP SACKOK
    if opts.wscale is not None:
        n += 4  # NOP WS
    if opts.sack_blocks:
        n += 4 + 8 * len(opts.sack_blocks)  # NOP NOP SACK
    if opts.fastopen_cookie is not None:
        n += _fastopen_len(opts.fastopen_cookie)
    return n


def _check_emittable(opts: TcpOptions) -> int:
    if opts.mss is not None and not 0 <= opts.mss <= 0xFFFF:
        raise ValueError(f"MSS {opts.mss} out of range")
    if opts.wscale is not None and not 0 <= opts.wscale <= 0xFF:
        raise ValueError(f"window scale {opts.wscale} out of range")
    if len(opts.sack_blocks) > 4:
        raise ValueError(f"{len(opts.sack_blocks)} SACK blocks; at most 4 (RFC 2018 §3)")
    cookie = opts.fastopen_cookie
    if (
        cookie is not None
        and len(cookie)
        and (len(cookie) & 1 or not FASTOPEN_COOKIE_MIN <= len(cookie) <= FASTOPEN_COOKIE_MAX)
    ):
        raise ValueError(f"Fast Open cookie of {len(cookie)} bytes (RFC 7413 §4.1.1)")
    n = options_len(opts)
    if n > TCP_MAX_OPTIONS:
        raise ValueError(f"options need {n} bytes; at most {TCP_MAX_OPTIONS} fit")
    return n


def emit_options(opts: TcpOptions, buf: Buffer, offset: int) -> int:
    """Write `opts` at `offset` of writable `buf`, return the bytes written.

    The layout is Linux's (tcp_options_write): MSS; SACKOK TS or NOP NOP TS (or NOP NOP
    SACKOK without TS); NOP WS; NOP NOP SACK; Fast Open padded with NOP NOP. Every option
    starts on a 4-byte boundary, so the total is a multiple of 4 (RFC 9293 §3.1).
    Raises ValueError if a value is out of range or the options exceed 40 bytes.
    """
    total = _check_emittable(opts)
    mv = byte_view(buf)
    if offset < 0 or offset + total > len(mv):
        raise ValueError("options do not fit in the buffer")
    p = offset
    if opts.mss is not None:
        _U32.pack_into(mv, p, (OPT_MSS << 24) | (4 << 16) | opts.mss)
        p += 4
    if opts.timestamp is not None:
        lead = (OPT_SACK_PERM << 8 | 2) if opts.sack_permitted else (OPT_NOP << 8 | OPT_NOP)
        tsval, tsecr = opts.timestamp
        struct.pack_into(
            ">HBBII", mv, p, lead, OPT_TIMESTAMP, 10, tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF
        )
        p += 12
    elif opts.sack_permitted:
        _U32.pack_into(mv, p, (OPT_NOP << 24) | (OPT_NOP << 16) | (OPT_SACK_PERM << 8) | 2)
        p += 4
    if opts.wscale is not None:
        _U32.pack_into(mv, p, (OPT_NOP << 24) | (OPT_WSCALE << 16) | (3 << 8) | opts.wscale)
        p += 4
    if opts.sack_blocks:
        nb = len(opts.sack_blocks)
        _U32.pack_into(mv, p, (OPT_NOP << 24) | (OPT_NOP << 16) | (OPT_SACK << 8) | (2 + 8 * nb))
        p += 4
        edges = [e & 0xFFFFFFFF for block in opts.sack_blocks for e in block]
        struct.pack_into(f">{2 * nb}I", mv, p, *edges)
        p += 8 * nb
    if opts.fastopen_cookie is not None:
        cookie = opts.fastopen_cookie
        mv[p] = OPT_FASTOPEN
        mv[p + 1] = 2 + len(cookie)
        mv[p + 2 : p + 2 + len(cookie)] = cookie
        end = p + _fastopen_len(cookie)
        mv[p + 2 + len(cookie) : end] = bytes([OPT_NOP]) * (end - p - 2 - len(cookie))
        p = end
    return p - offset


def encode_options(opts: TcpOptions) -> bytes:
    """`opts` as bytes, laid out as `emit_options` does."""
    out = bytearray(options_len(opts))
    emit_options(opts, out, 0)
    return bytes(out)


def tcp_header_len(seg: TcpSegment) -> int:
    """Header plus options for `seg` (raises ValueError if the options don't fit)."""
    return TCP_MIN_HLEN + _check_emittable(seg.options)


def emit_tcp_header(seg: TcpSegment, buf: Buffer, offset: int) -> int:
    """Write `seg`'s header and options (checksum zero) at `offset`; return their length."""
    if not (0 <= seg.src_port <= 0xFFFF and 0 <= seg.dst_port <= 0xFFFF):
        raise ValueError("port out of range")
    if not (0 <= seg.window <= 0xFFFF and 0 <= seg.urgent <= 0xFFFF and 0 <= seg.flags <= 0xFF):
        raise ValueError("window, urgent pointer or flags out of range")
    mv = byte_view(buf)
    if offset < 0 or offset + tcp_header_len(seg) > len(mv):
        raise ValueError("TCP header does not fit in the buffer")
    olen = emit_options(seg.options, mv, offset + TCP_MIN_HLEN)
    hlen = TCP_MIN_HLEN + olen
    _HDR.pack_into(
        mv,
        offset,
        seg.src_port,
        seg.dst_port,
        seg.seq & 0xFFFFFFFF,
        seg.ack & 0xFFFFFFFF,
        (hlen // 4) << 4,
        seg.flags,
        seg.window,
        0,
        seg.urgent,
    )
    return hlen
