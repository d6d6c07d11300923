"""``setsockopt``/``getsockopt`` with the ``socket`` module's constants, for the socket-like
object and the transports' ``get_extra_info('socket')``.

Values follow Python's socket module: an int, or bytes (``setsockopt(..., b"reno")``);
``getsockopt(level, name)`` returns an int and ``getsockopt(level, name, buflen)`` the raw
bytes Linux would copy out. ``TCP_INFO`` is ``struct tcp_info`` (:mod:`.tcpinfo`);
``TCP_CONGESTION`` is the algorithm's name (str, or NUL-padded bytes with ``buflen``).
The engine checks values and raises ``OSError`` with Linux's errno (EINVAL, ENOPROTOOPT,
ENOENT for an unknown congestion control).
"""

from __future__ import annotations

import errno
import socket as _socket
import struct
from typing import Any

from pystack.api.tcpinfo import pack_tcp_info
from pystack.tcp.state import OPTION_NAMES

__all__ = ["NAMES", "get_option", "set_option"]

IPPROTO_TCP = _socket.IPPROTO_TCP
SOL_SOCKET = _socket.SOL_SOCKET
TCP_INFO = 11
TCP_CONGESTION = 13
TCP_FASTOPEN = 23
TCP_FASTOPEN_CONNECT = 30
SO_REUSEADDR = _socket.SO_REUSEADDR
SO_REUSEPORT = getattr(_socket, "SO_REUSEPORT", 15)
SO_TYPE = _socket.SO_TYPE
SO_ERROR = _socket.SO_ERROR
SO_ACCEPTCONN = getattr(_socket, "SO_ACCEPTCONN", 30)

# (level, optname) -> the engine's option name, for connect(options=...).
NAMES: dict[tuple[int, int], str] = {v: k for k, v in OPTION_NAMES.items()}
NAMES.setdefault((IPPROTO_TCP, TCP_FASTOPEN), "TCP_FASTOPEN")
NAMES.setdefault((IPPROTO_TCP, TCP_FASTOPEN_CONNECT), "TCP_FASTOPEN_CONNECT")

# Accepted and remembered, with no effect in pystack (there is one owner per port).
_NOOP = {(SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_REUSEPORT)}


def coerce(optname: int, level: int, value: int | bytes | str | bool) -> int | str:
    """The value as the engine takes it: TCP_CONGESTION a name, everything else an int
    (a bytes value is read as a C int, as the kernel reads the user's buffer)."""
    if level == IPPROTO_TCP and optname == TCP_CONGESTION:
        if isinstance(value, bytes):
            return value.split(b"\0", 1)[0].decode()
        return str(value)
    if isinstance(value, bytes):
        if len(value) < 4:
            raise OSError(errno.EINVAL, "option value shorter than an int")
        return int(struct.unpack("<i", value[:4])[0])
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError(f"setsockopt value must be int or bytes, not {type(value).__name__}")


def set_option(target: Any, level: int, optname: int, value: int | str,
               noop: dict[tuple[int, int], int] | None = None) -> None:
    """Apply to a Connection or Listener (or the pre-connect holder)."""
    if (level, optname) in _NOOP:
        if noop is not None:
            noop[(level, optname)] = int(value)
        return
    target.setsockopt(level, optname, value)


def get_option(target: Any, level: int, optname: int, buflen: int | None = None, *,
               noop: dict[tuple[int, int], int] | None = None,
               listening: bool = False) -> int | bytes | str:
    """Read from a Connection, Listener or holder; see the module docstring."""
    if (level, optname) in _NOOP:
        value: int | str = (noop or {}).get((level, optname), 0)
    elif level == SOL_SOCKET and optname == SO_TYPE:
        value = _socket.SOCK_STREAM
    elif level == SOL_SOCKET and optname == SO_ACCEPTCONN:
        value = int(listening)
    elif level == IPPROTO_TCP and optname == TCP_INFO:
        if not hasattr(target, "tcp_info"):
            data = pack_tcp_info({}, int(target.state))
        else:
            data = pack_tcp_info(target.tcp_info(), int(target.state),
                                 target.engine.settings.tcp_reordering)
        return data if buflen is None else data[:buflen]
    else:
        value = target.getsockopt(level, optname)
    if buflen is None:
        return value
    if isinstance(value, str):
        return value.encode().ljust(buflen, b"\0")[:buflen]
    return struct.pack("<i", value)[:buflen]
