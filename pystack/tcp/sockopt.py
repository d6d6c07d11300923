"""Socket options (tcp(7), socket(7)) shared by connections and listeners."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from pystack import cc
from pystack.tcp.state import (
    IPPROTO_TCP,
    OPTION_NAMES,
    SO_KEEPALIVE,
    SO_OOBINLINE,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
    TCP_CONGESTION,
    TCP_CORK,
    TCP_DEFER_ACCEPT,
    TCP_FASTOPEN,
    TCP_FASTOPEN_CONNECT,
    TCP_INFO,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_LINGER2,
    TCP_MAXSEG,
    TCP_NODELAY,
    TCP_NOTSENT_LOWAT,
    TCP_QUICKACK,
    TCP_SYNCNT,
    TCP_USER_TIMEOUT,
    TCP_WINDOW_CLAMP,
    TcpState,
)

if TYPE_CHECKING:
    from pystack.tcp.engine import TcpEngine

from pystack.tcp.constants import (
    F_CORK,
    F_KEEPALIVE,
    F_NODELAY,
    F_OOBINLINE,
    F_PINGPONG,
    F_RCVBUF_LOCK,
    F_SNDBUF_LOCK,
    MAX_TCP_KEEPCNT,
    MAX_TCP_KEEPIDLE,
    MAX_TCP_KEEPINTVL,
    MAX_TCP_SYNCNT,
    MAX_TCP_WINDOW,
    SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF,
    TCP_FIN_TIMEOUT_MAX,
    TCP_MIN_MSS,
    TCP_MSS_DEFAULT,
    EventCallback,
    retrans_to_secs,
    secs_to_retrans,
)
from pystack.tcp.tcpinfo import pack_tcp_info  # TCP_INFO (helper I2)


class _Sock:
    """Socket options shared by connections and listeners (children inherit them)."""

    __slots__ = ("engine", "_f", "_opts", "rcvbuf_size", "sndbuf_size", "on_event")

    def __init__(self, engine: TcpEngine) -> None:
        self.engine = engine
        self._f = 0
        self._opts: dict[int, Any] | None = None  # per-socket overrides only
        s = engine.settings
        self.rcvbuf_size: int = s.tcp_rmem[1]
        self.sndbuf_size: int = s.tcp_wmem[1]
        self.on_event: EventCallback | None = None

    # -- option storage ---------------------------------------------------------------
    def _opt(self, name: int, default: Any = None) -> Any:
        o = self._opts
        if o is None:
            return default
        return o.get(name, default)

    def _set_opt(self, name: int, value: Any) -> None:
        if self._opts is None:
            self._opts = {}
        self._opts[name] = value

    def _inherit(self, parent: _Sock) -> None:
        keep = F_NODELAY | F_CORK | F_KEEPALIVE | F_OOBINLINE | F_SNDBUF_LOCK | F_RCVBUF_LOCK
        self._f |= parent._f & keep
        self._opts = dict(parent._opts) if parent._opts else None
        self.rcvbuf_size = parent.rcvbuf_size
        self.sndbuf_size = parent.sndbuf_size

    # -- setsockopt / getsockopt ------------------------------------------------------
    def set_option(self, name: str, value: int | str) -> None:
        """``setsockopt`` by name, e.g. ``set_option("TCP_NODELAY", 1)``."""
        try:
            level, opt = OPTION_NAMES[name]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, f"unknown socket option {name!r}") from None
        self.setsockopt(level, opt, value)

    def get_option(self, name: str) -> int | str:
        """``getsockopt`` by name."""
        try:
            level, opt = OPTION_NAMES[name]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, f"unknown socket option {name!r}") from None
        return self.getsockopt(level, opt)

    def setsockopt(self, level: int, optname: int, value: int | str | bytes) -> None:
        """Linux ``setsockopt`` for the SOL_SOCKET and IPPROTO_TCP options pystack knows.

        Raises OSError(EINVAL) for a bad value, OSError(ENOPROTOOPT) for an unknown option,
        OSError(ENOENT) for an unknown TCP_CONGESTION algorithm.
        """
        if level == IPPROTO_TCP and optname == TCP_CONGESTION:
            name = value.decode() if isinstance(value, bytes) else str(value)
            name = name.rstrip("\0")
            if name not in cc.available():
                raise OSError(errno.ENOENT, f"unknown congestion control {name!r}")
            self._set_opt(TCP_CONGESTION, name)
            self._option_changed(optname)
            return
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise OSError(errno.EINVAL, f"option {optname} needs an integer")
        v = value
        s = self.engine.settings
        if level == SOL_SOCKET:
            if optname == SO_RCVBUF:
                v = min(max(v, 0), s.rmem_max)
                self.rcvbuf_size = max(v * 2, SOCK_MIN_RCVBUF)  # socket(7): doubled
                self._f |= F_RCVBUF_LOCK
            elif optname == SO_SNDBUF:
                v = min(max(v, 0), s.wmem_max)
                self.sndbuf_size = max(v * 2, SOCK_MIN_SNDBUF)
                self._f |= F_SNDBUF_LOCK
            elif optname == SO_KEEPALIVE:
                self._flag(F_KEEPALIVE, v)
            elif optname == SO_OOBINLINE:
                self._flag(F_OOBINLINE, v)
            else:
                raise OSError(errno.ENOPROTOOPT, f"unsupported SOL_SOCKET option {optname}")
            self._option_changed(optname)
            return
        if level != IPPROTO_TCP:
            raise OSError(errno.ENOPROTOOPT, f"unsupported level {level}")
        if optname == TCP_NODELAY:
            self._flag(F_NODELAY, v)
        elif optname == TCP_CORK:
            self._flag(F_CORK, v)
        elif optname == TCP_QUICKACK:
            pass  # acted on by Connection._option_changed
        elif optname == TCP_MAXSEG:
            if v and not TCP_MIN_MSS <= v <= MAX_TCP_WINDOW:
                raise OSError(errno.EINVAL, f"TCP_MAXSEG {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPIDLE:
            if not 1 <= v <= MAX_TCP_KEEPIDLE:
                raise OSError(errno.EINVAL, f"TCP_KEEPIDLE {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPINTVL:
            if not 1 <= v <= MAX_TCP_KEEPINTVL:
                raise OSError(errno.EINVAL, f"TCP_KEEPINTVL {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPCNT:
            if not 1 <= v <= MAX_TCP_KEEPCNT:
                raise OSError(errno.EINVAL, f"TCP_KEEPCNT {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_SYNCNT:
            if not 1 <= v <= MAX_TCP_SYNCNT:
                raise OSError(errno.EINVAL, f"TCP_SYNCNT {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_LINGER2:
            # Linux: negative -> -1 (RST instead of FIN-WAIT-2), too large -> the maximum.
            self._set_opt(optname, -1 if v < 0 else min(v, TCP_FIN_TIMEOUT_MAX))
        elif optname == TCP_DEFER_ACCEPT:
            self._set_opt(optname, secs_to_retrans(max(v, 0)))
        elif optname == TCP_WINDOW_CLAMP:
            if v == 0:
                if getattr(self, "state", TcpState.CLOSED) not in (
                    TcpState.CLOSED,
                    TcpState.LISTEN,
                ):
                    raise OSError(errno.EINVAL, "TCP_WINDOW_CLAMP 0 only before connecting")
                self._set_opt(optname, 0)
            else:
                self._set_opt(optname, max(v, SOCK_MIN_RCVBUF // 2))
        elif optname == TCP_USER_TIMEOUT:
            if v < 0:
                raise OSError(errno.EINVAL, "TCP_USER_TIMEOUT must be >= 0")
            self._set_opt(optname, v)
        elif optname == TCP_NOTSENT_LOWAT:
            self._set_opt(optname, v & 0xFFFFFFFF)  # Linux: any int, kept as a u32
        elif optname == TCP_FASTOPEN:
            # Fast Open: the listener's queue of pending Fast Open requests (tcp(7)); Linux
            # takes it before listen() or on a listener, capped at somaxconn.
            if v < 0 or getattr(self, "state", TcpState.CLOSED) not in (
                TcpState.CLOSED,
                TcpState.LISTEN,
            ):
                raise OSError(errno.EINVAL, "TCP_FASTOPEN needs a length >= 0 before connecting")
            self._set_opt(optname, min(v, s.somaxconn))
        elif optname == TCP_FASTOPEN_CONNECT:
            # Fast Open: 0 or 1, client Fast Open enabled, before connect (Linux).
            if not 0 <= v <= 1:
                raise OSError(errno.EINVAL, f"TCP_FASTOPEN_CONNECT {v} is not 0 or 1")
            if not s.tcp_fastopen & 0x1:
                raise OSError(errno.EOPNOTSUPP, "Fast Open client disabled (tcp_fastopen)")
            if getattr(self, "state", TcpState.CLOSED) != TcpState.CLOSED:
                raise OSError(errno.EINVAL, "TCP_FASTOPEN_CONNECT only before connecting")
            self._set_opt(optname, v)
        else:
            raise OSError(errno.ENOPROTOOPT, f"unsupported TCP option {optname}")
        self._option_changed(optname)

    def getsockopt(self, level: int, optname: int) -> int | str | bytes:
        """Linux ``getsockopt`` counterpart of :meth:`setsockopt`; TCP_INFO gives the
        248 bytes of Linux 6.x's ``struct tcp_info`` (:mod:`pystack.tcp.tcpinfo`)."""
        s = self.engine.settings
        if level == SOL_SOCKET:
            if optname == SO_RCVBUF:
                return self.rcvbuf_size
            if optname == SO_SNDBUF:
                return self.sndbuf_size
            if optname == SO_KEEPALIVE:
                return int(bool(self._f & F_KEEPALIVE))
            if optname == SO_OOBINLINE:
                return int(bool(self._f & F_OOBINLINE))
            raise OSError(errno.ENOPROTOOPT, f"unsupported SOL_SOCKET option {optname}")
        if level != IPPROTO_TCP:
            raise OSError(errno.ENOPROTOOPT, f"unsupported level {level}")
        if optname == TCP_NODELAY:
            return int(bool(self._f & F_NODELAY))
        if optname == TCP_CORK:
            return int(bool(self._f & F_CORK))
        if optname == TCP_QUICKACK:
            return int(not self._f & F_PINGPONG)
        if optname == TCP_MAXSEG:
            return self._maxseg_value()
        if optname == TCP_KEEPIDLE:
            return int(self._opt(optname, s.tcp_keepalive_time))
        if optname == TCP_KEEPINTVL:
            return int(self._opt(optname, s.tcp_keepalive_intvl))
        if optname == TCP_KEEPCNT:
            return int(self._opt(optname, s.tcp_keepalive_probes))
        if optname == TCP_SYNCNT:
            return int(self._opt(optname, s.tcp_syn_retries))
        if optname == TCP_LINGER2:
            v = self._opt(optname, 0)
            return v if v < 0 else (v or s.tcp_fin_timeout)
        if optname == TCP_DEFER_ACCEPT:
            return retrans_to_secs(self._opt(optname, 0))
        if optname == TCP_WINDOW_CLAMP:
            return self._window_clamp_value()
        if optname == TCP_USER_TIMEOUT:
            return int(self._opt(optname, 0))
        if optname == TCP_CONGESTION:
            return str(self._opt(TCP_CONGESTION, s.tcp_congestion_control))
        if optname == TCP_NOTSENT_LOWAT:
            return int(self._opt(optname, 0))  # Linux: 0 = "use net.ipv4.tcp_notsent_lowat"
        if optname in (TCP_FASTOPEN, TCP_FASTOPEN_CONNECT):
            return int(self._opt(optname, 0))  # Fast Open
        if optname == TCP_INFO:
            # Linux tcp_get_info: a listener reports its state and little else.
            info = self.tcp_info() if hasattr(self, "tcp_info") else {}
            state = getattr(self, "state", TcpState.CLOSED)
            return pack_tcp_info(info, int(state), s.tcp_reordering)
        raise OSError(errno.ENOPROTOOPT, f"unsupported TCP option {optname}")

    def _flag(self, bit: int, on: int) -> None:
        if on:
            self._f |= bit
        else:
            self._f &= ~bit

    def _maxseg_value(self) -> int:
        return int(self._opt(TCP_MAXSEG, 0)) or TCP_MSS_DEFAULT

    def _window_clamp_value(self) -> int:
        return int(self._opt(TCP_WINDOW_CLAMP, 0))

    def _option_changed(self, optname: int) -> None:  # noqa: B027 - hook
        """Hook for options that act immediately on a connection."""
