"""The RFC 6675 SACK scoreboard of a sender, over the sequence space [SND.UNA, SND.NXT).

The scoreboard is a sorted list of disjoint, non-adjacent SACKed ranges (plus one of
retransmitted ranges), searched with :mod:`bisect`; nothing is stored per byte or per
segment.  Sequence numbers passed in and returned are modulo 2^32 (RFC 9293 §3.4); inside,
each is "unwrapped" to an unbounded integer relative to SND.UNA, which is valid because
the window never spans more than 2^31 (RFC 7323 §2.3).

RFC 6675 terms and how they map here:

* HighACK = ``snd_una``, HighData = ``snd_nxt`` (one past the highest octet sent).
* HighRxt: the RFC's is the highest octet retransmitted.  ``high_rxt`` here is **one past**
  it, i.e. the end of the last retransmitted segment; pass ``snd_una`` (or anything not
  after it) when nothing has been retransmitted in the current recovery.
* DupThresh = ``dupthresh`` (3), SMSS = the ``mss`` argument.

Typical sender use during recovery (RFC 6675 §5)::

    new = sb.on_ack(seg.ack, seg.sack_blocks, snd_nxt)   # every ACK
    pipe = sb.pipe(snd_una, snd_nxt, mss, high_rxt)       # SetPipe
    while cwnd - pipe >= mss:
        rng = sb.next_seg(snd_una, snd_nxt, mss, high_rxt, new_data=have_unsent_data)
        if rng is None: ... send new data (rule 2) or stop
        else: retransmit rng; sb.mark_retransmitted(*rng); high_rxt = rng[1]

Extensions beyond RFC 6675 used by the connection (:mod:`pystack.tcp.recovery`):

* :meth:`Scoreboard.mark_lost_below` marks every un-SACKed octet below a point lost, as
  Linux ``tcp_timeout_mark_lost`` does after a retransmission timeout (RFC 6675 §5.1 asks
  the sender to keep using SACK information in the recovery that follows an RTO);
* ``next_seg(..., skip_rxt=True)`` never returns an octet already retransmitted (Linux
  marks each retransmitted segment); :meth:`Scoreboard.unmark_retransmitted` makes a
  retransmission found lost eligible again;
* :meth:`Scoreboard.rescue_seg` is NextSeg rule (4), the rescue retransmission;
* :attr:`Scoreboard.last_new` lists the ranges the last ACK newly SACKed (reordering
  detection and F-RTO need to know *what* was SACKed, not just how much).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

__all__ = ["SEQ_MOD", "Scoreboard", "seq_diff"]

SEQ_MOD = 1 << 32
_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in sequence space, in [-2^31, 2^31) (RFC 1982 style)."""
    return ((a - b + _HALF) & _MASK) - _HALF


