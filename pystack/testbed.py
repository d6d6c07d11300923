"""A two-host test bed: two network namespaces joined by a veth pair.

    ns "<name>-s" (stack side)              ns "<name>-p" (peer side)
    veth "<id>s" 198.18.0.1/24  <──────────> veth "<id>p" 198.18.0.2/24
                                              + an XDP_PASS stub, so that XDP_TX and
                                                redirects from the stack side arrive (PLATFORM.md)

Used by the integration tests, the demo and the benchmarks. Names are unique per run
(they carry the creating pid, so `cleanup_stale()` can remove beds of dead runs), and
everything is torn down on exit, on exceptions and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import NetNS, netns

PREFIX = "pystack-"
NS_RE = re.compile(rf"^{PREFIX}(\d+)-([0-9a-f]+)-[sp]$")

STACK_IP = "198.18.0.1"
PEER_IP = "198.18.0.2"
PREFIXLEN = 24

_lock = threading.Lock()


@dataclass
class Side:
    """One host of the bed."""

    netns: str
    ifname: str
    ip: str
    mac: str = ""
    ifindex: int = 0


@dataclass
class Testbed:
    """Create with `Testbed.create()` (or as a context manager); always `destroy()`."""

    stack: Side
    peer: Side
    tag: str
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _stub_link: int = -1
    _stub_prog: int = -1
    _destroyed: bool = False
    _owner: int = field(default_factory=os.getpid)

    # ---- life cycle ----
    @classmethod
    def create(cls, *, peer_offload: bool = False, stub: bool = True, queues: int = 1
               ) -> Testbed:
        """Build the bed. peer_offload=False turns checksum offload and TSO/GSO off on the
        peer's veth, so its frames carry full checksums like a real NIC's (see PLATFORM.md).
        queues > 1 gives both veths that many tx and rx queues, with XPS sending from CPU i
        on queue i % queues (as multi-queue NIC drivers set it up): a veth delivers what
        its peer sent on tx queue i to rx queue i, so each CPU's traffic has its own rx
        queue, and with XDP attached its own ring."""
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        short = secrets.token_hex(4)
        bed = cls(
            stack=Side(f"{PREFIX}{tag}-s", f"ps{short}s", STACK_IP),
            peer=Side(f"{PREFIX}{tag}-p", f"ps{short}p", PEER_IP),
            tag=tag,
        )
        try:
            bed._build(peer_offload=peer_offload, stub=stub, queues=queues)
        except BaseException:
            bed.destroy()
            raise
        return bed

    def _build(self, *, peer_offload: bool, stub: bool, queues: int = 1) -> None:
        for side in (self.stack, self.peer):
            netns.create(side.netns)
        # Made inside the stack namespace with the peer end placed straight into the peer's:
        # the veth never exists in the caller's namespace.
        nq = {"num_tx_queues": queues, "num_rx_queues": queues} if queues > 1 else {}
        with NetNS(self.stack.netns) as ns:
            ns.link("add", ifname=self.stack.ifname, kind="veth", **nq,
                    peer={"ifname": self.peer.ifname, "net_ns_fd": self.peer.netns, **nq})
        for side in (self.stack, self.peer):
            with NetNS(side.netns) as ns:
                lo = ns.link_lookup(ifname="lo")[0]
                ns.link("set", index=lo, state="up")
                idx = ns.link_lookup(ifname=side.ifname)[0]
                ns.addr("add", index=idx, address=side.ip, prefixlen=PREFIXLEN)
                ns.link("set", index=idx, state="up")
                link = ns.get_links(idx)[0]
                side.mac = link.get_attr("IFLA_ADDRESS")
                side.ifindex = idx
        if not peer_offload:
            self.run("peer", ["ethtool", "-K", self.peer.ifname, "tx", "off", "tso", "off",
                              "gso", "off"], check=True, capture=True)
        if queues > 1:
            self._set_xps(queues)
        if stub:
            self._attach_stub()

    def _set_xps(self, queues: int) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        for name, side in (("stack", self.stack), ("peer", self.peer)):
            script = "".join(
                f"echo {sum(1 << c for c in cpus if c % queues == q):x} > "
                f"/sys/class/net/{side.ifname}/queues/tx-{q}/xps_cpus\n"
                for q in range(queues))
            self.run(name, ["sh", "-e"], input=script)

    def _attach_stub(self) -> None:
        from pystack.io._xsk import lib

        prog = lib.ps_xdp_pass_prog()
        if prog < 0:
            raise OSError(-prog, "cannot load the XDP_PASS stub program")
        self._stub_prog = prog
        with self.enter("peer"):
            link = lib.ps_xdp_link_create(prog, socket.if_nametoindex(self.peer.ifname), 0)
        if link < 0:
            raise OSError(-link, f"cannot attach the XDP stub to {self.peer.ifname}")
        self._stub_link = link

    def destroy(self) -> None:
        """Kill what the bed started, drop the stub, delete both namespaces. Idempotent.
        Only the creating process tears down: a forked child (pyroute2 forks to open sockets
        in namespaces) that unwinds must not delete its parent's bed."""
        if self._destroyed or os.getpid() != self._owner:
            return
        self._destroyed = True
        with _deferred_signals():
            for p in self._procs:
                _kill(p)
            self._procs.clear()
            for fd in (self._stub_link, self._stub_prog):
                if fd >= 0:
                    os.close(fd)
            for side in (self.stack, self.peer):
                _remove_ns(side.netns)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ---- using it ----
    def side(self, name: str) -> Side:
        if name not in ("stack", "peer"):
            raise ValueError(f"side must be 'stack' or 'peer', not {name!r}")
        return self.stack if name == "stack" else self.peer

    @contextlib.contextmanager
    def enter(self, name: str) -> Iterator[None]:
        """Run the block with this thread in the side's namespace. Sockets created inside
        stay in that namespace after the block ends."""
        with _lock:
            netns.pushns(self.side(name).netns)
            try:
                yield
            finally:
                netns.popns()

    def socket(self, name: str, *args: Any, **kwargs: Any) -> socket.socket:
        """A kernel socket living in the side's namespace."""
        with self.enter(name):
            return socket.socket(*args, **kwargs)

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.side(name).netns, *argv]

    def run(
        self, name: str, argv: Sequence[str], *, check: bool = True, capture: bool = True,
        timeout: float = 60, **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(name, argv), check=check, capture_output=capture,
                              text=True, timeout=timeout, **kw)

    def spawn(self, name: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in the side's namespace; the bed kills it on destroy."""
        p = subprocess.Popen(self.command(name, argv), start_new_session=True, **kw)
        self._procs.append(p)
        return p

    def xdp_prog_id(self, name: str) -> int:
        """Id of the XDP program on the side's veth, 0 if none."""
        from pystack.xdp.program import attached_prog_id

        with self.enter(name):
            return attached_prog_id(socket.if_nametoindex(self.side(name).ifname))

    def snmp(self, name: str) -> dict[str, int]:
        """The side's kernel TCP MIB (/proc/net/snmp "Tcp:" line) as a dict."""
        out = self.run(name, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        rows = [line.split()[1:] for line in out if line.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def _kill(p: subprocess.Popen[Any]) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=3)


def _remove_ns(name: str) -> None:
    if name not in netns.listnetns():
        return
    # Kill anything still running inside, then delete: the veth goes with the namespace.
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError, OSError):
        netns.remove(name)


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while tearing down, so a second Ctrl-C cannot leave half a bed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got:
            os.kill(os.getpid(), got[0])


def sigterm_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so `finally` blocks and context managers tear beds
    down. For the main thread of tools that build beds (demo, benchmarks, test sessions)."""

    owner = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:  # a forked child inherited this: die, run no cleanup
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def cleanup_stale() -> list[str]:
    """Remove beds whose creating process is gone (left by a SIGKILLed run)."""
    removed = []
    for name in netns.listnetns():
        m = NS_RE.match(name)
        if m and not _alive(int(m.group(1))):
            _remove_ns(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
