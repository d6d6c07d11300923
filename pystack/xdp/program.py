"""The XDP ingress program: compile with bcc, attach by bpf_link, steer, count.

Attachment is a BPF link held by this process: if the process dies (even by SIGKILL) the
kernel closes the link and the interface passes traffic to the kernel again (PLATFORM.md).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pystack.wire.segment import ip_to_int
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


_FLOW_KEY = abi.FLOW_KEY
_ONE = struct.pack("=I", 1)
_HINT_KEY = struct.Struct("=I")


def _flow_key(local: tuple[str | int, int], remote: tuple[str | int, int]) -> bytes:
    """struct flow_key's bytes for a connection's (ip, port) ends."""
    return _FLOW_KEY.pack(ip_to_int(remote[0]), ip_to_int(local[0]), remote[1], local[1])


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
        self._flows_fd = self.owned_flows.map_fd
        self._hint_fd = self.bpf[b"port_hint"].map_fd
        self._hinted: set[int] = set()  # ports whose hint is set (it never goes back to 0)
        from bcc.libbcc import lib as bcclib

        self._update = bcclib.bpf_update_elem
        self._lookup_batch = bcclib.bpf_lookup_batch
        self._delete = bcclib.bpf_delete_elem
        self.action_count = self.bpf[b"action_count"]
        self.drop_count = self.bpf[b"drop_count"]
        self.syncookie_cfg = self.bpf[b"syncookie_cfg"]
        self.syncookie_keys = self.bpf[b"syncookie_keys"]
        self.syncookie_pressure = self.bpf[b"syncookie_pressure"]
        self.syncookie_recent = self.bpf[b"syncookie_recent"]
        self.syncookie_count = self.bpf[b"syncookie_count"]
        self.synack_listen = self.bpf[b"synack_listen"]
        self._req_fd = self.bpf[b"synack_req"].map_fd
        # synack_requests' buffers, made once (the whole map: BPF_MAP_LOOKUP_BATCH fills them)
        self._req_bufs = (ctypes.create_string_buffer(abi.SYNACK_REQ_MAX * _FLOW_KEY.size),
                          ctypes.create_string_buffer(abi.SYNACK_REQ_MAX * abi.SYNACK_REQ.size))
        self._links: dict[int, int] = {}
        self.reset_syncookies()

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
        self._hint(port)
        key = self.owned_ports.Key(_ip_be(addr), _port_be(port), 0)
        self.owned_ports[key] = ctypes.c_uint32(1)

    def _hint(self, port: int) -> None:
        """Mark a local port as possibly pystack's (bpf/xdp_ingress.c port_hint): frames to
        other ports go to the kernel after one array read."""
        if port not in self._hinted:
            self._map_update(self._hint_fd, _HINT_KEY.pack(port), b"\x01", "port_hint")
            self._hinted.add(port)

    def _map_update(self, fd: int, key: bytes, value: bytes, name: str) -> None:
        if self._update(fd, key, value, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{name} update: {os.strerror(err)}")

    def disown_port(self, port: int, addr: str | int = 0) -> None:
        """Give the port back to the kernel, forgetting its SYN-cookie pressure and history."""
        key = self.owned_ports.Key(_ip_be(addr), _port_be(port), 0)
        self.owned_ports.pop(key, None)
        self.syncookie_pressure.pop(self.syncookie_pressure.Key(key.addr, key.port, 0), None)
        self.syncookie_recent.pop(self.syncookie_recent.Key(key.addr, key.port, 0), None)
        self.synack_listen.pop(self.synack_listen.Key(key.addr, key.port, 0), None)

    # Once or twice per connection: straight to the map (one bpf() each) with the key's
    # bytes, instead of bcc's table objects (ctypes structs, and a lookup before a delete).
    def own_flow(self, local: tuple[str | int, int], remote: tuple[str | int, int]) -> None:
        self._hint(local[1])  # an active open's ephemeral port is new to the hint
        self._map_update(self._flows_fd, _flow_key(local, remote), _ONE, "owned_flows")

    def disown_flow(self, local: tuple[str | int, int], remote: tuple[str | int, int]) -> None:
        self._delete(self._flows_fd, _flow_key(local, remote))  # ENOENT: was not owned

    # ---- SYN cookies (net.ipv4.tcp_syncookies; bpf/pystack_xdp.h) ----
    # Linux's defaults: tcp_syncookies=1; timestamps, SACK and window scaling on; ECN
    # accepted when a SYN asks for it (tcp_ecn=2).
    SYNCOOKIE_DEFAULTS: dict[str, int | bool] = {
        "mode": 1, "mss": 1460, "window": 65535, "wscale": 7, "ttl": 64, "timestamps": True,
        "sack": True, "window_scaling": True, "ecn": True, "ts_offset": 0,
    }

    def reset_syncookies(self) -> None:
        """Defaults everywhere: SYNCOOKIE_DEFAULTS, a fresh random key (no previous one),
        no listener under pressure, no memory of cookies sent."""
        self.configure_syncookies(**self.SYNCOOKIE_DEFAULTS)  # type: ignore[arg-type]
        self.set_cookie_key(os.urandom(16), rotate=False)
        self.syncookie_pressure.clear()
        self.syncookie_recent.clear()
        self.synack_listen.clear()
        self.bpf[b"synack_req"].clear()

    def set_syncookies(self, mode: int) -> None:
        """net.ipv4.tcp_syncookies: 0 never, 1 when a listener's pressure flag is up,
        2 always."""
        self.configure_syncookies(mode=mode)

    def syncookies(self) -> int:
        """The current net.ipv4.tcp_syncookies mode."""
        return int(self.syncookie_cfg[ctypes.c_int(0)].mode)

    def configure_syncookies(
        self, *, mode: int | None = None, mss: int | None = None, window: int | None = None,
        wscale: int | None = None, ttl: int | None = None, timestamps: bool | None = None,
        sack: bool | None = None, window_scaling: bool | None = None, ecn: bool | None = None,
        ts_offset: int | None = None,
    ) -> None:
        """Change what cookie SYN-ACKs say (arguments left None keep their value): our MSS,
        the window field, our window-scale shift, the IPv4 TTL, which options may be
        offered (tcp_timestamps, tcp_sack, tcp_window_scaling, tcp_ecn) and the offset of
        the timestamp clock (TSval = CLOCK_MONOTONIC ms + ts_offset)."""
        if mode is not None and mode not in (0, 1, 2):
            raise ValueError(f"tcp_syncookies is 0, 1 or 2, not {mode!r}")
        if mss is not None and not 0 < mss < 65536:
            raise ValueError(f"MSS out of range: {mss}")
        if window is not None and not 0 <= window < 65536:
            raise ValueError(f"window out of range: {window}")
        if wscale is not None and not 0 <= wscale <= 14:
            raise ValueError(f"window scale out of range (0..14): {wscale}")
        if ttl is not None and not 0 < ttl < 256:
            raise ValueError(f"TTL out of range: {ttl}")
        key = ctypes.c_int(0)
        cfg = self.syncookie_cfg[key]
        if mode is not None:
            cfg.mode = mode
        if mss is not None:
            cfg.mss = mss
        if window is not None:
            cfg.window = window
        if wscale is not None:
            cfg.wscale = wscale
        if ttl is not None:
            cfg.ttl = ttl
        if ts_offset is not None:
            cfg.ts_offset = ts_offset & 0xFFFFFFFF
        for on, bit in ((timestamps, abi.SC_CFG_TIMESTAMPS), (sack, abi.SC_CFG_SACK),
                        (window_scaling, abi.SC_CFG_WSCALE), (ecn, abi.SC_CFG_ECN)):
            if on is not None:
                cfg.flags = (cfg.flags | bit) if on else (cfg.flags & ~bit)
        self.syncookie_cfg[key] = cfg

    def set_listener_pressure(self, port: int, addr: str | int = 0, on: bool = True) -> None:
        """Raise (on) or lower the listener's "SYN backlog overflowing" flag, keyed like
        own_port(). In mode 1 SYNs to it are answered with cookies while it is up."""
        self._set_listener_flag(self.syncookie_pressure, port, addr, on)

    @staticmethod
    def _set_listener_flag(table: Any, port: int, addr: str | int, on: bool) -> None:
        """A per-listener flag map (keyed like owned_ports): 1 when on, no entry when off."""
        key = table.Key(_ip_be(addr), _port_be(port), 0)
        if on:
            table[key] = ctypes.c_uint32(1)
        else:
            table.pop(key, None)

    # ---- SYN-ACKs from XDP with the request kept (pystack.xdp_synack; pystack_xdp.h) ----
    def set_synack_listener(self, port: int, addr: str | int = 0, on: bool = True) -> None:
        """Let XDP answer (on) the SYNs to this listener, keyed like own_port(), keeping
        each request in synack_req; or stop (the control plane gets its SYNs again)."""
        self._set_listener_flag(self.synack_listen, port, addr, on)

    def synack_requests(self) -> list[tuple[bytes, bytes]]:
        """Every request in synack_req as (struct flow_key, struct synack_req) bytes, read
        in batches (BPF_MAP_LOOKUP_BATCH: a few bpf() calls, whatever the count)."""
        n = abi.SYNACK_REQ_MAX
        ks, vs = _FLOW_KEY.size, abi.SYNACK_REQ.size
        keys, vals = self._req_bufs
        tok_in, tok_out, cnt = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
        total = 0
        while total < n:
            cnt.value = n - total
            res = self._lookup_batch(
                self._req_fd, ctypes.byref(tok_in) if total else None, ctypes.byref(tok_out),
                ctypes.byref(keys, ks * total), ctypes.byref(vals, vs * total),
                ctypes.byref(cnt))
            err = ctypes.get_errno()
            total += cnt.value
            if res != 0:
                if err == errno.ENOENT:
                    break  # the end of the map
                raise OSError(err, f"synack_req lookup batch: {os.strerror(err)}")
            if cnt.value == 0:
                break
            tok_in.value = tok_out.value
        kb, vb = ctypes.string_at(keys, total * ks), ctypes.string_at(vals, total * vs)
        return [(kb[i * ks:(i + 1) * ks], vb[i * vs:(i + 1) * vs]) for i in range(total)]

    def drop_synack_request(self, key: bytes) -> None:
        """Take one request (struct flow_key bytes) out of synack_req; gone already is fine."""
        self._delete(self._req_fd, key)

    def set_cookie_key(self, key: bytes, *, rotate: bool = True) -> None:
        """Install a 16-byte cookie key as the primary. With rotate, the old primary
        becomes the previous key (still accepted on check: a cookie outlives one rotation,
        not two); without it the previous key is forgotten."""
        if len(key) != 16:
            raise ValueError("the SYN-cookie key is 16 bytes")
        keys = self.syncookie_keys
        prev = keys.Leaf()
        if rotate:
            prev = keys[ctypes.c_int(0)]
        # Previous first: a check running in between still accepts every live cookie.
        keys[ctypes.c_int(1)] = prev
        k0, k1 = struct.unpack("<QQ", key)
        keys[ctypes.c_int(0)] = keys.Leaf(k0, k1, 1, 0)

    def rotate_cookie_key(self) -> bytes:
        """A fresh random primary key; the current one becomes the previous. Returns it."""
        key = os.urandom(16)
        self.set_cookie_key(key)
        return key

    def syncookie_counters(self) -> dict[str, int]:
        """SyncookiesSent, SyncookiesRecv, SyncookiesFailed (Linux's TcpExt names)."""
        return {name: self._sum(self.syncookie_count, i)
                for i, name in enumerate(abi.SYNCOOKIE_COUNTERS)}

    # ---- counters (summed over CPUs at read time) ----
    def actions(self) -> dict[str, int]:
        return {name: self._sum(self.action_count, i) for i, name in enumerate(abi.ACTIONS)}

    def drops(self) -> dict[str, int]:
        return {name: self._sum(self.drop_count, i) for i, name in enumerate(abi.DROP_REASONS)}

    @staticmethod
    def _sum(table: object, idx: int) -> int:
        return int(sum(table[ctypes.c_int(idx)]))  # type: ignore[index]


XDP_ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")  # enum xdp_action order


def _action_name(act: int) -> str:
    return XDP_ACTIONS[act] if act < len(XDP_ACTIONS) else f"unknown({act})"


@dataclass(frozen=True, slots=True)
class XdpRunResult:
    """One BPF_PROG_TEST_RUN: the action, the frame as the program left it (an XDP_TX
    reply, a redirected frame) and the pystack_meta it wrote in front (None if none)."""

    action: str
    frame: bytes
    meta_flags: int | None = None
    syncookie: int = 0


def test_run_frame(prog_fd: int, frame: bytes, max_len: int = 4096) -> XdpRunResult:
    """Run the program once on frame; return its action, output frame and metadata."""
    from pystack.io._xsk import ffi, lib

    act = ffi.new("uint32_t *")
    out = ffi.new("uint8_t[]", max_len)
    out_len = ffi.new("uint32_t *", max_len)
    meta_len = ffi.new("uint32_t *")
    r = lib.ps_xdp_test_run(prog_fd, frame, len(frame), act, out, out_len, meta_len)
    if r < 0:
        raise OSError(-r, f"BPF_PROG_TEST_RUN failed: {os.strerror(-r)}")
    data = bytes(ffi.buffer(out, out_len[0]))
    m = int(meta_len[0])
    flags, cookie = None, 0
    if m >= abi.META_SIZE:
        f, magic, c = struct.unpack_from("=HHI", data, m - abi.META_SIZE)
        if magic == abi.META_MAGIC:
            flags, cookie = f, c
    return XdpRunResult(_action_name(act[0]), data[m:], flags, cookie)


def test_run(prog_fd: int, frame: bytes) -> str:
    """Run the program once on frame in the kernel (BPF_PROG_TEST_RUN): its action name."""
    return test_run_frame(prog_fd, frame).action


def attached_prog_id(ifindex: int) -> int:
    """The id of the XDP program on ifindex (0 if none), in this process's namespace."""
    from pystack.io._xsk import ffi, lib

    pid = ffi.new("uint32_t *")
    if lib.ps_xdp_query_id(ifindex, pid) != 0:
        return 0
    return int(pid[0])
