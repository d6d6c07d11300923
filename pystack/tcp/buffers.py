"""Send and receive buffers of one connection.

* :class:`SendBuffer` keeps the bytes from SND.UNA onwards (unacknowledged, then unsent)
  exactly once, as a queue of immutable chunks; segments are sliced out of them with
  ``memoryview`` (no per-byte copies) and an ACK drops whole chunks from the front.
* :class:`RecvBuffer` keeps in-order bytes ready for the application plus an
  out-of-order queue: a sorted list of disjoint ranges (RFC 9293 §3.10.7.4 "segment
  text": segments beyond RCV.NXT are held until the gap fills).  Ranges are kept by
  unbounded stream offset, so sequence wrap-around never reaches this module.
* :class:`MemAccount` is the engine-wide memory account behind ``tcp_mem`` (Linux
  ``tcp_memory_allocated`` / ``tcp_memory_pressure``): every buffer charges the pages its
  bytes occupy (payload bytes rounded up to whole pages per buffer, as Linux charges
  ``sk_forward_alloc`` in pages) and uncharges them as they are read, acknowledged or freed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pystack.tcp.settings import Settings

Bytes = bytes | bytearray | memoryview

PAGE_SHIFT = 12  # tcp_mem counts 4 KiB pages (Linux SK_MEM_QUANTUM on x86-64)
_PAGE_MASK = (1 << PAGE_SHIFT) - 1


class MemAccount:
    """Pages held by every buffer of one engine, and the memory-pressure state.

    Linux ``__sk_mem_raise_allocated`` / ``__sk_mem_reduce_allocated`` with ``tcp_mem``
    = [low, pressure, high] (tcp(7)): above "pressure" the stack enters memory-pressure
    mode, which it leaves once the total falls below "low"; above "high" allocations fail.
    """

    __slots__ = ("pages", "pressure", "_settings", "_mib")

    def __init__(self, settings: Settings, mib: MutableMapping[str, int]) -> None:
        self.pages = 0
        self.pressure = False
        self._settings = settings
        self._mib = mib

    def add(self, delta: int) -> None:
        """Charge (or with a negative delta, uncharge) pages."""
        self.pages += delta
        if delta < 0 and self.pressure and self.pages < self._settings.tcp_mem[0]:
            self.pressure = False  # __sk_mem_reduce_allocated: sk_leave_memory_pressure

    def low(self) -> int:
        """tcp_mem[0]."""
        return int(self._settings.tcp_mem[0])

    def schedule(self, need: int, own: int, below_min: bool, sockets: int) -> bool:
        """May ``need`` more pages be charged? (Linux ``__sk_mem_raise_allocated``.)

        ``own`` is what the asking connection already holds, ``below_min`` says it is
        under its guaranteed minimum (``tcp_rmem[0]`` / ``tcp_wmem[0]``), ``sockets`` how
        many connections share the memory. Nothing is charged here.
        """
        if need <= 0:
            return True
        low, press, high = self._settings.tcp_mem
        allocated = self.pages + need
        if allocated <= low:
            self.pressure = False
            return True
        if allocated > press and not self.pressure:
            self.pressure = True
            self._mib["TCPMemoryPressures"] += 1
        if allocated > high:
            return False
        if below_min:
            return True
        if self.pressure:
            # Under pressure a connection may still grow while it holds less than its
            # fair share of the hard limit.
            return high > sockets * (own + need)
        return True


def pages(nbytes: int) -> int:
    """Whole pages holding ``nbytes``."""
    return (nbytes + _PAGE_MASK) >> PAGE_SHIFT

# Small writes are appended to a small unsent tail chunk instead of adding a chunk each.
_COALESCE_MAX = 2048
_TAIL_MAX = 16384


class SendBuffer:
    """Bytes from SND.UNA to the end of what the application wrote."""

    __slots__ = ("_chunks", "_head", "_len", "acct", "pages")

    def __init__(self, acct: MemAccount | None = None) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already acknowledged
        self._len = 0
        self.acct = acct
        self.pages = 0  # pages charged to acct

    def __len__(self) -> int:
        return self._len

    def __del__(self) -> None:
        # Freed with its connection (or dropped at CLOSED/TIME-WAIT): give the pages back.
        if self.pages and self.acct is not None:
            self.acct.add(-self.pages)
            self.pages = 0

    def _charge(self) -> None:
        p = (self._len + _PAGE_MASK) >> PAGE_SHIFT
        if p != self.pages and self.acct is not None:
            self.acct.add(p - self.pages)
            self.pages = p

    def append(self, data: bytes) -> None:
        """Queue ``data`` (immutable bytes; the caller copied anything mutable)."""
        if not data:
            return
        chunks = self._chunks
        if chunks and len(data) <= _COALESCE_MAX and len(chunks[-1]) + len(data) <= _TAIL_MAX:
            # A new bytes object with the same prefix: offsets stay valid and views
            # handed out earlier keep the old object alive.
            chunks[-1] = chunks[-1] + data
        else:
            chunks.append(data)
        self._len += len(data)
        self._charge()

    def ack(self, n: int) -> None:
        """Drop ``n`` acknowledged bytes from the front."""
        if n <= 0:
            return
        if n > self._len:
            n = self._len
        self._len -= n
        chunks = self._chunks
        n += self._head
        while chunks and n >= len(chunks[0]):
            n -= len(chunks.popleft())
        self._head = n if chunks else 0
        self._charge()

    def view(self, off: int, n: int) -> bytes | memoryview:
        """``n`` bytes starting ``off`` bytes after SND.UNA (clipped to what is buffered)."""
        if off >= self._len or n <= 0:
            return b""
        n = min(n, self._len - off)
        off += self._head
        pieces: list[memoryview] = []
        for c in self._chunks:
            lc = len(c)
            if off >= lc:
                off -= lc
                continue
            take = min(lc - off, n)
            if not pieces and take == n:
                if off == 0 and take == lc:
                    return c
                return memoryview(c)[off : off + take]
            pieces.append(memoryview(c)[off : off + take])
            n -= take
            off = 0
            if n == 0:
                break
        return b"".join(pieces)


class _Range:
    """An out-of-order range [start, end) of stream offsets and its bytes."""

    __slots__ = ("start", "end", "chunks", "stamp")

    def __init__(self, start: int, end: int, chunks: list[bytes], stamp: int) -> None:
        self.start = start
        self.end = end
        self.chunks = chunks
        self.stamp = stamp


class RecvBuffer:
    """In-order bytes for the application and the out-of-order queue.

    Offsets count payload bytes from the first byte after the peer's SYN.
    """

    __slots__ = ("_ready", "_rhead", "ready_len", "rcv_off", "read_off", "ooo", "ooo_len",
                 "_stamp", "acct", "pages")

    def __init__(self, acct: MemAccount | None = None) -> None:
        self._ready: deque[bytes] = deque()
        self._rhead = 0
        self.ready_len = 0  # bytes the application can read
        self.rcv_off = 0  # offset of RCV.NXT (end of in-order data)
        self.read_off = 0  # offset of the next byte the application reads
        self.ooo: list[_Range] = []
        self.ooo_len = 0
        self._stamp = 0
        self.acct = acct
        self.pages = 0  # pages charged to acct

    def __del__(self) -> None:
        if self.pages and self.acct is not None:
            self.acct.add(-self.pages)
            self.pages = 0

    def _charge(self) -> None:
        p = (self.ready_len + self.ooo_len + _PAGE_MASK) >> PAGE_SHIFT
        acct = self.acct
        if p != self.pages and acct is not None:
            # MemAccount.add, inlined: this runs for most segments and reads
            acct.pages += p - self.pages
            if p < self.pages and acct.pressure and acct.pages < acct.low():
                acct.pressure = False
            self.pages = p

    def need(self, n: int) -> int:
        """More pages this buffer needs to hold ``n`` more bytes (0: they fit)."""
        return ((self.ready_len + self.ooo_len + n + _PAGE_MASK) >> PAGE_SHIFT) - self.pages

    @property
    def used(self) -> int:
        """Bytes held (readable plus out of order): what the window is computed from."""
        return self.ready_len + self.ooo_len

    def insert(self, start: int, data: bytes) -> tuple[int, tuple[int, int] | None]:
        """Store segment bytes at offset ``start`` (>= rcv_off, already window-trimmed).

        Returns (bytes that became readable, duplicate range or None). The duplicate
        range is the first part of the segment that was already held (RFC 2883 D-SACK).
        """
        end = start + len(data)
        if end <= start:
            return 0, None
        if start == self.rcv_off:
            res = self._in_order(start, data)
        else:
            res = 0, self._out_of_order(start, data)
        p = (self.ready_len + self.ooo_len + _PAGE_MASK) >> PAGE_SHIFT
        if p != self.pages:
            self._charge()
        return res

    def _in_order(self, start: int, data: bytes) -> tuple[int, tuple[int, int] | None]:
        end = start + len(data)
        before = self.rcv_off
        self._ready.append(data)
        self.ready_len += len(data)
        self.rcv_off = end
        dup: tuple[int, int] | None = None
        ooo = self.ooo
        while ooo and ooo[0].start <= self.rcv_off:
            r = ooo.pop(0)
            self.ooo_len -= r.end - r.start
            if dup is None and r.start < end:
                dup = (r.start, min(r.end, end))
            if r.end > self.rcv_off:
                skip = self.rcv_off - r.start
                for c in r.chunks:
                    if skip >= len(c):
                        skip -= len(c)
                        continue
                    piece = c[skip:] if skip else c
                    skip = 0
                    self._ready.append(piece)
                    self.ready_len += len(piece)
                self.rcv_off = r.end
        return self.rcv_off - before, dup

    def _out_of_order(self, start: int, data: bytes) -> tuple[int, int] | None:
        end = start + len(data)
        ooo = self.ooo
        i = 0
        while i < len(ooo) and ooo[i].end < start:
            i += 1
        j = i
        pos = start
        chunks: list[bytes] = []
        merged_start = start
        merged_end = end
        dup: tuple[int, int] | None = None
        added = 0
        while j < len(ooo) and ooo[j].start <= end:
            r = ooo[j]
            if r.start < merged_start:
                merged_start = r.start
            if r.start > pos:
                chunks.append(data[pos - start : r.start - start])
                added += r.start - pos
            ov_s, ov_e = max(r.start, start), min(r.end, end)
            if dup is None and ov_e > ov_s:
                dup = (ov_s, ov_e)
            chunks.extend(r.chunks)
            pos = max(pos, r.end)
            if r.end > merged_end:
                merged_end = r.end
            j += 1
        if pos < end:
            chunks.append(data[pos - start :] if pos > start else data)
            added += end - pos
        self._stamp += 1
        if added == 0 and j - i == 1:
            ooo[i].stamp = self._stamp  # a pure duplicate: still the most recent block
            return dup
        ooo[i:j] = [_Range(merged_start, merged_end, chunks, self._stamp)]
        self.ooo_len += added
        return dup

    def drop_last_ooo(self) -> tuple[int, int]:
        """Drop the highest out-of-order range (Linux ``tcp_prune_ofo_queue``, receiver
        reneging, RFC 2018 §8); returns its (start, end)."""
        r = self.ooo.pop()
        self.ooo_len -= r.end - r.start
        self._charge()
        return r.start, r.end

    def sack_ranges(self) -> list[tuple[int, int]]:
        """Out-of-order ranges, most recently changed first (RFC 2018 §4)."""
        return [(r.start, r.end) for r in sorted(self.ooo, key=lambda r: -r.stamp)]

    def read(self, n: int, stop: int | None = None) -> bytes:
        """Take up to ``n`` readable bytes, not reading past offset ``stop``."""
        if stop is not None:
            n = min(n, stop - self.read_off)
        n = min(n, self.ready_len)
        if n <= 0:
            return b""
        pieces: list[bytes] = []
        ready = self._ready
        left = n
        while left:
            c = ready[0]
            avail = len(c) - self._rhead
            if avail <= left:
                pieces.append(c[self._rhead :] if self._rhead else c)
                ready.popleft()
                self._rhead = 0
                left -= avail
            else:
                pieces.append(c[self._rhead : self._rhead + left])
                self._rhead += left
                left = 0
        self.ready_len -= n
        self.read_off += n
        if self.pages and (self.ready_len + self.ooo_len + _PAGE_MASK) >> PAGE_SHIFT != self.pages:
            self._charge()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def peek_byte(self, off: int) -> int | None:
        """The byte at stream offset ``off`` if it is buffered in order, else None."""
        rel = off - self.read_off
        if rel < 0 or rel >= self.ready_len:
            return None
        rel += self._rhead
        for c in self._ready:
            if rel < len(c):
                return c[rel]
            rel -= len(c)
        return None

    def discard(self, n: int) -> None:
        """Skip ``n`` readable bytes (the out-of-band byte when not SO_OOBINLINE)."""
        self.read(n)
