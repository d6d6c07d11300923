"""The control socket of a running stack: what `pystackctl status|stats|ss|sysctl|detach`
talk to.

One Unix stream socket per attached interface, in the abstract namespace as
``@pystack/<ifname>``: abstract names belong to the network namespace (so `ip netns exec NS
pystackctl ss` finds the stacks of NS, as `ss` itself would) and vanish with the process
(nothing stale is left after a SIGKILL). Abstract sockets have no file permissions, so
the server checks the client's credentials (SO_PEERCRED): root or the stack's own user
only, the equivalent of a 0600 socket file.

The server is served by the stack's loop (Stack.add_reader), so every request runs on the
loop thread, where the engine may be touched, and never blocks it: sockets are
non-blocking and a response too large for the socket buffer is written as it drains.

Protocol: the client sends one JSON object and a newline, ``{"verb": "stats"}``; the server
answers with one JSON object, ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": "one line"}``, and closes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pystack.wire.segment import ip_to_str

if TYPE_CHECKING:
    from pystack.host import Host

log = logging.getLogger("pystack.control")

MAX_REQUEST = 65536
PROTOCOL = 1

# /proc/net/snmp "Tcp:" names; every other engine counter is a TcpExt one (/proc/net/netstat).
TCP_MIB = frozenset({
    "RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens",
    "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs", "InErrs",
    "OutRsts", "InCsumErrors",
})


def control_address(ifname: str) -> str:
    """The abstract socket address of the stack attached to ifname (leading NUL)."""
    return f"\0pystack/{ifname}"


class ControlError(Exception):
    """A request the stack refused; the message is one line."""


class ControlServer:
    """Serve the control socket of `host` from its loop. `close()` when detaching."""

    def __init__(self, host: Host, *, app: str = "", ports: list[int] | None = None,
                 metrics: str | None = None) -> None:
        self.host = host
        self.ifname = host.dp.ifname
        self.app = app
        self.ports = list(ports or [])
        self.metrics = metrics
        self.started_wall = time.time()
        self.address = control_address(self.ifname)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(self.address)
        except OSError as e:
            self.sock.close()
            if e.errno == errno.EADDRINUSE:
                raise ControlError(f"another pystack already runs on {self.ifname}") from None
            raise
        self.sock.listen(16)
        self._clients: dict[int, _Client] = {}
        self.verbs: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": self.status, "stats": self.stats, "ss": self.ss,
            "sysctl": self.sysctl, "stop": self.stop,
        }
        host.stack.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        stack = self.host.stack
        for fd, client in list(self._clients.items()):
            stack.remove_reader(fd)
            stack.remove_writer(fd)
            client.sock.close()
        self._clients.clear()
        stack.remove_reader(self.sock.fileno())
        self.sock.close()

    # ---- connections ----
    def _accept(self) -> None:
        while True:
            try:
                s, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("control socket accept failed: %s", e)
                return
            s.setblocking(False)
            pid, uid, _gid = struct.unpack("3i", s.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            c = _Client(s, pid)
            c.denied = uid not in (0, os.geteuid())
            self._clients[s.fileno()] = c
            self.host.stack.add_reader(s.fileno(), lambda c=c: self._readable(c))

    def _readable(self, c: _Client) -> None:
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            c.inbuf += data
        if b"\n" not in c.inbuf and data and len(c.inbuf) <= MAX_REQUEST:
            return
        self.host.stack.remove_reader(c.sock.fileno())
        if c.denied:  # answered after reading the request: closing unread data resets
            self._reply(c, {"ok": False, "error": "permission denied: the control socket is "
                            "for root and the stack's user"})
        elif len(c.inbuf) > MAX_REQUEST:
            self._reply(c, {"ok": False, "error": "request too large"})
        elif not c.inbuf.strip():
            self._drop(c)
        else:
            self._reply(c, self.handle(bytes(c.inbuf)))

    def _reply(self, c: _Client, response: dict[str, Any]) -> None:
        c.out = memoryview(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        self._writable(c)

    def _writable(self, c: _Client) -> None:
        stack = self.host.stack
        while c.out:
            try:
                n = c.sock.send(c.out)
            except BlockingIOError:
                if not c.writing:
                    c.writing = True
                    stack.add_writer(c.sock.fileno(), lambda c=c: self._writable(c))
                return
            except OSError:
                break
            c.out = c.out[n:]
        self._drop(c)

    def _drop(self, c: _Client) -> None:
        fd = c.sock.fileno()
        if fd < 0:
            return
        stack = self.host.stack
        stack.remove_reader(fd)
        if c.writing:
            stack.remove_writer(fd)
        self._clients.pop(fd, None)
        c.sock.close()

    # ---- requests ----
    def handle(self, raw: bytes) -> dict[str, Any]:
        """Run one request (on the loop thread); never raises."""
        try:
            req = json.loads(raw.decode())
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError):
            return {"ok": False, "error": "malformed request (expected one JSON object)"}
        verb = req.get("verb")
        fn = self.verbs.get(verb) if isinstance(verb, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown verb {verb!r}"}
        try:
            return {"ok": True, "result": fn(req)}
        except ControlError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must not take the stack down; say what it was
            log.exception("control request %r failed", verb)
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}

    def status(self, req: dict[str, Any]) -> dict[str, Any]:
        from pystack.xdp.program import attached_prog_id

        h = self.host
        dp = h.dp
        eng = h.engine
        return {
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "iface": self.ifname,
            "ifindex": dp.ifindex,
            "prog_id": attached_prog_id(dp.ifindex) if dp.ifindex else 0,
            "mode": dp.mode,
            "queues": dp.queues,
            "attachment": "bpf_link",
            "addresses": [socket.inet_ntoa(ip.to_bytes(4, "big")) for ip in dp.local_ips],
            "ports": sorted({lst.port for lst in eng.listeners.values()}),
            "app": self.app,
            "uptime": time.monotonic() - h.stack.started,
            "started": self.started_wall,
            "metrics": self.metrics,
            "connections": len(eng.connections),
            "states": eng.state_counts(),
        }

    def stats(self, req: dict[str, Any]) -> dict[str, int]:
        """Every counter under nstat's names (Tcp*, TcpExt*), then the XDP program's
        (Xdp*), the data path's and the AF_XDP socket's."""
        h = self.host
        prog = h.dp.program
        out: dict[str, int] = {}
        if hasattr(h, "mib"):  # engine MIB + the XDP program's Syncookies* (Host.mib)
            mib = h.mib()
        else:
            mib = dict(h.engine.mib)
            for name, v in prog.syncookie_counters().items():
                mib[name] = mib.get(name, 0) + v
        for name in sorted(mib, key=lambda n: (n not in TCP_MIB, n)):
            out[("Tcp" if name in TCP_MIB else "TcpExt") + name] = int(mib[name])
        for action, v in prog.actions().items():
            out["XdpAction" + _camel(action)] = v
        for reason, v in prog.drops().items():
            out["XdpDrop" + _camel(reason)] = v
        st = h.dp.stats
        out.update({
            "PystackRxFrames": st.rx_frames, "PystackRxMalformed": st.rx_malformed,
            "PystackRxUnverified": st.rx_unverified, "PystackTxFrames": st.tx_frames,
            "PystackTxNoNeighbour": st.tx_no_neighbour, "PystackTxRingFull": st.tx_ring_full,
        })
        if h.dp.xsks:  # summed over the rx queues' sockets
            xs = [x.stats() for x in h.dp.xsks]
            out.update({
                "XskRxDropped": sum(x.rx_dropped for x in xs),
                "XskRxRingFull": sum(x.rx_ring_full for x in xs),
                "XskFillRingEmpty": sum(x.fill_ring_empty for x in xs),
                "XskTxRingEmpty": sum(x.tx_ring_empty for x in xs),
            })
        return out

    def ss(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        """Listeners and connections with what `ss -ti` shows for each."""
        eng = self.host.engine
        rows: list[dict[str, Any]] = []
        for lst in eng.listeners.values():
            rows.append({"state": "LISTEN", "recv_q": lst.pending, "send_q": lst.backlog,
                         "local": [ip_to_str(lst.ip), lst.port], "peer": ["0.0.0.0", 0]})
        for conn in list(eng.connections.values()):
            t = conn.four_tuple
            info = conn.tcp_info()
            rows.append({
                "state": info["state"],
                "recv_q": conn.readable,
                "send_q": conn.outq,
                "local": [ip_to_str(t.local_ip), t.local_port],
                "peer": [ip_to_str(t.remote_ip), t.remote_port],
                "info": {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()},
            })
        return rows

    def sysctl(self, req: dict[str, Any]) -> list[list[str]]:
        """Read settings (all, or the names given), or with "write" set one first."""
        s = self.host.settings
        write = req.get("write")
        names = req.get("names") or []
        try:
            if write:
                name, sep, value = str(write).partition("=")
                if not sep or not name.strip():
                    raise ControlError(f"sysctl -w {write!r}: expected NAME=VALUE")
                if hasattr(self.host, "sysctl"):  # also pushes SYN-cookie settings to XDP
                    self.host.sysctl(name.strip(), value.strip())
                else:
                    s.set(name.strip(), value.strip())
                names = [name.strip()]
            if names:
                return [[s.full_name(n), s.format(n)] for n in names]
        except ValueError as e:
            raise ControlError(str(e)) from None
        return [[full, s.format(full)] for full, _ in s.items()]

    def stop(self, req: dict[str, Any]) -> dict[str, Any]:
        """Detach: the loop ends after this turn; `pystackctl attach` then cleans up."""
        self.host.stop()
        return {"pid": os.getpid(), "iface": self.ifname}


class _Client:
    __slots__ = ("sock", "pid", "inbuf", "out", "writing", "denied")

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.inbuf = bytearray()
        self.out = memoryview(b"")
        self.writing = False
        self.denied = False


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))




def request(ifname: str, verb: str, timeout: float = 10.0, **args: Any) -> Any:
    """Send one request to the stack on ifname (in this network namespace) and return its
    result. ConnectionRefusedError / FileNotFoundError when no stack runs there;
    ControlError when it refused the request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(control_address(ifname))
        s.sendall(json.dumps({"verb": verb, **args}).encode() + b"\n")
        chunks = []
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
    try:
        resp = json.loads(b"".join(chunks).decode())
    except ValueError:
        raise ControlError(f"the stack on {ifname} sent a malformed answer") from None
    if not resp.get("ok"):
        raise ControlError(str(resp.get("error", "request failed")))
    return resp.get("result")


def running_stacks() -> list[str]:
    """Interfaces of this network namespace with a pystack serving its control socket."""
    found = []
    for _idx, name in socket.if_nameindex():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
                s.connect(control_address(name))
        except OSError:
            continue
        found.append(name)
    return found