class _RangeSet:
    """Sorted disjoint half-open integer ranges [s, e), adjacent ones merged."""

    __slots__ = ("starts", "ends", "total", "_prefix")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.total = 0
        self._prefix: list[int] | None = None  # cumulative sizes, built on demand

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.total = 0
        self._prefix = None

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, s: int, e: int) -> int:
        """Insert [s, e); returns the number of integers newly covered."""
        if s >= e:
            return 0
        # First range that could touch [s, e): its end >= s (adjacent counts).
        i = bisect_left(self.ends, s)
        # One past the last range that could touch: its start <= e.
        j = bisect_right(self.starts, e)
        covered = 0
        if i < j:
            s2 = min(s, self.starts[i])
            e2 = max(e, self.ends[j - 1])
            for k in range(i, j):
                covered += self.ends[k] - self.starts[k]
            self.starts[i:j] = [s2]
            self.ends[i:j] = [e2]
        else:
            s2, e2 = s, e
            self.starts.insert(i, s)
            self.ends.insert(i, e)
        added = (e2 - s2) - covered
        self.total += added
        self._prefix = None
        return added

    def remove(self, s: int, e: int) -> None:
        """Uncover [s, e)."""
        if s >= e or not self.starts:
            return
        i = bisect_right(self.ends, s)  # first range ending after s
        starts: list[int] = []
        ends: list[int] = []
        j = i
        while j < len(self.starts) and self.starts[j] < e:
            a, b = self.starts[j], self.ends[j]
            self.total -= min(b, e) - max(a, s)
            if a < s:
                starts.append(a)
                ends.append(s)
            if b > e:
                starts.append(e)
                ends.append(b)
            j += 1
        if j > i:
            self.starts[i:j] = starts
            self.ends[i:j] = ends
            self._prefix = None

    def gaps(self, s: int, e: int) -> list[tuple[int, int]]:
        """The parts of [s, e) not covered, ascending."""
        out: list[tuple[int, int]] = []
        i = bisect_right(self.ends, s)
        cur = s
        while cur < e and i < len(self.starts) and self.starts[i] < e:
            if self.starts[i] > cur:
                out.append((cur, self.starts[i]))
            cur = max(cur, self.ends[i])
            i += 1
        if cur < e:
            out.append((cur, e))
        return out

    def trim_below(self, lo: int) -> None:
        """Drop everything below ``lo`` (cumulative ACK)."""
        i = bisect_right(self.ends, lo)  # ranges [0, i) end at or below lo
        if i:
            for k in range(i):
                self.total -= self.ends[k] - self.starts[k]
            del self.starts[:i]
            del self.ends[:i]
            self._prefix = None
        if self.starts and self.starts[0] < lo:
            self.total -= lo - self.starts[0]
            self.starts[0] = lo
            self._prefix = None

    def index_containing(self, x: int) -> int:
        """Index of the range containing x, or -1."""
        i = bisect_right(self.starts, x) - 1
        if i >= 0 and x < self.ends[i]:
            return i
        return -1

    def prefix(self) -> list[int]:
        """prefix[i] = total size of ranges [0, i)."""
        if self._prefix is None:
            acc = [0]
            for s, e in zip(self.starts, self.ends, strict=True):
                acc.append(acc[-1] + (e - s))
            self._prefix = acc
        return self._prefix

    def overlap(self, s: int, e: int) -> int:
        """Number of integers of [s, e) covered."""
        if s >= e or not self.starts:
            return 0
        i = bisect_right(self.ends, s)
        n = 0
        while i < len(self.starts) and self.starts[i] < e:
            n += min(e, self.ends[i]) - max(s, self.starts[i])
            i += 1
        return n


