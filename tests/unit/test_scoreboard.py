"""RFC 6675 SACK scoreboard: ranges, D-SACK (RFC 2883), IsLost, SetPipe, NextSeg."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.tcp.scoreboard import SEQ_MOD, Scoreboard, seq_diff

MSS = 1000
M = SEQ_MOD - 1


def w(x: int) -> int:
    return x % SEQ_MOD


def blocks(base: int, *pairs: tuple[int, int]) -> list[tuple[int, int]]:
    return [(w(base + s), w(base + e)) for s, e in pairs]


# -- basic bookkeeping --------------------------------------------------------------------


def test_seq_diff() -> None:
    assert seq_diff(5, 3) == 2
    assert seq_diff(3, 5) == -2
    assert seq_diff(10, M - 9) == 20
    assert seq_diff(M - 9, 10) == -20


def test_merge_overlapping_and_adjacent() -> None:
    sb = Scoreboard()
    una, nxt = 1000, 20000
    assert sb.on_ack(una, blocks(0, (3000, 4000)), nxt) == 1000
    assert sb.on_ack(una, blocks(0, (3500, 5000)), nxt) == 1000  # overlap
    assert sb.on_ack(una, blocks(0, (5000, 6000)), nxt) == 1000  # adjacent
    assert sb.sacked_ranges() == [(3000, 6000)]
    assert sb.on_ack(una, blocks(0, (8000, 9000), (2000, 3000)), nxt) == 2000
    assert sb.sacked_ranges() == [(2000, 6000), (8000, 9000)]
    assert sb.on_ack(una, blocks(0, (1500, 10000)), nxt) == 8500 - 5000
    assert sb.sacked_ranges() == [(1500, 10000)]
    assert sb.sacked_bytes == 8500
    assert sb.on_ack(una, blocks(0, (2000, 3000)), nxt) == 0  # repeated info
    assert sb.high_sacked == 10000


def test_blocks_outside_window_ignored() -> None:
    sb = Scoreboard()
    una, nxt = 1000, 5000
    new = sb.on_ack(
        una,
        blocks(0, (6000, 7000), (4000, 5001), (100, 900), (3000, 3000), (3500, 3400)),
        nxt,
    )
    # the first block lies below SND.UNA: that is a D-SACK, not new information
    assert new == 0 and sb.sacked_ranges() == []
    assert sb.on_ack(una, blocks(0, (4000, 5000), (5000, 6000)), nxt) == 1000
    assert sb.sacked_ranges() == [(4000, 5000)]


def test_block_straddling_una_is_clipped() -> None:
    sb = Scoreboard()
    assert sb.on_ack(1000, blocks(0, (2000, 3000)), 9000) == 1000
    assert sb.on_ack(1000, blocks(0, (4000, 5000), (500, 1500)), 9000) == 1500
    assert sb.sacked_ranges() == [(1000, 1500), (2000, 3000), (4000, 5000)]


def test_cumulative_ack_trims() -> None:
    sb = Scoreboard()
    sb.on_ack(1000, blocks(0, (2000, 3000), (4000, 5000)), 9000)
    sb.mark_retransmitted(1000, 2000)
    assert sb.on_ack(2500, [], 9000) == 0
    assert sb.sacked_ranges() == [(2500, 3000), (4000, 5000)]
    assert sb.sacked_bytes == 1500
    assert sb.retransmitted_ranges() == []
    assert not sb.is_sacked(2000) and sb.is_sacked(2500)
    sb.on_ack(6000, [], 9000)
    assert sb.sacked_ranges() == [] and sb.sacked_bytes == 0 and sb.high_sacked is None


def test_old_ack_does_not_move_left_edge_back() -> None:
    sb = Scoreboard()
    sb.on_ack(5000, blocks(0, (6000, 7000)), 9000)
    sb.on_ack(4000, [], 9000)
    assert sb.sacked_ranges() == [(6000, 7000)]
    assert not sb.is_lost(4500, MSS)


def test_wraparound() -> None:
    sb = Scoreboard()
    una = SEQ_MOD - 2500
    nxt = w(una + 10000)
    new = sb.on_ack(una, blocks(una, (1000, 2000), (2000, 4000), (6000, 7000)), nxt)
    assert new == 4000
    assert sb.sacked_ranges() == [(SEQ_MOD - 1500, 1500), (3500, 4500)]
    assert sb.is_sacked(M) and sb.is_sacked(0) and sb.is_sacked(1499)
    assert not sb.is_sacked(1500) and not sb.is_sacked(SEQ_MOD - 1501)
    assert sb.high_sacked == 4500
    # the lost hole [una, una+1000) is found across the wrap
    assert sb.next_seg(una, nxt, MSS, una) == (una, SEQ_MOD - 1500)
    # ACK crossing zero
    sb.on_ack(500, [], nxt)
    assert sb.sacked_ranges() == [(500, 1500), (3500, 4500)]
    assert sb.sacked_bytes == 2000


def test_segment_ending_exactly_at_wrap() -> None:
    sb = Scoreboard()
    una = SEQ_MOD - 3000
    nxt = w(una + 6000)
    sb.on_ack(una, blocks(una, (1000, 2000), (3000, 3500), (4000, 4500), (5000, 5500)), nxt)
    assert sb.next_seg(una, nxt, MSS, una) == (una, SEQ_MOD - 2000)
    # hole [2^32 - 1000, 2^32): the segment's end wraps to 0
    assert sb.next_seg(una, nxt, MSS, w(una + 1000)) == (SEQ_MOD - 1000, 0)
    # hole [500, 1000) above zero has 2 ranges / 1000 bytes above: not lost
    assert sb.next_seg(una, nxt, MSS, 0) is None  # new data first (rule 2)
    assert sb.next_seg(una, nxt, MSS, 0, new_data=False) == (500, 1000)  # rule (3)


# -- D-SACK (RFC 2883 §4) -----------------------------------------------------------------


def test_dsack_below_cumulative_ack() -> None:
    sb = Scoreboard()
    sb.on_ack(5000, blocks(0, (3000, 4000), (6000, 7000)), 9000)
    assert sb.last_dsack == (3000, 4000)
    assert sb.sacked_ranges() == [(6000, 7000)]
    sb.on_ack(5000, blocks(0, (6000, 7000)), 9000)
    assert sb.last_dsack is None


def test_dsack_inside_second_block() -> None:
    sb = Scoreboard()
    new = sb.on_ack(1000, blocks(0, (6000, 7000), (5000, 8000)), 9000)
    assert sb.last_dsack == (6000, 7000)
    assert new == 3000
    assert sb.sacked_ranges() == [(5000, 8000)]


def test_dsack_across_wrap() -> None:
    sb = Scoreboard()
    una = 200
    sb.on_ack(una, [(SEQ_MOD - 100, 100), (400, 500)], 5000)
    assert sb.last_dsack == (SEQ_MOD - 100, 100)
    assert sb.sacked_ranges() == [(400, 500)]


def test_first_block_not_dsack_when_disjoint() -> None:
    sb = Scoreboard()
    sb.on_ack(1000, blocks(0, (6000, 7000), (2000, 3000)), 9000)
    assert sb.last_dsack is None
    assert sb.sacked_bytes == 2000


# -- IsLost -------------------------------------------------------------------------------


def test_is_lost_three_sacked_segments_above() -> None:
    sb = Scoreboard()
    una, nxt = 10_000, 20_000
    sb.on_ack(una, blocks(0, (11_000, 12_000)), nxt)
    assert not sb.is_lost(una, MSS)
    sb.on_ack(una, blocks(0, (11_000, 13_000)), nxt)  # 2 segments, contiguous
    assert not sb.is_lost(una, MSS)  # 2000 bytes is not more than 2*SMSS
    sb.on_ack(una, blocks(0, (11_000, 14_000)), nxt)  # 3 segments
    assert sb.is_lost(una, MSS) and sb.is_lost(10_999, MSS)
    assert not sb.is_lost(11_500, MSS)  # SACKed itself
    assert not sb.is_lost(14_000, MSS)  # nothing above
    assert not sb.is_lost(9_000, MSS) and not sb.is_lost(25_000, MSS)  # outside window


def test_is_lost_by_discontiguous_count() -> None:
    sb = Scoreboard()
    una, nxt = 0, 20_000
    sb.on_ack(una, blocks(0, (1000, 1001), (2000, 2001)), nxt)
    assert not sb.is_lost(0, MSS)
    sb.on_ack(una, blocks(0, (3000, 3001)), nxt)  # 3 tiny discontiguous ranges
    assert sb.is_lost(0, MSS)
    assert not sb.is_lost(1500, MSS)  # only 2 above


def test_is_lost_bytes_rule_with_one_range() -> None:
    sb = Scoreboard()
    sb.on_ack(0, blocks(0, (1000, 3001)), 9000)  # 2001 > 2 * 1000
    assert sb.is_lost(0, MSS)
    assert not sb.is_lost(0, 1001)


def test_dupthresh_parameter() -> None:
    sb = Scoreboard(dupthresh=1)
    sb.on_ack(0, blocks(0, (1000, 1001)), 9000)
    assert sb.is_lost(0, MSS)
    with pytest.raises(ValueError):
        Scoreboard(dupthresh=0)


# -- NextSeg ------------------------------------------------------------------------------


def make_recovery() -> tuple[Scoreboard, int, int]:
    """Segments 0..9 of 1000 bytes sent from 100_000; 1, 3, 5, 6, 7 SACKed."""
    sb = Scoreboard()
    una, nxt = 100_000, 110_000
    sb.on_ack(una, blocks(una, (1000, 2000), (3000, 4000), (5000, 8000)), nxt)
    return sb, una, nxt


def test_next_seg_first_lost_hole() -> None:
    sb, una, nxt = make_recovery()
    assert sb.next_seg(una, nxt, MSS, una) == (una, una + 1000)
    # (1.a) after retransmitting segment 0, HighRxt moves past it
    sb.mark_retransmitted(una, una + 1000)
    assert sb.next_seg(una, nxt, MSS, una + 1000) == (una + 2000, una + 3000)
    # segment 4 has only 3000 SACKed bytes (1 range) above: 3000 > 2000 -> lost
    assert sb.next_seg(una, nxt, MSS, una + 3000) == (una + 4000, una + 5000)
    # segments 8, 9 are above the highest SACK (1.b): never rule (1) or (3)
    assert sb.next_seg(una, nxt, MSS, una + 5000) is None
    assert sb.next_seg(una, nxt, MSS, una + 5000, new_data=False) is None


def test_next_seg_never_returns_sacked_and_caps_at_hole() -> None:
    sb = Scoreboard()
    una, nxt = 0, 20_000
    sb.on_ack(una, blocks(0, (300, 1000), (1500, 2500), (3000, 4000), (5000, 6000)), nxt)
    assert sb.next_seg(una, nxt, MSS, una) == (0, 300)  # stops at the SACKed range
    assert sb.next_seg(una, nxt, 100, una) == (0, 100)  # at most one SMSS
    seg = sb.next_seg(una, nxt, MSS, 300)
    assert seg == (1000, 1500)
    for s, e in [seg]:
        assert not any(sb.is_sacked(x) for x in range(s, e))


def test_next_seg_rule3_not_lost() -> None:
    sb = Scoreboard()
    una, nxt = 0, 10_000
    sb.on_ack(una, blocks(0, (1000, 2000)), nxt)  # one SACKed segment: nothing lost yet
    assert sb.next_seg(una, nxt, MSS, una) is None  # new data goes first (rule 2)
    assert sb.next_seg(una, nxt, MSS, una, new_data=False) == (0, 1000)  # rule (3)
    assert sb.next_seg(una, nxt, MSS, 1000, new_data=False) is None


def test_next_seg_without_sack() -> None:
    sb = Scoreboard()
    assert sb.next_seg(0, 10_000, MSS, 0, new_data=False) is None
    with pytest.raises(ValueError):
        sb.next_seg(0, 10_000, 0, 0)


# -- SetPipe ------------------------------------------------------------------------------


def test_pipe_accounting() -> None:
    sb, una, nxt = make_recovery()
    # holes: seg 0 (lost), seg 2 (lost), seg 4 (lost), segs 8-9 (not lost)
    assert sb.pipe(una, nxt, MSS, una) == 2000
    sb.mark_retransmitted(una, una + 1000)
    assert sb.pipe(una, nxt, MSS, una + 1000) == 3000  # (b) the retransmission
    sb.mark_retransmitted(una + 2000, una + 3000)
    assert sb.pipe(una, nxt, MSS, una + 3000) == 4000
    # the retransmission of segment 0 is cumulatively acked
    sb.on_ack(una + 1000, [], nxt)
    assert sb.pipe(una + 1000, nxt, MSS, una + 3000) == 3000
    assert sb.retransmitted_ranges() == [(una + 2000, una + 3000)]


def test_pipe_counts_not_lost_retransmission_twice() -> None:
    sb = Scoreboard()
    sb.on_ack(0, blocks(0, (1000, 2000)), 4000)
    assert sb.pipe(0, 4000, MSS) == 3000
    sb.mark_retransmitted(0, 1000)  # rule (3) retransmission: original may still arrive
    assert sb.pipe(0, 4000, MSS, 1000) == 4000


def test_pipe_rfc_high_rxt_rule_without_tracking() -> None:
    sb, una, nxt = make_recovery()
    # no mark_retransmitted(): RFC 6675 (b) "S1 <= HighRxt" over un-SACKed octets
    assert sb.pipe(una, nxt, MSS, una + 3000) == 2000 + 2000
    # explicit ranges override
    assert sb.pipe(una, nxt, MSS, una + 3000, retransmitted=[(una, una + 500)]) == 2500


def test_pipe_without_sack_is_flight_size() -> None:
    sb = Scoreboard()
    assert sb.pipe(7, 5007, MSS) == 5000


def test_clear() -> None:
    sb, una, nxt = make_recovery()
    sb.mark_retransmitted(una, una + 1000)
    sb.clear()
    assert sb.sacked_bytes == 0 and sb.retransmitted_ranges() == []
    assert sb.pipe(una, nxt, MSS, una) == 10_000
    assert "Scoreboard" in repr(sb)


# -- property test against a per-byte model -----------------------------------------------


class Model:
    """Naive per-byte scoreboard over unwrapped sequence numbers."""

    def __init__(self, una: int, dupthresh: int = 3) -> None:
        self.una = una
        self.nxt = una
        self.sacked: set[int] = set()
        self.rxt: set[int] = set()
        self.dupthresh = dupthresh
        self.dsack: tuple[int, int] | None = None

    def ack(self, una: int, blks: list[tuple[int, int]], nxt: int) -> int:
        self.una = max(self.una, una)
        self.nxt = nxt
        self.sacked = {x for x in self.sacked if x >= self.una}
        self.rxt = {x for x in self.rxt if x >= self.una}
        self.dsack = None
        if blks:
            a0, b0 = blks[0]
            if a0 < self.una or any(a <= a0 and b0 <= b and a0 < b0 for a, b in blks[1:]):
                self.dsack = (a0, b0)
        new = 0
        for k, (a, b) in enumerate(blks):
            if k == 0 and self.dsack is not None:
                continue
            if a >= b or b > self.nxt or b <= self.una:
                continue
            for x in range(max(a, self.una), b):
                if x not in self.sacked:
                    self.sacked.add(x)
                    new += 1
        return new

    def lost(self, x: int, mss: int) -> bool:
        if not self.una <= x < self.nxt or x in self.sacked:
            return False
        above = sorted(y for y in self.sacked if y > x)
        runs = sum(1 for i, y in enumerate(above) if i == 0 or above[i - 1] != y - 1)
        return runs >= self.dupthresh or len(above) > (self.dupthresh - 1) * mss

    def pipe(self, mss: int) -> int:
        n = 0
        for x in range(self.una, self.nxt):
            if x in self.sacked:
                continue
            n += (not self.lost(x, mss)) + (x in self.rxt)
        return n

    def next_seg(self, mss: int, high_rxt: int, new_data: bool) -> tuple[int, int] | None:
        if not self.sacked:
            return None
        top = min(max(self.sacked) + 1, self.nxt)
        cands = [x for x in range(max(self.una, high_rxt), top) if x not in self.sacked]

        def seg(s: int) -> tuple[int, int]:
            e = s
            while e < s + mss and e < self.nxt and e not in self.sacked:
                e += 1
            return (s, e)

        for x in cands:
            if self.lost(x, mss):
                return seg(x)
        if new_data or not cands:
            return None
        return seg(cands[0])


step = st.tuples(
    st.integers(0, 8),  # una advance
    st.integers(0, 12),  # nxt advance
    st.lists(st.tuples(st.integers(-6, 50), st.integers(-2, 12)), max_size=4),  # blocks
    st.one_of(st.none(), st.tuples(st.integers(-3, 40), st.integers(0, 8))),  # rxt mark
    st.integers(-2, 40),  # high_rxt offset
    st.booleans(),  # new_data
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.one_of(st.integers(0, M), st.integers(SEQ_MOD - 60, M)),
    mss=st.integers(1, 6),
    dupthresh=st.integers(1, 4),
    steps=st.lists(step, min_size=1, max_size=8),
)
def test_matches_per_byte_model(
    base: int,
    mss: int,
    dupthresh: int,
    steps: list[tuple],  # type: ignore[type-arg]
) -> None:
    sb = Scoreboard(dupthresh=dupthresh)
    model = Model(base, dupthresh)
    una, nxt = base, base + 20
    for d_una, d_nxt, raw, rxt, hr, new_data in steps:
        nxt += d_nxt
        una = min(una + d_una, nxt)
        blks = [(una + s, una + s + ln) for s, ln in raw]
        got = sb.on_ack(w(una), [(w(a), w(b)) for a, b in blks], w(nxt))
        assert got == model.ack(una, blks, nxt)
        exp_dsack = None if model.dsack is None else (w(model.dsack[0]), w(model.dsack[1]))
        assert sb.last_dsack == exp_dsack
        if rxt is not None:
            a = una + rxt[0]
            sb.mark_retransmitted(w(a), w(a + rxt[1]))
            model.rxt |= set(range(max(a, una), a + rxt[1]))
        assert sb.sacked_bytes == len(model.sacked)
        for x in range(una - 2, nxt + 2):
            assert sb.is_sacked(w(x)) == (x in model.sacked), x
            assert sb.is_lost(w(x), mss) == model.lost(x, mss), x
        assert sb.pipe(w(una), w(nxt), mss) == model.pipe(mss)
        high_rxt = max(una + hr, una)
        exp = model.next_seg(mss, high_rxt, new_data)
        got_seg = sb.next_seg(w(una), w(nxt), mss, w(high_rxt), new_data=new_data)
        assert got_seg == (None if exp is None else (w(exp[0]), w(exp[1])))


# -- extensions used by the connection (pystack/tcp/recovery.py) ---------------------------


def test_last_new_lists_newly_sacked_ranges() -> None:
    sb = Scoreboard()
    sb.on_ack(0, blocks(0, (1000, 2000)), 10_000)
    assert sb.last_new == [(1000, 2000)]
    sb.on_ack(0, blocks(0, (500, 3000), (5000, 6000)), 10_000)
    assert sb.last_new == [(500, 1000), (2000, 3000), (5000, 6000)]
    sb.on_ack(0, blocks(0, (500, 3000)), 10_000)
    assert sb.last_new == []


def test_lost_below_marks_every_unsacked_octet_lost() -> None:
    """After an RTO (Linux tcp_timeout_mark_lost) un-SACKed data below the mark is lost."""
    sb = Scoreboard()
    una, nxt = 0, 10_000
    sb.on_ack(una, blocks(0, (2000, 3000)), nxt)
    sb.mark_retransmitted(0, 1000)
    sb.mark_lost_below(una, 8000)
    assert sb.retransmitted_ranges() == []  # retransmissions in flight presumed lost too
    assert sb.is_lost(1500, MSS) and sb.is_lost(7999, MSS) and not sb.is_lost(8000, MSS)
    assert sb.pipe(una, nxt, MSS) == 2000  # only 8000..10000
    # NextSeg walks the lost region in order, skipping SACKed and retransmitted data.
    assert sb.next_seg(una, nxt, MSS, 0, skip_rxt=True) == (0, 1000)
    sb.mark_retransmitted(0, 1000)
    assert sb.next_seg(una, nxt, MSS, 1000, skip_rxt=True) == (1000, 2000)
    assert sb.next_seg(una, nxt, MSS, 2000, skip_rxt=True) == (3000, 4000)
    assert sb.pipe(una, nxt, MSS) == 3000
    sb.clear_lost()
    assert not sb.is_lost(5000, MSS)
    sb.mark_lost_below(una, 4000)
    sb.on_ack(4000, [], nxt)
    assert not sb.is_lost(4000, MSS)  # the mark is gone once the ACK passes it


def test_skip_rxt_and_unmark() -> None:
    sb, una, nxt = make_recovery()  # holes 0, 2, 4 lost; 8-9 not
    sb.mark_retransmitted(una, una + 1000)
    sb.mark_retransmitted(una + 2000, una + 3000)
    # HighRxt left behind (a lost retransmission lowered it): skip_rxt still finds 4.
    assert sb.next_seg(una, nxt, MSS, una, skip_rxt=True) == (una + 4000, una + 5000)
    sb.unmark_retransmitted(una + 2000, una + 3000)  # that retransmission was lost
    assert sb.next_seg(una, nxt, MSS, una, skip_rxt=True) == (una + 2000, una + 3000)
    assert sb.ever_retransmitted(una + 2000, una + 3000)  # but it was retransmitted once
    assert not sb.ever_retransmitted(una + 4000, una + 5000)


def test_rescue_seg_is_the_highest_unsacked_segment() -> None:
    sb = Scoreboard()
    sb.on_ack(0, blocks(0, (1000, 4000)), 6000)
    assert sb.rescue_seg(0, 6000, MSS) == (5000, 6000)  # the tail above the last SACK
    sb.on_ack(0, blocks(0, (1000, 6000)), 6000)
    assert sb.rescue_seg(0, 6000, 600) == (400, 1000)  # else the highest hole
    sb.on_ack(1000, [], 6000)
    assert sb.rescue_seg(1000, 6000, MSS) is None  # everything SACKed


def test_fresh_hole_len_empty_active() -> None:
    sb = Scoreboard()
    assert sb.empty and not sb.active
    sb.on_ack(0, blocks(0, (1000, 2000)), 5000)
    assert not sb.empty and sb.active
    assert sb.hole_len(0, 5000, 1460) == 1000  # stops at the SACKed block
    sb.mark_retransmitted(0, 1000)
    assert not sb.fresh(0, 2000)  # retransmitted, then SACKed
    assert sb.fresh(0, 3000)
    sb.on_ack(5000, [], 5000)
    assert sb.empty


def test_range_set_remove_and_gaps() -> None:
    from pystack.tcp.scoreboard import _RangeSet

    r = _RangeSet()
    r.add(0, 10)
    r.add(20, 30)
    r.remove(5, 25)
    assert list(zip(r.starts, r.ends, strict=True)) == [(0, 5), (25, 30)] and r.total == 10
    assert r.gaps(0, 40) == [(5, 25), (30, 40)]
    r.remove(0, 100)
    assert r.total == 0 and not r.starts


class LossModel(Model):
    """The per-byte model with Linux's RTO marks and NextSeg skipping retransmissions."""

    def __init__(self, una: int, dupthresh: int = 3) -> None:
        super().__init__(una, dupthresh)
        self.lost_below: int | None = None

    def lost(self, x: int, mss: int) -> bool:
        if not self.una <= x < self.nxt or x in self.sacked:
            return False
        if self.lost_below is not None and x < self.lost_below:
            return True
        return super().lost(x, mss)

    def next_seg2(self, mss: int, high_rxt: int, new_data: bool,
                  skip: bool) -> tuple[int, int] | None:
        tops = []
        if self.sacked:
            tops.append(max(self.sacked) + 1)
        if self.lost_below is not None:
            tops.append(self.lost_below)
        if not tops:
            return None
        top = min(max(tops), self.nxt)
        cands = [x for x in range(max(self.una, high_rxt), top)
                 if x not in self.sacked and not (skip and x in self.rxt)]

        def seg(s: int) -> tuple[int, int]:
            e = s
            while (e < s + mss and e < top and e not in self.sacked
                   and not (skip and e in self.rxt)):
                e += 1
            return (s, e)

        for x in cands:
            if self.lost(x, mss):
                return seg(x)
        if new_data or not cands:
            return None
        # rule (3): the first candidate of the first hole (per hole, not per octet)
        return seg(cands[0])


