"""The XDP ingress program: compile with bcc, attach by bpf_link, steer, count.

Attachment is a BPF link held by this process: if the process dies (even by SIGKILL) the
kernel closes the link and the interface passes traffic to the kernel again (PLATFORM.md).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from pathlib import Path

from pystack.xdp import abi

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
ATTACH_MODES = {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE, "auto": 0}


def bpf_dir() -> Path:
    """Where the C sources live: $PYSTACK_BPF_DIR, else bpf/ at the project root."""
    env = os.environ.get("PYSTACK_BPF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "bpf"


class XdpError(RuntimeError):
    """The XDP program could not be built, loaded or attached."""


def _ip_be(addr: str | int) -> int:
    """An IPv4 address as the u32 the program sees (network order bytes, native int)."""
    packed = socket.inet_aton(addr) if isinstance(addr, str) else struct.pack("!I", addr)
    return int(struct.unpack("=I", packed)[0])


def _port_be(port: int) -> int:
    return int(struct.unpack("=H", struct.pack("!H", port))[0])


class IngressProgram:
    """bpf/xdp_ingress.c, loaded once per process (compiling takes a few seconds)."""

    def __init__(self) -> None:
        try:
            from bcc import BPF  # Debian's python3-bpfcc; not on PyPI
        except ImportError as e:  # pragma: no cover - environment problem
            raise XdpError(
                "bcc is not importable: install Debian's python3-bpfcc and use a venv "
                "made with --system-site-packages (run scripts/setup.sh)"
            ) from e
        src = bpf_dir() / "xdp_ingress.c"
        try:
            self.bpf = BPF(src_file=str(src).encode(), cflags=[f"-I{bpf_dir()}"])
            self.fn = self.bpf.load_func(b"xdp_ingress", BPF.XDP)
        except Exception as e:
            raise XdpError(f"cannot build or load {src}: {e}") from e
        self.xsks = self.bpf[b"xsks"]
        self.owned_ports = self.bpf[b"owned_ports"]
        self.owned_flows = self.bpf[b"owned_flows"]
        self.action_count = self.bpf[b"action_count"]
        self.drop_count = self.bpf[b"drop_count"]
        self._links: dict[int, int] = {}

    @property
    def prog_fd(self) -> int:
        return int(self.fn.fd)

    # ---- attachment ----
    def attach(self, ifname: str, mode: str = "native") -> int:
        """Attach to ifname (in this process's namespace) through a BPF link."""
        from pystack.io._xsk import lib

        if mode not in ATTACH_MODES:
            raise XdpError(f"XDP mode must be native, skb or auto, not {mode!r}")
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise XdpError(f"no such interface: {ifname}") from None
        fd = lib.ps_xdp_link_create(self.prog_fd, ifindex, ATTACH_MODES[mode])
        if fd < 0:
            hint = " (an XDP program is already attached?)" if -fd == 16 else ""
            raise XdpError(f"cannot attach XDP to {ifname}: {os.strerror(-fd)}{hint}")
        self._links[ifindex] = fd
        return ifindex

    def detach(self, ifindex: int | None = None) -> None:
        for idx in list(self._links) if ifindex is None else [ifindex]:
            fd = self._links.pop(idx, None)
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        self.detach()
        self.bpf.cleanup()

    # ---- steering ----
    def set_xsk(self, queue: int, xsk_fd: int) -> None:
        self.xsks[ctypes.c_int(queue)] = ctypes.c_int(xsk_fd)

    def own_port(self, port: int, addr: str | int = 0) -> None:
        key = self.owned_ports.Key(_ip_be(addr), _port_be(port), 0)
        self.owned_ports[key] = ctypes.c_uint32(1)

    def disown_port(self, port: int, addr: str | int = 0) -> None:
        key = self.owned_ports.Key(_ip_be(addr), _port_be(port), 0)
        self.owned_ports.pop(key, None)

    def own_flow(self, local: tuple[str | int, int], remote: tuple[str | int, int]) -> None:
        self.owned_flows[self._flow_key(local, remote)] = ctypes.c_uint32(1)

    def disown_flow(self, local: tuple[str | int, int], remote: tuple[str | int, int]) -> None:
        self.owned_flows.pop(self._flow_key(local, remote), None)

    def _flow_key(self, local: tuple[str | int, int], remote: tuple[str | int, int]) -> object:
        return self.owned_flows.Key(
            _ip_be(remote[0]), _ip_be(local[0]), _port_be(remote[1]), _port_be(local[1])
        )

    # ---- counters (summed over CPUs at read time) ----
    def actions(self) -> dict[str, int]:
        return {name: self._sum(self.action_count, i) for i, name in enumerate(abi.ACTIONS)}

    def drops(self) -> dict[str, int]:
        return {name: self._sum(self.drop_count, i) for i, name in enumerate(abi.DROP_REASONS)}

    @staticmethod
    def _sum(table: object, idx: int) -> int:
        return int(sum(table[ctypes.c_int(idx)]))  # type: ignore[index]


XDP_ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")  # enum xdp_action order


def test_run(prog_fd: int, frame: bytes) -> str:
    """Run the program once on frame in the kernel (BPF_PROG_TEST_RUN): its action name."""
    from pystack.io._xsk import ffi, lib

    act = ffi.new("uint32_t *")
    r = lib.ps_xdp_test_run(prog_fd, frame, len(frame), act, ffi.NULL, ffi.NULL)
    if r < 0:
        raise OSError(-r, f"BPF_PROG_TEST_RUN failed: {os.strerror(-r)}")
    return XDP_ACTIONS[act[0]] if act[0] < len(XDP_ACTIONS) else f"unknown({act[0]})"


def attached_prog_id(ifindex: int) -> int:
    """The id of the XDP program on ifindex (0 if none), in this process's namespace."""
    from pystack.io._xsk import ffi, lib

    pid = ffi.new("uint32_t *")
    if lib.ps_xdp_query_id(ifindex, pid) != 0:
        return 0
    return int(pid[0])