class Scoreboard:
    """RFC 6675 §3 scoreboard: which octets above SND.UNA the receiver has SACKed.

    Attributes: ``dupthresh``; ``last_dsack`` (the D-SACK block of the last ACK given to
    :meth:`on_ack`, RFC 2883, or None); ``last_new`` (the ranges that ACK newly SACKed,
    modulo 2^32); :attr:`sacked_bytes`.
    """

    def __init__(self, dupthresh: int = 3) -> None:
        if dupthresh < 1:
            raise ValueError(f"dupthresh must be >= 1, got {dupthresh}")
        self.dupthresh = dupthresh
        self.last_dsack: tuple[int, int] | None = None
        self.last_new: list[tuple[int, int]] = []
        self._una: int | None = None  # SND.UNA modulo 2^32, None until first seen
        self._una_abs = 0  # SND.UNA unwrapped; all stored ranges use this coordinate
        self._nxt_abs = 0
        self._sacked = _RangeSet()
        self._rxt = _RangeSet()  # retransmitted, presumed in flight (SetPipe rule (b))
        self._ever = _RangeSet()  # ever retransmitted (Linux TCPCB_EVER_RETRANS)
        self._rxt_tracked = False  # mark_retransmitted() was used since clear()
        self._lost_below: int | None = None  # un-SACKed octets below are lost (after an RTO)

    # -- coordinates -----------------------------------------------------------------------
    def _abs(self, seq: int) -> int:
        """Unwrap ``seq`` relative to SND.UNA (valid within +-2^31 of it)."""
        assert self._una is not None
        return self._una_abs + seq_diff(seq & _MASK, self._una)

    @staticmethod
    def _wrap(x: int) -> int:
        return x & _MASK

    def _sync(self, snd_una: int, snd_nxt: int | None = None) -> None:
        """Move the left edge to ``snd_una`` (never backwards) and note ``snd_nxt``."""
        snd_una &= _MASK
        if self._una is None:
            self._una = snd_una
            self._una_abs = snd_una
            self._nxt_abs = snd_una
        else:
            d = seq_diff(snd_una, self._una)
            if d > 0:  # cumulative ACK advanced: RFC 6675 §5 (drop acked state)
                self._una = snd_una
                self._una_abs += d
                self._sacked.trim_below(self._una_abs)
                self._rxt.trim_below(self._una_abs)
                self._ever.trim_below(self._una_abs)
                if self._lost_below is not None and self._lost_below <= self._una_abs:
                    self._lost_below = None
        if snd_nxt is not None:
            self._nxt_abs = self._una_abs + ((snd_nxt - self._una) & _MASK)
        self._nxt_abs = max(self._nxt_abs, self._una_abs)

    def sync(self, snd_una: int, snd_nxt: int) -> None:
        """Move the left edge to ``snd_una`` and note ``snd_nxt`` (cumulative ACK only)."""
        self._sync(snd_una, snd_nxt)

    # -- updates ---------------------------------------------------------------------------
    def on_ack(self, snd_una: int, sack_blocks: Iterable[tuple[int, int]], snd_nxt: int) -> int:
        """Process one ACK's cumulative ACK and SACK blocks; return bytes newly SACKed.

        ``snd_una`` is the (already advanced) cumulative ACK of this segment.  Blocks are
        (left edge, right edge) pairs, right edge exclusive, as on the wire (RFC 2018 §3).
        A block that is empty, reaches beyond ``snd_nxt`` or lies wholly below
        ``snd_una`` is ignored (RFC 6675 §4: only octets above HighACK are recorded); one
        straddling ``snd_una`` is clipped to it.  Overlapping/adjacent blocks merge.

        D-SACK (RFC 2883 §4): the first block is a duplicate report if it starts below
        the cumulative ACK, or lies inside another block of the same ACK (the RFC says
        the second).  It is reported as :attr:`last_dsack` and does not count as new.
        """
        blocks = [(s & _MASK, e & _MASK) for s, e in sack_blocks]
        self._sync(snd_una, snd_nxt)
        una = self._una_abs
        nxt = self._nxt_abs
        self.last_dsack = None
        self.last_new = []
        if blocks:
            s0, e0 = blocks[0]
            if seq_diff(s0, self._wrap(una)) < 0:  # RFC 2883 §4 case 1: below the ACK
                self.last_dsack = (s0, e0)
            else:
                a0, b0 = self._abs(s0), self._abs(e0)
                for s1, e1 in blocks[1:]:  # §4 case 2: inside another (second) block
                    a1, b1 = self._abs(s1), self._abs(e1)
                    if a1 <= a0 and b0 <= b1 and a0 < b0:
                        self.last_dsack = (s0, e0)
                        break
        new = 0
        for k, (s, e) in enumerate(blocks):
            if k == 0 and self.last_dsack is not None:
                continue
            a, b = self._abs(s), self._abs(e)
            if a >= b or b > nxt or b <= una:
                continue  # empty/inverted, beyond what we sent, or already acked
            a = max(a, una)
            for g0, g1 in self._sacked.gaps(a, b):
                self.last_new.append((self._wrap(g0), self._wrap(g1)))
            new += self._sacked.add(a, b)
        return new

    def mark_retransmitted(self, start: int, end: int, *, in_flight: bool = True) -> None:
        """Record that [start, end) was retransmitted (counted by :meth:`pipe` rule (b)
        unless ``in_flight`` is False, as for the rescue retransmission of rule (4))."""
        if self._una is None:
            self._sync(start)
        a, b = self._abs(start), self._abs(end)
        a = max(a, self._una_abs)
        if a < b:
            self._ever.add(a, b)
            if in_flight:
                self._rxt.add(a, b)
        self._rxt_tracked = True

    def unmark_retransmitted(self, start: int, end: int) -> None:
        """Forget that [start, end) was retransmitted (that retransmission was lost)."""
        if self._una is None:
            return
        self._rxt.remove(max(self._abs(start), self._una_abs), self._abs(end))

    def mark_lost_below(self, snd_una: int, seq: int) -> None:
        """Treat every un-SACKed octet in [SND.UNA, seq) as lost (IsLost true), as Linux
        ``tcp_timeout_mark_lost`` does on a retransmission timeout; forgets the
        retransmission marks (those copies are presumed lost too)."""
        self._sync(snd_una)
        self._lost_below = self._abs(seq)
        self.clear_retransmitted()

    def clear_lost(self) -> None:
        """Undo :meth:`mark_lost_below` (a spurious timeout was detected)."""
        self._lost_below = None

    def clear_retransmitted(self) -> None:
        """Forget retransmission marks (e.g. when a loss recovery phase ends)."""
        self._rxt.clear()
        self._rxt_tracked = False

    def clear(self) -> None:
        """Discard the whole scoreboard (e.g. after an RTO, RFC 6675 §5.1)."""
        self._sacked.clear()
        self.clear_retransmitted()
        self._ever.clear()
        self._lost_below = None
        self.last_dsack = None
        self.last_new = []

    # -- queries ---------------------------------------------------------------------------
    @property
    def sacked_bytes(self) -> int:
        """Octets above SND.UNA currently marked SACKed."""
        return self._sacked.total

    @property
    def high_sacked(self) -> int | None:
        """One past the highest SACKed octet (modulo 2^32), or None if nothing is SACKed."""
        if not self._sacked.ends:
            return None
        return self._wrap(self._sacked.ends[-1])

    def sacked_ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges above SND.UNA, ascending, as (start, end) modulo 2^32."""
        return [
            (self._wrap(s), self._wrap(e))
            for s, e in zip(self._sacked.starts, self._sacked.ends, strict=True)
        ]

    def retransmitted_ranges(self) -> list[tuple[int, int]]:
        """The ranges recorded by :meth:`mark_retransmitted` that are still above SND.UNA."""
        return [
            (self._wrap(s), self._wrap(e))
            for s, e in zip(self._rxt.starts, self._rxt.ends, strict=True)
        ]

    @property
    def empty(self) -> bool:
        """Nothing SACKed, retransmitted or marked lost above SND.UNA."""
        return not (
            self._sacked.starts or self._ever.starts or self._rxt.starts
            or self._lost_below is not None
        )

    @property
    def active(self) -> bool:
        """Anything SACKed, marked lost or retransmitted (else pipe is FlightSize)."""
        return bool(self._sacked.starts or self._lost_below is not None or self._rxt.starts)

    def ever_retransmitted(self, start: int, end: int) -> bool:
        """Whether any octet of [start, end) was retransmitted (and is still above
        SND.UNA as last synced)."""
        if self._una is None or not self._ever.starts:
            return False
        return self._ever.overlap(self._abs(start), self._abs(end)) > 0

    def fresh(self, start: int, end: int) -> bool:
        """Whether some octet of [start, end) is neither SACKed nor ever retransmitted."""
        if self._una is None:
            return start != end
        a, b = max(self._abs(start), self._una_abs), self._abs(end)
        return any(self._ever.gaps(s, e) for s, e, _ in self._holes(a, b))

    def hole_len(self, snd_una: int, snd_nxt: int, mss: int) -> int:
        """Length of the first segment to retransmit at SND.UNA: up to ``mss`` octets,
        stopping at the first SACKed octet."""
        self._sync(snd_una, snd_nxt)
        lo = self._una_abs
        n = min(mss, self._nxt_abs - lo)
        i = bisect_right(self._sacked.ends, lo)
        if i < len(self._sacked.starts):
            n = min(n, self._sacked.starts[i] - lo)
        return max(n, 0)

    def _in_window(self, x: int) -> bool:
        return self._una_abs <= x < self._nxt_abs

    def is_sacked(self, seq: int) -> bool:
        """Whether octet ``seq`` has been SACKed (and not yet cumulatively ACKed)."""
        if self._una is None:
            return False
        return self._sacked.index_containing(self._abs(seq)) >= 0

    def _lost_abs(self, x: int, mss: int) -> bool:
        """RFC 6675 §4 IsLost for an unwrapped octet that is not SACKed."""
        if self._lost_below is not None and x < self._lost_below:
            return True
        i = bisect_right(self._sacked.starts, x)  # ranges [i, n) lie entirely above x
        n = len(self._sacked)
        if n - i >= self.dupthresh:  # DupThresh discontiguous SACKed sequences above
            return True
        above = self._sacked.total - self._sacked.prefix()[i]
        return above > (self.dupthresh - 1) * mss  # more than (DupThresh-1)*SMSS bytes

    def is_lost(self, seq: int, mss: int) -> bool:
        """RFC 6675 §4 IsLost(SeqNum).

        True when DupThresh discontiguous SACKed ranges lie above ``seq``, or more than
        (DupThresh - 1) * SMSS SACKed octets are above it.  A SACKed octet, or one outside
        [SND.UNA, SND.NXT), is never lost.
        """
        if self._una is None:
            return False
        x = self._abs(seq)
        if not self._in_window(x) or self._sacked.index_containing(x) >= 0:
            return False
        return self._lost_abs(x, mss)

    def _holes(self, lo: int, hi: int) -> Iterable[tuple[int, int, int]]:
        """Un-SACKed ranges within [lo, hi) as (start, end, index of next SACKed range),
        split at the :meth:`mark_lost_below` point so IsLost is constant over each."""
        starts, ends = self._sacked.starts, self._sacked.ends
        lb = self._lost_below
        i = bisect_right(ends, lo)
        cur = lo
        while cur < hi:
            if i < len(starts) and starts[i] <= cur:
                cur = ends[i]
                i += 1
                continue
            end = min(starts[i], hi) if i < len(starts) else hi
            if lb is not None and cur < lb < end:
                end = lb
            if cur < end:
                yield cur, end, i
            cur = end

    def pipe(
        self,
        snd_una: int,
        snd_nxt: int,
        mss: int,
        high_rxt: int | None = None,
        retransmitted: Iterable[tuple[int, int]] | None = None,
    ) -> int:
        """RFC 6675 §4 SetPipe: octets estimated in flight.

        For each un-SACKed octet S1 in [SND.UNA, SND.NXT): (a) +1 if not IsLost(S1);
        (b) +1 if S1 was retransmitted and that copy is presumed still in flight.  For
        (b) the RFC's test "S1 <= HighRxt" assumes every un-SACKed octet below HighRxt
        was retransmitted; this scoreboard instead uses exact ranges: ``retransmitted``
        if given, else those recorded by :meth:`mark_retransmitted`.  If neither exists
        (the caller does not track ranges) the RFC rule S1 < ``high_rxt`` is applied.
        IsLost is constant over a hole (the SACKed octets above it are the same), so the
        work is per hole, not per octet.
        """
        self._sync(snd_una, snd_nxt)
        lo, hi = self._una_abs, self._nxt_abs
        rxt: _RangeSet | None
        if retransmitted is not None:
            rxt = _RangeSet()
            for s, e in retransmitted:
                a, b = self._abs(s), self._abs(e)
                rxt.add(max(a, lo), min(b, hi))
        elif self._rxt_tracked:
            rxt = self._rxt
        else:
            rxt = None
        hr = lo if high_rxt is None else max(self._abs(high_rxt), lo)
        if (
            not self._sacked.starts
            and self._lost_below is None
            and (not rxt.starts if rxt is not None else hr <= lo)
        ):
            return hi - lo  # nothing SACKed, lost or retransmitted: FlightSize
        total = 0
        for s, e, _ in self._holes(lo, hi):
            if not self._lost_abs(s, mss):  # (a)
                total += e - s
            if rxt is not None:  # (b), exact ranges
                total += rxt.overlap(s, e)
            elif s < hr:  # (b), the RFC's S1 <= HighRxt
                total += min(e, hr) - s
        return total

    def _candidates(self, s: int, e: int, skip_rxt: bool) -> Iterable[tuple[int, int]]:
        if skip_rxt and self._rxt.starts:
            yield from self._rxt.gaps(s, e)
        else:
            yield s, e

    def next_seg(
        self,
        snd_una: int,
        snd_nxt: int,
        mss: int,
        high_rxt: int | None = None,
        *,
        new_data: bool = True,
        skip_rxt: bool = False,
    ) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg: the next range to retransmit, or None.

        Rule (1): the lowest un-SACKed octet S2 with S2 >= ``high_rxt`` (1.a, "greater
        than HighRxt"), below the highest SACKed octet (1.b) and IsLost(S2) (1.c).
        Rule (2), new data, is the caller's: if ``new_data`` (unsent data exists and the
        receive window allows) and rule (1) finds nothing, None is returned and the caller
        sends new data.  Rule (3), only when ``new_data`` is False: the lowest S3 meeting
        (1.a) and (1.b) regardless of IsLost.  Rule (4) is :meth:`rescue_seg`.

        After :meth:`mark_lost_below` the bound of (1.b) is at least that point, so every
        un-SACKed octet below it is a candidate (retransmission after an RTO).  With
        ``skip_rxt`` octets recorded by :meth:`mark_retransmitted` are never returned.

        The result is (S, min(S + mss, start of the next SACKed range)), modulo 2^32: it
        never covers a SACKed octet (nor, with ``skip_rxt``, a retransmitted one).
        """
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss}")
        self._sync(snd_una, snd_nxt)
        top = self._sacked.ends[-1] if self._sacked.ends else None
        if self._lost_below is not None and (top is None or self._lost_below > top):
            top = self._lost_below
        if top is None:
            return None  # (1.b) fails for every octet: nothing SACKed
        lo = self._una_abs
        if high_rxt is not None:
            lo = max(lo, self._abs(high_rxt))  # (1.a)
        hi = min(top, self._nxt_abs)  # (1.b): below the highest SACK
        first: tuple[int, int] | None = None
        for s, e, _ in self._holes(lo, hi):
            lost = self._lost_abs(s, mss)  # (1.c); constant over the hole
            for a, _b in self._candidates(s, e, skip_rxt):
                seg = (self._wrap(a), self._wrap(self._seg_end(a, mss, hi, skip_rxt)))
                if lost:
                    return seg
                if first is None:
                    first = seg
                break
        if new_data:
            return None  # rule (2) is the caller's
        return first  # rule (3)

    def _seg_end(self, a: int, mss: int, hi: int, skip_rxt: bool) -> int:
        """End of the segment NextSeg returns at ``a``: at most ``mss`` octets, below
        ``hi``, stopping at the next SACKed (and, with ``skip_rxt``, retransmitted)
        octet."""
        end = min(a + mss, hi)
        for rs in (self._sacked, self._rxt) if skip_rxt else (self._sacked,):
            i = bisect_right(rs.starts, a)
            if i < len(rs.starts):
                end = min(end, rs.starts[i])
        return end

    def rescue_seg(self, snd_una: int, snd_nxt: int, mss: int) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg rule (4), the rescue retransmission: up to one SMSS of
        un-SACKed data ending with the highest outstanding un-SACKed octet, or None.

        Whether a rescue is allowed now (HighACK > RescueRxt, once per recovery) is the
        caller's business, as is not updating HighRxt for it.
        """
        self._sync(snd_una, snd_nxt)
        lo, hi = self._una_abs, self._nxt_abs
        if lo >= hi:
            return None
        ends, starts = self._sacked.ends, self._sacked.starts
        if not ends or ends[-1] < hi:
            h0, h1 = (ends[-1] if ends else lo), hi  # the tail above the highest SACK
            h0 = max(h0, lo)
        else:
            holes = [(a, b) for a, b, _ in self._holes(lo, starts[-1])]
            if not holes:
                return None
            h0, h1 = holes[-1]
        return self._wrap(max(h0, h1 - mss)), self._wrap(h1)

    def lost_bytes(self, snd_una: int, snd_nxt: int, mss: int) -> int:
        """Un-SACKed octets IsLost() says are lost and that were not retransmitted since
        (``tcp_info`` lost)."""
        self._sync(snd_una, snd_nxt)
        n = 0
        for s, e, _ in self._holes(self._una_abs, self._nxt_abs):
            if self._lost_abs(s, mss):
                n += (e - s) - self._rxt.overlap(s, e)
        return n

    def __repr__(self) -> str:
        return (
            f"Scoreboard(una={self._una}, sacked={self.sacked_ranges()}, "
            f"rxt={self.retransmitted_ranges()})"
        )
