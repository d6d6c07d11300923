"""Stack-wide settings under the kernel's sysctl names and meanings (tcp(7), ip-sysctl).

``Settings`` holds one value per sysctl; connections share one instance and keep only
their own per-socket overrides.  Values are parsed the way the kernel's proc handlers
parse writes to ``/proc/sys``: decimal integers (``0x`` hex also accepted, as the kernel's
base-0 parser does), whitespace-separated vectors for ``tcp_rmem``, ``tcp_wmem`` and
``tcp_mem``, and strings for ``tcp_congestion_control`` and ``tcp_fastopen_key``.

>>> s = Settings()
>>> s.set("net.ipv4.tcp_sack", "0"); s.tcp_sack
0
>>> s.set("tcp_rmem", "4096 87380 6291456"); s.tcp_rmem
(4096, 87380, 6291456)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = ["Settings", "SETTINGS_SPEC"]


class _Spec(NamedTuple):
    prefix: str  # "net.ipv4", "net.core", or "pystack" (no Linux equivalent)
    kind: str  # "int", "vec", "str", "key"
    default: Any
    lo: int = 0
    hi: int = 0x7FFFFFFF
    count: int = 1  # number of integers for "vec"


_I = "net.ipv4"
_C = "net.core"
_P = "pystack"
# The XDP program's owned_flows table (bpf/xdp_ingress.c): every connection the engine
# holds, in any state, is one entry of it.
FLOW_TABLE_SIZE = 65536
_INT_MAX = 0x7FFFFFFF
_LONG_MAX = 0x7FFFFFFFFFFFFFFF


def _tcp_mem_default() -> tuple[int, int, int]:
    """Linux ``tcp_init_mem``: limit = 1/16 of memory in pages (at least 128), then
    [limit / 4 * 3, limit, limit / 4 * 3 * 2]. Sized from this machine's physical memory."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4096
    except (ValueError, OSError):
        total = 1 << 20  # 4 GiB
    limit = max(total // 16, 128)
    low = limit // 4 * 3
    return (low, limit, low * 2)


# name -> spec. Defaults are Linux 6.x's (tcp(7); Documentation/networking/ip-sysctl.rst).
SETTINGS_SPEC: dict[str, _Spec] = {
    "tcp_rmem": _Spec(_I, "vec", (4096, 131072, 6291456), 1, _INT_MAX, 3),
    "tcp_wmem": _Spec(_I, "vec", (4096, 16384, 4194304), 1, _INT_MAX, 3),
    "tcp_sack": _Spec(_I, "int", 1, 0, 1),
    "tcp_dsack": _Spec(_I, "int", 1, 0, 1),
    "tcp_timestamps": _Spec(_I, "int", 1, 0, 2),
    "tcp_window_scaling": _Spec(_I, "int", 1, 0, 1),
    "tcp_syn_retries": _Spec(_I, "int", 6, 1, 127),
    "tcp_synack_retries": _Spec(_I, "int", 5, 0, 255),
    "tcp_retries1": _Spec(_I, "int", 3, 0, 255),
    "tcp_retries2": _Spec(_I, "int", 15, 0, 255),
    "tcp_orphan_retries": _Spec(_I, "int", 0, 0, 255),
    "tcp_keepalive_time": _Spec(_I, "int", 7200, 1, 32767 * 1000),
    "tcp_keepalive_intvl": _Spec(_I, "int", 75, 1, 32767),
    "tcp_keepalive_probes": _Spec(_I, "int", 9, 1, 127),
    "tcp_fin_timeout": _Spec(_I, "int", 60, 0, _INT_MAX),
    "tcp_max_syn_backlog": _Spec(_I, "int", 1024, 1, _INT_MAX),
    "tcp_rfc1337": _Spec(_I, "int", 0, 0, 1),
    "tcp_abort_on_overflow": _Spec(_I, "int", 0, 0, 1),
    "tcp_adv_win_scale": _Spec(_I, "int", 1, -31, 31),
    "tcp_app_win": _Spec(_I, "int", 31, 0, 31),
    "tcp_moderate_rcvbuf": _Spec(_I, "int", 1, 0, 1),
    # [low, pressure, high] in 4 KiB pages; no ordering is enforced, as on Linux.
    "tcp_mem": _Spec(_I, "vec", _tcp_mem_default(), 0, _LONG_MAX, 3),
    "tcp_congestion_control": _Spec(_I, "str", "cubic"),
    "tcp_ecn": _Spec(_I, "int", 2, 0, 2),
    "tcp_ecn_fallback": _Spec(_I, "int", 1, 0, 1),
    "tcp_syncookies": _Spec(_I, "int", 1, 0, 2),
    "tcp_fastopen": _Spec(_I, "int", 0x1, 0, 0x7FF),
    "tcp_fastopen_key": _Spec(_I, "key", ""),
    # Linux >= 5.14 ships the Fast Open blackhole detector disabled (0).
    "tcp_fastopen_blackhole_timeout_sec": _Spec(_I, "int", 0, 0, _INT_MAX),
    "tcp_max_orphans": _Spec(_I, "int", 65536, 0, _INT_MAX),
    "tcp_max_tw_buckets": _Spec(_I, "int", 262144, 0, _INT_MAX),
    "tcp_tw_reuse": _Spec(_I, "int", 2, 0, 2),
    "tcp_stdurg": _Spec(_I, "int", 0, 0, 1),
    "tcp_base_mss": _Spec(_I, "int", 1024, 1, _INT_MAX),
    "tcp_min_snd_mss": _Spec(_I, "int", 48, 48, 65535),
    "tcp_mtu_probing": _Spec(_I, "int", 0, 0, 2),
    "tcp_mtu_probe_floor": _Spec(_I, "int", 48, 48, 65535),
    "tcp_slow_start_after_idle": _Spec(_I, "int", 1, 0, 1),
    "tcp_reordering": _Spec(_I, "int", 3, 1, _INT_MAX),
    "tcp_max_reordering": _Spec(_I, "int", 300, 1, _INT_MAX),
    "tcp_frto": _Spec(_I, "int", 2, 0, 2),
    "tcp_challenge_ack_limit": _Spec(_I, "int", 1000, 0, _INT_MAX),
    "tcp_invalid_ratelimit": _Spec(_I, "int", 500, 0, _INT_MAX),
    "tcp_autocorking": _Spec(_I, "int", 1, 0, 1),
    "tcp_no_metrics_save": _Spec(_I, "int", 0, 0, 1),
    # Linux >= 5.6 (ip-sysctl.rst): 1 = the metrics cache neither saves nor reads ssthresh.
    "tcp_no_ssthresh_metrics_save": _Spec(_I, "int", 1, 0, 1),
    "tcp_retrans_collapse": _Spec(_I, "int", 1, 0, 1),
    "tcp_workaround_signed_windows": _Spec(_I, "int", 0, 0, 1),
    "tcp_notsent_lowat": _Spec(_I, "int", 0xFFFFFFFF, 0, 0xFFFFFFFF),
    "tcp_early_retrans": _Spec(_I, "int", 3, 0, 4),
    # pystack shares its address with the kernel: its default sits above the kernel's own
    # default range (32768-60999) so the two never pick the same ephemeral port.
    "ip_local_port_range": _Spec(_I, "vec", (61000, 65535), 1, 65535, 2),
    "rmem_max": _Spec(_C, "int", 212992, 2304, _INT_MAX),
    "wmem_max": _Spec(_C, "int", 212992, 4608, _INT_MAX),
    "somaxconn": _Spec(_C, "int", 4096, 0, _INT_MAX),
    # pystack's own: connections the engine holds at most, every state counted (Linux has
    # no such cap; memory and file descriptors bound it). Past it new passive opens are
    # dropped and active opens fail (EAGAIN), counted; bounded by the XDP flow table.
    "max_connections": _Spec(_P, "int", FLOW_TABLE_SIZE, 1, FLOW_TABLE_SIZE),
    # pystack's own: 1 = with tcp_syncookies=1, the XDP program answers the SYNs of plain
    # listeners itself and keeps the request for the control plane, which retransmits the
    # SYN-ACK (pystack/tcp/xdpsyn.py); 0 = every SYN reaches the control plane.
    "xdp_synack": _Spec(_P, "int", 0, 0, 1),
}



def _available_cc() -> str:
    from pystack import cc  # late: cc's modules are not needed to parse settings

    return " ".join(cc.available())


# Read-only sysctls, computed when read (setting one is an error, as EPERM on Linux).
READ_ONLY: dict[str, Callable[[], str]] = {
    "tcp_available_congestion_control": _available_cc,
}


def _short(name: str) -> str:
    """Map a dotted or slash sysctl name to the short key of SETTINGS_SPEC."""
    key = name.strip().replace("/", ".").lstrip(".")
    if key.startswith("proc.sys."):
        key = key[len("proc.sys.") :]
    for prefix in ("net.ipv4.", "net.core.", "pystack."):
        if key.startswith(prefix):
            short = key[len(prefix) :]
            if short in READ_ONLY and prefix == "net.ipv4.":
                return short
            spec = SETTINGS_SPEC.get(short)
            if spec is None or spec.prefix + "." != prefix:
                raise ValueError(f"unknown setting {name!r}")
            return short
    if key not in SETTINGS_SPEC and key not in READ_ONLY:
        raise ValueError(f"unknown setting {name!r}")
    return key


def _parse_int(full: str, text: str, lo: int, hi: int) -> int:
    t = text.strip()
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", t):
            v = int(t, 16)
        elif re.fullmatch(r"[+-]?[0-9]+", t):
            v = int(t, 10)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"{full}: invalid value {text!r} (expected an integer)") from None
    if not lo <= v <= hi:
        raise ValueError(f"{full}: value {v} out of range {lo}..{hi}")
    return v


