"""Faults on the veth test bed: packet loss (a tc BPF program) and a bottleneck (tbf).

This kernel has no netem (PLATFORM.md), so:

* :class:`LossInjector` puts ``bpf/loss_inject.c`` (cls_bpf, direct action, on a clsact
  hook) on one side's veth: random loss with probability p (``bpf_get_prandom_u32``), the Nth
  data segment(s), a relative sequence range, and retransmissions of a segment it dropped.
  Counters in a BPF array let tests assert how many frames were dropped.
* :class:`Bottleneck` is a ``tbf`` qdisc (rate, burst, queue limit). On egress it is the
  veth's root qdisc; on ingress the veth's frames are redirected (u32 + mirred) to an ``ifb``
  device that carries the tbf, then re-enter the veth's receive path.
* Fixed delay is **not** offered: tbf bounds queueing delay but cannot add a constant one,
  and an EDT timestamp set from BPF needs the ``fq`` qdisc, which this kernel lacks. A delay
  needs a relay of our own (an AF_PACKET forwarder in a middle namespace).

Where to hook, given how pystack transmits: AF_XDP frames leave through
``__dev_direct_xmit``, which skips the qdisc layer and tc egress of the stack's veth. Faults
on pystack's outgoing traffic therefore go on the **peer's ingress**, and faults on the
traffic towards pystack on the **peer's egress** (the stack's ingress is behind XDP, which
steers owned frames away before tc). Both live on the peer's veth::

    with LossInjector(bed, "peer", "ingress", rate=0.01) as loss:  # pystack's data
        ...
    assert loss.stats().drop_random > 0

Two details make the drops look like loss on the wire to the kernel's TCP: a drop returns
TC_ACT_STOLEN (on egress TC_ACT_SHOT would tell the sending socket, which then simply resends
as if nothing had left), and an egress injector sets the veth's ``gso_max_segs`` to 1 while
attached (tc egress runs before GSO segmentation; see bpf/loss_inject.c).

Everything is removed on ``close()`` / context exit, also after a failure; names are
unique, and the bed's namespaces take whatever is left with them.
"""

from __future__ import annotations

import ctypes
import itertools
import secrets
import threading
from dataclasses import dataclass, fields
from typing import Any

from pyroute2 import NetNS

from pystack.testbed import Testbed
from pystack.xdp.program import bpf_dir

__all__ = [
    "Bottleneck",
    "FaultError",
    "LossInjector",
    "LossProgram",
    "LossStats",
    "tcp_ext",
]

HOOKS = ("ingress", "egress")
_PARENT = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}  # clsact's two hooks
SLOTS = 4  # LOSS_SLOTS in bpf/loss_inject.c
F_ON = 1
F_DATA_ONLY = 2

_lock = threading.Lock()
_prio = itertools.count(1)  # unique tc filter preferences in this process
_clsact_users: dict[tuple[str, str], int] = {}


class FaultError(RuntimeError):
    """A fault could not be installed; the message names the device and the cause."""


class _CFG(ctypes.Structure):  # struct loss_cfg
    _fields_ = [(n, ctypes.c_uint32) for n in (
        "flags", "prob", "port", "nth_first", "nth_count", "rtx_drops", "seq_lo", "seq_hi",
        "seq_max", "_pad")]


class _STATS(ctypes.Structure):  # struct loss_stats
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "seen", "data", "drop_random", "drop_nth", "drop_rtx", "drop_seq", "rtx_seen",
        "seq_hits", "base_set")] + [(n, ctypes.c_uint32) for n in (
        "base_seq", "rtx_seq", "rtx_armed", "_pad")]


@dataclass(frozen=True)
class LossStats:
    """What one injector saw and dropped since it was (re)configured."""

    seen: int = 0  # matching TCP segments
    data: int = 0  # of which carried data (the numbering the nth rule uses)
    drop_random: int = 0
    drop_nth: int = 0
    drop_rtx: int = 0
    drop_seq: int = 0
    rtx_seen: int = 0  # segments covering the last deterministic drop, seen after it
    seq_hits: int = 0

    @property
    def dropped(self) -> int:
        return self.drop_random + self.drop_nth + self.drop_rtx + self.drop_seq