@settings(max_examples=200, deadline=None)
@given(
    base=st.one_of(st.integers(0, M), st.integers(SEQ_MOD - 60, M)),
    mss=st.integers(1, 6),
    steps=st.lists(st.tuples(
        st.integers(0, 8), st.integers(0, 12),
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), max_size=3),
        st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(1, 8))),
        st.one_of(st.none(), st.integers(0, 40)),  # RTO: mark lost below una + this
        st.booleans(),  # skip_rxt
    ), min_size=1, max_size=8),
)
def test_lost_marks_and_skip_rxt_match_per_byte_model(base: int, mss: int,
                                                      steps: list[tuple]) -> None:  # type: ignore[type-arg]
    sb = Scoreboard()
    model = LossModel(base)
    una, nxt = base, base + 20
    for d_una, d_nxt, raw, rxt, rto, skip in steps:
        nxt += d_nxt
        una = min(una + d_una, nxt)
        blks = [(una + s, una + s + ln) for s, ln in raw]
        sb.on_ack(w(una), [(w(a), w(b)) for a, b in blks], w(nxt))
        model.ack(una, blks, nxt)
        if model.lost_below is not None and model.lost_below <= una:
            model.lost_below = None
        if rto is not None:
            sb.mark_lost_below(w(una), w(una + rto))
            model.lost_below = una + rto
            model.rxt = set()
        if rxt is not None:
            a = una + rxt[0]
            sb.mark_retransmitted(w(a), w(a + rxt[1]))
            model.rxt |= set(range(max(a, una), a + rxt[1]))
        for x in range(una - 2, nxt + 2):
            assert sb.is_lost(w(x), mss) == model.lost(x, mss), x
        assert sb.pipe(w(una), w(nxt), mss) == model.pipe(mss)
        exp = model.next_seg2(mss, una, False, skip)
        got = sb.next_seg(w(una), w(nxt), mss, w(una), new_data=False, skip_rxt=skip)
        assert got == (None if exp is None else (w(exp[0]), w(exp[1])))