def _validate(short: str, value: object) -> Any:
    """Parse/validate ``value`` (a string as written to /proc, or a Python value)."""
    spec = SETTINGS_SPEC[short]
    full = f"{spec.prefix}.{short}"
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{full}: invalid value {value!r} (expected an integer)")
        if isinstance(value, int):
            if not spec.lo <= value <= spec.hi:
                raise ValueError(f"{full}: value {value} out of range {spec.lo}..{spec.hi}")
            return value
        return _parse_int(full, value, spec.lo, spec.hi)
    if spec.kind == "vec":
        if isinstance(value, str):
            parts: list[object] = list(value.split())
        elif isinstance(value, tuple | list):
            parts = list(value)
        else:
            raise ValueError(f"{full}: invalid value {value!r} (expected {spec.count} integers)")
        if len(parts) != spec.count:
            raise ValueError(f"{full}: expected {spec.count} integers, got {len(parts)}")
        nums = tuple(_validate_vec_item(full, p, spec.lo, spec.hi) for p in parts)
        if short in ("tcp_rmem", "tcp_wmem") and not nums[0] <= nums[1] <= nums[2]:
            raise ValueError(f"{full}: values must satisfy min <= default <= max, got {nums}")
        if short == "ip_local_port_range" and nums[0] > nums[1]:
            raise ValueError(f"{full}: low port {nums[0]} above high port {nums[1]}")
        return nums
    if spec.kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{full}: invalid value {value!r} (expected an algorithm name)")
        name = value.strip()
        from pystack import cc

        if name not in cc.available():
            raise ValueError(f"{full}: unknown congestion control {name!r}")
        return name
    # "key": Fast Open primary key [,backup key], each four hex words "%x-%x-%x-%x" as
    # Linux's proc_tcp_fastopen_key reads them; kept as Linux prints them ("%08x-...").
    # "" means no key set: a random one is used.
    if not isinstance(value, str):
        raise ValueError(f"{full}: invalid value {value!r} (expected a key string)")
    t = value.strip()
    if not t:
        return ""
    from pystack.tcp.fastopen import format_keys, parse_keys

    try:
        return format_keys(parse_keys(t))
    except ValueError as e:
        raise ValueError(f"{full}: {e}") from None