# ---------------------------------------------------------------------------------------
# the compiled program


class LossProgram:
    """bpf/loss_inject.c compiled once (bcc takes ~2 s); hands out its SLOTS program slots.
    Share one per test session; each LossInjector takes a slot and gives it back."""

    def __init__(self) -> None:
        try:
            from bcc import BPF  # Debian's python3-bpfcc
        except ImportError as e:  # pragma: no cover - environment problem
            raise FaultError("bcc is not importable (Debian's python3-bpfcc)") from e
        src = bpf_dir() / "loss_inject.c"
        try:
            self.bpf = BPF(src_file=str(src).encode())
            self.fns = [self.bpf.load_func(f"loss_slot{i}".encode(), BPF.SCHED_CLS)
                        for i in range(SLOTS)]
        except Exception as e:
            raise FaultError(f"cannot build or load {src}: {e}") from e
        self.cfg = self.bpf[b"loss_cfg"]
        self.stats = self.bpf[b"loss_stats"]
        self._free = list(range(SLOTS))
        self._closed = False

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        with _lock:
            if not self._free:
                raise FaultError(f"all {SLOTS} loss-injector slots are in use")
            slot = self._free.pop(0)
        self.configure(slot, _CFG())  # off until configured
        return slot

    def release(self, slot: int) -> None:
        if self._closed:
            return
        self.configure(slot, _CFG())
        with _lock:
            self._free.append(slot)

    def configure(self, slot: int, cfg: _CFG) -> None:
        """Zero the slot's counters and state, then install cfg."""
        self.cfg[ctypes.c_int(slot)] = _CFG()  # pass everything while counters reset
        self.stats[ctypes.c_int(slot)] = _STATS()
        self.cfg[ctypes.c_int(slot)] = cfg

    def read(self, slot: int) -> LossStats:
        raw = self.stats[ctypes.c_int(slot)]
        return LossStats(**{f.name: int(getattr(raw, f.name)) for f in fields(LossStats)})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bpf.cleanup()


# ---------------------------------------------------------------------------------------
# clsact, shared by the injectors and the ingress bottleneck on one device


def _tc(bed: Testbed, side: str, *args: str, check: bool = True) -> str:
    p = bed.run(side, ["tc", *args], check=False)
    if check and p.returncode != 0:
        raise FaultError(f"tc {' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def _clsact_get(bed: Testbed, side: str) -> None:
    key = (bed.side(side).netns, bed.side(side).ifname)
    with _lock:
        n = _clsact_users.get(key, 0)
        if n == 0:
            _tc(bed, side, "qdisc", "add", "dev", key[1], "clsact")
        _clsact_users[key] = n + 1


def _clsact_put(bed: Testbed, side: str) -> None:
    key = (bed.side(side).netns, bed.side(side).ifname)
    with _lock:
        n = _clsact_users.get(key, 0) - 1
        if n > 0:
            _clsact_users[key] = n
            return
        _clsact_users.pop(key, None)
        # Gone already if the bed was destroyed first: then there is nothing to remove.
        _tc(bed, side, "qdisc", "del", "dev", key[1], "clsact", check=False)


def _gso_max_segs(bed: Testbed, side: str) -> int:
    words = bed.run(side, ["ip", "-d", "link", "show", bed.side(side).ifname]).stdout.split()
    return int(words[words.index("gso_max_segs") + 1])


def _set_gso_max_segs(bed: Testbed, side: str, n: int, check: bool = True) -> None:
    """Egress hooks see skbs before GSO splits them: with gso_max_segs 1 the kernel's TCP
    builds one skb per segment, so the loss program sees (and drops) single segments."""
    p = bed.run(side, ["ip", "link", "set", "dev", bed.side(side).ifname, "gso_max_segs",
                       str(n)], check=False)
    if check and p.returncode != 0:
        raise FaultError(f"cannot set gso_max_segs on {bed.side(side).ifname}: "
                         f"{p.stderr.strip()}")


def _check_hook(side: str, hook: str) -> None:
    if side not in ("stack", "peer"):
        raise ValueError(f"side must be 'stack' or 'peer', not {side!r}")
    if hook not in HOOKS:
        raise ValueError(f"hook must be 'ingress' or 'egress', not {hook!r}")


# ---------------------------------------------------------------------------------------
# loss


class LossInjector:
    """The loss program on one hook of one side's veth. Keyword arguments as configure()."""

    def __init__(self, bed: Testbed, side: str, hook: str, *,
                 program: LossProgram | None = None, **cfg: Any) -> None:
        _check_hook(side, hook)
        self.bed, self.side, self.hook = bed, side, hook
        self._own_program = program is None
        self.program = program or LossProgram()
        self.slot = -1
        self.prio = 0
        self._clsact = False
        self._gso_segs = 0  # the veth's gso_max_segs to restore (egress only)
        try:
            self.slot = self.program.acquire()
            self.configure(**cfg)
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self) -> None:
        if self.hook == "egress":
            self._gso_segs = _gso_max_segs(self.bed, self.side)
            _set_gso_max_segs(self.bed, self.side, 1)
        _clsact_get(self.bed, self.side)
        self._clsact = True
        s = self.bed.side(self.side)
        self.prio = next(_prio)
        fn = self.program.fns[self.slot]
        try:
            with NetNS(s.netns) as ns:
                ns.tc("add-filter", "bpf", s.ifindex, ":1", fd=fn.fd,
                      name=f"loss_slot{self.slot}", parent=_PARENT[self.hook], prio=self.prio,
                      classid=1, direct_action=True)
        except Exception as e:
            raise FaultError(f"cannot attach the loss program to {s.ifname} {self.hook}: "
                             f"{e}") from e

    def configure(self, *, rate: float = 0.0, nth: int = 0, count: int = 1, rtx: int = 0,
                  seq: tuple[int, int] | None = None, seq_max: int = 1, port: int = 0,
                  data_only: bool = False) -> None:
        """Set what to drop and zero the counters.

        rate: probability of dropping a matching segment (data segments only if data_only).
        nth, count: drop data segments number nth .. nth+count-1 (1-based; 0 = none).
        rtx: then also drop this many retransmissions of the last segment dropped by nth/seq.
        seq: drop data segments starting in [lo, hi) bytes after the first data segment's
            sequence number, at most seq_max of them.
        port: only TCP segments from or to this port (0 = any)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        if nth < 0 or count < 1 or rtx < 0 or seq_max < 0 or not 0 <= port <= 65535:
            raise ValueError("nth, rtx, seq_max must be >= 0, count >= 1, port a TCP port")
        lo, hi = seq or (0, 0)
        c = _CFG(flags=F_ON | (F_DATA_ONLY if data_only else 0),
                 prob=min(int(rate * 2**32), 2**32 - 1), port=port, nth_first=nth,
                 nth_count=count, rtx_drops=rtx, seq_lo=lo & 0xFFFFFFFF, seq_hi=hi & 0xFFFFFFFF,
                 seq_max=seq_max)
        self.program.configure(self.slot, c)

    def stats(self) -> LossStats:
        return self.program.read(self.slot)

    def close(self) -> None:
        """Detach, free the slot; idempotent, safe after a partial setup or a destroyed bed."""
        if self.prio:
            s = self.bed.side(self.side)
            _tc(self.bed, self.side, "filter", "del", "dev", s.ifname, self.hook, "pref",
                str(self.prio), check=False)
            self.prio = 0
        if self._clsact:
            self._clsact = False
            _clsact_put(self.bed, self.side)
        if self._gso_segs:
            _set_gso_max_segs(self.bed, self.side, self._gso_segs, check=False)
            self._gso_segs = 0
        if self.slot >= 0:
            self.program.release(self.slot)
            self.slot = -1
        if self._own_program:
            self._own_program = False
            self.program.close()

    def __enter__(self) -> LossInjector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# bottleneck


class Bottleneck:
    """A tbf rate limit on one hook of one side's veth.

    rate_mbit: the bottleneck rate; burst: the bucket in bytes (default: 10 ms at the rate,
    at least 32 KiB); limit: the queue in bytes (default: 50 ms at the rate, at least
    64 KiB). Frames beyond the queue are tail-dropped, as a router would."""

    def __init__(self, bed: Testbed, side: str, hook: str = "egress", *, rate_mbit: float,
                 burst: int | None = None, limit: int | None = None) -> None:
        _check_hook(side, hook)
        if rate_mbit <= 0:
            raise ValueError(f"rate_mbit must be positive, not {rate_mbit}")
        self.bed, self.side, self.hook = bed, side, hook
        bps = rate_mbit * 1e6 / 8
        self.rate_mbit = rate_mbit
        self.burst = burst or max(32 * 1024, int(bps * 0.010))
        self.limit = limit or max(64 * 1024, int(bps * 0.050))
        s = bed.side(side)
        self.ifb = ""
        self.prio = 0
        self._root = ""  # device carrying the tbf
        self._clsact = False
        try:
            if hook == "egress":
                self._tbf(s.ifname)
            else:
                self._ingress(s.ifname)
        except BaseException:
            self.close()
            raise

    def _tbf(self, dev: str) -> None:
        _tc(self.bed, self.side, "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{self.rate_mbit}mbit", "burst", str(self.burst),
            "limit", str(self.limit))
        self._root = dev

    def _ingress(self, dev: str) -> None:
        self.ifb = f"psb{secrets.token_hex(4)}"
        p = self.bed.run(self.side, ["ip", "link", "add", self.ifb, "type", "ifb"],
                         check=False)
        if p.returncode != 0:
            self.ifb = ""
            raise FaultError(f"cannot create an ifb device: {p.stderr.strip()}")
        self.bed.run(self.side, ["ip", "link", "set", self.ifb, "up"])
        self._tbf(self.ifb)
        _clsact_get(self.bed, self.side)
        self._clsact = True
        # Behind the loss filters (those take the small preferences first).
        self.prio = 1000 + next(_prio)
        _tc(self.bed, self.side, "filter", "add", "dev", dev, "ingress", "pref",
            str(self.prio), "protocol", "all", "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "redirect", "dev", self.ifb)

    def stats(self) -> dict[str, int]:
        """The tbf's counters: sent bytes/packets, drops, overlimits (0s once removed)."""
        out = _tc(self.bed, self.side, "-s", "qdisc", "show", "dev", self._root,
                  check=False) if self._root else ""
        words = out.split()
        got = {"sent_bytes": 0, "sent_packets": 0, "dropped": 0, "overlimits": 0}
        for i, w in enumerate(words[:-1]):
            if w == "Sent":
                got["sent_bytes"] = int(words[i + 1])
                got["sent_packets"] = int(words[i + 3])
            elif w == "(dropped":
                got["dropped"] = int(words[i + 1].rstrip(","))
            elif w == "overlimits":
                got["overlimits"] = int(words[i + 1])
        return got

    def close(self) -> None:
        s = self.bed.side(self.side)
        if self.prio:
            _tc(self.bed, self.side, "filter", "del", "dev", s.ifname, "ingress", "pref",
                str(self.prio), check=False)
            self.prio = 0
        if self._clsact:
            self._clsact = False
            _clsact_put(self.bed, self.side)
        if self._root == s.ifname:
            _tc(self.bed, self.side, "qdisc", "del", "dev", s.ifname, "root", check=False)
        self._root = ""
        if self.ifb:
            self.bed.run(self.side, ["ip", "link", "del", self.ifb], check=False)
            self.ifb = ""

    def __enter__(self) -> Bottleneck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# kernel counters


def tcp_ext(bed: Testbed, side: str) -> dict[str, int]:
    """The side's kernel TcpExt MIB (/proc/net/netstat), e.g. TCPLostRetransmit,
    TCPSackRecovery, TCPTimeouts; bed.snmp(side) has the Tcp: line (RetransSegs)."""
    out = bed.run(side, ["cat", "/proc/net/netstat"]).stdout.splitlines()
    rows = [line.split()[1:] for line in out if line.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}