def _validate_vec_item(full: str, item: object, lo: int, hi: int) -> int:
    if isinstance(item, bool):
        raise ValueError(f"{full}: invalid value {item!r} (expected an integer)")
    if isinstance(item, int):
        if not lo <= item <= hi:
            raise ValueError(f"{full}: value {item} out of range {lo}..{hi}")
        return item
    if isinstance(item, str):
        return _parse_int(full, item, lo, hi)
    raise ValueError(f"{full}: invalid value {item!r} (expected an integer)")


class Settings:
    """The sysctl table. Attribute access by short name: ``settings.tcp_sack``."""

    # version: bumped by every change, so a user of the table (the host's XDP mirror of
    # the SYN-cookie settings) sees a change without comparing every value.
    __slots__ = (*SETTINGS_SPEC, "version")

    def __init__(self, **overrides: object) -> None:
        object.__setattr__(self, "version", 0)
        for name, spec in SETTINGS_SPEC.items():
            object.__setattr__(self, name, spec.default)
        for name, value in overrides.items():
            self.set(name, value)

    def __setattr__(self, name: str, value: object) -> None:
        if name not in SETTINGS_SPEC:
            raise AttributeError(f"unknown setting {name!r}")
        object.__setattr__(self, name, _validate(name, value))
        object.__setattr__(self, "version", self.version + 1)

    def set(self, name: str, value: object) -> None:
        """Set a sysctl by full (``net.ipv4.tcp_sack``) or short (``tcp_sack``) name.

        Raises ValueError with a one-line message for an unknown name or a bad value.
        """
        short = _short(name)
        if short in READ_ONLY:
            raise ValueError(f"setting {name!r} is read-only")
        object.__setattr__(self, short, _validate(short, value))
        object.__setattr__(self, "version", self.version + 1)

    def get(self, name: str) -> Any:
        """The current value of a sysctl (full or short name)."""
        short = _short(name)
        if short in READ_ONLY:
            return READ_ONLY[short]()
        return getattr(self, short)

    def format(self, name: str) -> str:
        """The value as ``/proc/sys`` prints it (vectors tab-separated like the kernel)."""
        v = self.get(name)
        if isinstance(v, tuple):
            return "\t".join(str(x) for x in v)
        return str(v)

    @staticmethod
    def full_name(name: str) -> str:
        """``tcp_sack`` -> ``net.ipv4.tcp_sack``."""
        short = _short(name)
        if short in READ_ONLY:
            return f"net.ipv4.{short}"
        return f"{SETTINGS_SPEC[short].prefix}.{short}"

    def items(self) -> Iterator[tuple[str, Any]]:
        """(full name, value) for every setting, in table order."""
        for short, spec in SETTINGS_SPEC.items():
            yield f"{spec.prefix}.{short}", getattr(self, short)
        for short, read in READ_ONLY.items():
            yield f"net.ipv4.{short}", read()

    def copy(self) -> Settings:
        new = Settings.__new__(Settings)
        object.__setattr__(new, "version", self.version)
        for name in SETTINGS_SPEC:
            object.__setattr__(new, name, getattr(self, name))
        return new

    def __repr__(self) -> str:
        changed = [
            f"{n}={getattr(self, n)!r}"
            for n, s in SETTINGS_SPEC.items()
            if getattr(self, n) != s.default
        ]
        return f"Settings({', '.join(changed)})"
