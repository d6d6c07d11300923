"""`pystackctl` as a user runs it: the real command in the bed's stack namespace, real
kernel clients (curl, Python sockets) in the peer namespace."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.helpers import read_line, wait_for

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000


# ---- helpers ------------------------------------------------------------------------------
def ctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctl.main", *args]


def ctl(bed, *args: str, env: dict[str, str] | None = None, user: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run pystackctl in the stack namespace; returns the finished process."""
    argv = ctl_argv(*args)
    if user is not None:  # "nobody" (65534), without root's groups
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(bed.command("stack", argv), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def one_line_error(r: subprocess.CompletedProcess[str], rc: int, *words: str) -> None:
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pystackctl: "), r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def attach(bed, *args: str) -> subprocess.Popen[str]:
    """`pystackctl attach <stack iface> ARGS` running; returns once it said it is ready.
    Its stderr (the log) goes to a file: `log(proc)` reads it."""
    err = tempfile.TemporaryFile(mode="w+")
    proc = bed.spawn("stack", ctl_argv("attach", bed.stack.ifname, *args), cwd=ROOT,
                     stdout=subprocess.PIPE, stderr=err, text=True)
    proc.errfile = err  # type: ignore[attr-defined]
    line = read_line(proc, timeout=60)
    assert line.startswith("pystack: attached to"), (line, proc.poll(), log(proc))
    return proc


def log(proc: subprocess.Popen[str]) -> str:
    f = proc.errfile  # type: ignore[attr-defined]
    f.seek(0)
    return f.read()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, (proc.returncode, log(proc))
    return out


def curl(bed, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(bed.command("peer", ["curl", "-sS", "--max-time", "20", *args]),
                          capture_output=True, timeout=30)


def peer_connect(bed, port: int, timeout: float = 20) -> socket.socket:
    with bed.enter("peer"):
        return socket.create_connection((bed.stack.ip, port), timeout=timeout)


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>pystack</p>\n")
    (root / "sub" / "index.html").write_text("<p>sub</p>\n")
    (root / "blob.bin").write_bytes(os.urandom(3 * MB))
    (tmp_path / "secret.txt").write_text("must not be served")
    os.chmod(tmp_path, 0o755)
    return root


# ---- attach and the query verbs -------------------------------------------------------------
def test_attach_status_stats_ss_sysctl_then_sigterm_detaches(bed, www):
    proc = attach(bed, "--port", "80,8080", "--app", f"http:{www}", "--sysctl",
                  "net.ipv4.tcp_keepalive_time=3600", "--log-level", "info")
    prog_id = bed.xdp_prog_id("stack")
    assert prog_id

    r = ctl(bed, "status")
    assert r.returncode == 0, r.stderr
    assert f"{bed.stack.ifname}: pystack pid " in r.stdout
    assert f"program id {prog_id}, native mode" in r.stdout
    assert "ports:        80,8080 (app http:" in r.stdout
    assert bed.stack.ip in r.stdout

    c = peer_connect(bed, 80)
    try:
        c.sendall(f"GET / HTTP/1.1\r\nHost: {bed.stack.ip}\r\n\r\n".encode())
        assert b"<p>pystack</p>" in c.recv(4096)
        cport = c.getsockname()[1]
        r = ctl(bed, "ss", "-ti")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split()[:3] == ["State", "Recv-Q", "Send-Q"]
        row = next(i for i, ln in enumerate(lines) if f"{bed.peer.ip}:{cport}" in ln)
        assert lines[row].split()[:4] == ["ESTAB", "0", "0", f"{bed.stack.ip}:80"]
        info = lines[row + 1]
        assert info.startswith("\t ts sack cubic wscale:")
        for field in ("rto:", "rtt:", "mss:1448", "cwnd:", "bytes_acked:", "bytes_received:",
                      "segs_out:", "segs_in:", "rcv_space:", "snd_wnd:"):
            assert re.search(rf"\b{field}", info), (field, info)
        assert re.search(r"\brtt:[\d.]+/[\d.]+ ", info)
        listening = ctl(bed, "ss", "-tl").stdout
        assert re.search(r"^LISTEN\s+0\s+128\s+0\.0\.0\.0:80\s", listening, re.M)
        assert re.search(r"^LISTEN\s+0\s+128\s+0\.0\.0\.0:8080\s", listening, re.M)
        assert "ESTAB" not in listening
    finally:
        c.close()

    r = ctl(bed, "stats", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["TcpPassiveOpens"] >= 1 and stats["TcpInSegs"] >= 3
    assert stats["XdpActionRedirect"] >= stats["TcpInSegs"]
    for name in ("TcpExtSyncookiesSent", "TcpExtListenOverflows", "XdpDropTcpChecksum",
                 "XdpActionPass", "TcpRetransSegs", "TcpExtTCPChallengeACK"):
        assert name in stats
    text = ctl(bed, "stats").stdout.splitlines()
    assert {ln.split()[0] for ln in text} == set(stats)

    r = ctl(bed, "sysctl")
    assert r.returncode == 0
    assert "net.ipv4.tcp_keepalive_time = 3600" in r.stdout.splitlines()
    assert "net.ipv4.tcp_sack = 1" in r.stdout.splitlines()
    r = ctl(bed, "sysctl", "-w", "net.ipv4.tcp_fin_timeout=17")
    assert r.returncode == 0 and r.stdout.strip() == "net.ipv4.tcp_fin_timeout = 17"
    assert ctl(bed, "sysctl", "tcp_fin_timeout").stdout.strip() == (
        "net.ipv4.tcp_fin_timeout = 17")

    out = stop(proc)
    assert f"pystack: detached from {bed.stack.ifname}" in out
    assert bed.xdp_prog_id("stack") == 0
    err = log(proc)
    assert re.search(r"INFO pystack\.apps: http: accepted .* -> 198\.18\.0\.1:80", err), err
    assert "GET / 200" in err
    one_line_error(ctl(bed, "status"), 1, "no pystack is running")
    # The port is the kernel's again: a kernel server in the stack namespace answers on it.
    srv = bed.socket("stack", socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((bed.stack.ip, 80))
    srv.listen()
    c = peer_connect(bed, 80)
    s, _ = srv.accept()
    s.close()
    c.close()
    srv.close()


def test_sigint_also_detaches(bed):
    proc = attach(bed, "--port", "7")
    out = stop(proc, signal.SIGINT)
    assert "detached" in out and bed.xdp_prog_id("stack") == 0


# ---- errors ---------------------------------------------------------------------------------
def test_errors_are_one_line_and_leave_nothing_attached(bed, www):
    iface = bed.stack.ifname
    one_line_error(ctl(bed, "attach", iface, "--port", "0"), 2, "--port")
    one_line_error(ctl(bed, "attach", "nosuch0", "--port", "80"), 2,
                   "no such interface: nosuch0")
    one_line_error(ctl(bed, "attach", iface, "--port", "80", "--app", "gopher"), 2, "--app")
    one_line_error(ctl(bed, "attach", iface, "--port", "80", "--sysctl",
                       "net.ipv4.tcp_sack=9"), 2, "tcp_sack")
    for verb in (["status"], ["stats"], ["ss", "-ti"], ["sysctl"]):
        one_line_error(ctl(bed, *verb), 1, "no pystack is running in this network namespace")
    one_line_error(ctl(bed, "stats", "-I", iface), 1, f"no pystack is running on {iface}")
    one_line_error(ctl(bed, "attach", iface, "--port", "80", user="65534"), 1, "needs root")
    # A missing or broken BPF toolchain: bcc not importable, or the source will not build.
    env = dict(os.environ, PYSTACK_BPF_DIR=str(Path(str(www)) / "no-bpf-sources-here"))
    one_line_error(ctl(bed, "attach", iface, "--port", "80", env=env), 1, "BPF toolchain")
    assert bed.xdp_prog_id("stack") == 0
    stub = Path(str(www)).parent / "nobcc" / "bcc"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named bcc')\n")
    env = dict(os.environ, PYTHONPATH=f"{stub.parent}:{ROOT}")
    one_line_error(ctl(bed, "attach", iface, "--port", "80", env=env), 1,
                   "BPF toolchain missing", "python3-bpfcc")
    assert bed.xdp_prog_id("stack") == 0


def test_port_already_owned_and_errors_against_a_running_stack(bed):
    iface = bed.stack.ifname
    proc = attach(bed, "--port", "7,9", "--app", "discard")
    prog_id = bed.xdp_prog_id("stack")
    one_line_error(ctl(bed, "attach", iface, "--port", "9"), 1,
                   "port 9 already owned by pystack pid", "one pystack per interface")
    one_line_error(ctl(bed, "attach", iface, "--port", "80"), 1, "already has pystack pid")
    assert bed.xdp_prog_id("stack") == prog_id  # the first one is untouched
    one_line_error(ctl(bed, "sysctl", "-w", "net.ipv4.tcp_sack=5"), 1, "tcp_sack")
    one_line_error(ctl(bed, "sysctl", "-w", "net.ipv4.tcp_nonsense=1"), 1, "unknown setting")
    one_line_error(ctl(bed, "sysctl", "-w", "tcp_sack"), 2, "NAME=VALUE")
    # The control socket is for root (and the stack's user) only, like a 0600 socket file.
    one_line_error(ctl(bed, "stats", user="65534"), 1, "permission denied")
    assert ctl(bed, "status").returncode == 0
    stop(proc)


# ---- detach ---------------------------------------------------------------------------------
def test_detach_stops_a_running_stack(bed):
    proc = attach(bed, "--port", "7")
    r = ctl(bed, "detach", bed.stack.ifname)
    assert r.returncode == 0, r.stderr
    # (`ip netns exec` execs the command: its pid is pystackctl's)
    assert r.stdout.startswith(f"{bed.stack.ifname}: stopped pystack pid {proc.pid}")
    proc.wait(timeout=15)
    assert proc.returncode == 0 and bed.xdp_prog_id("stack") == 0


def test_detach_removes_a_netlink_attachment_left_behind(bed, program):
    from pyroute2 import NetNS

    iface = bed.stack.ifname
    r = ctl(bed, "detach", iface)
    assert r.returncode == 0 and "nothing to detach" in r.stdout
    with NetNS(bed.stack.netns) as ns:  # what an older loader (bcc attach_xdp) leaves
        ns.link("set", index=ns.link_lookup(ifname=iface)[0], xdp_fd=program.prog_fd)
    prog_id = bed.xdp_prog_id("stack")
    assert prog_id
    one_line_error(ctl(bed, "attach", iface, "--port", "7"), 1,
                   "already has an XDP program", f"pystackctl detach {iface}")
    r = ctl(bed, "detach", iface)
    assert r.returncode == 0, r.stderr
    assert f"removed XDP program id {prog_id} (xdp_ingress, driver mode)" in r.stdout
    assert bed.xdp_prog_id("stack") == 0


def test_detach_refuses_a_link_held_by_a_live_process(bed):
    from pystack.io._xsk import lib

    prog = lib.ps_xdp_pass_prog()
    assert prog >= 0
    with bed.enter("stack"):
        link = lib.ps_xdp_link_create(prog, socket.if_nametoindex(bed.stack.ifname), 0)
    assert link >= 0
    try:
        one_line_error(ctl(bed, "detach", bed.stack.ifname), 1,
                       "attached through a BPF link held by", f"pid {os.getpid()}")
        assert bed.xdp_prog_id("stack") != 0
    finally:
        os.close(link)
        os.close(prog)


# ---- the http app -----------------------------------------------------------------------------
def test_http_app_with_curl(bed, www):
    proc = attach(bed, "--port", "80", "--app", f"http:{www}")
    base = f"http://{bed.stack.ip}"
    r = curl(bed, f"{base}/blob.bin")
    assert r.returncode == 0 and sha(r.stdout) == sha((www / "blob.bin").read_bytes())
    r = curl(bed, "-I", f"{base}/blob.bin")
    head = r.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {3 * MB}\r\n" in head
    assert "Content-Type: application/octet-stream\r\n" in head
    r = curl(bed, "-o", "/dev/null", "-w", "%{http_code}", f"{base}/nope.txt")
    assert r.stdout == b"404"
    # keep-alive: two requests, one connection
    r = curl(bed, "-w", "%{http_code} %{num_connects}\\n", "-o", "/dev/null", f"{base}/",
             "-o", "/dev/null", f"{base}/sub/")
    assert r.stdout.decode().split("\n")[:2] == ["200 1", "200 0"], r.stdout
    # a path climbing out of DIR is refused, however it is spelled
    for path in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt"):
        r = curl(bed, "--path-as-is", "-w", "\\n%{http_code}", f"{base}{path}")
        assert r.stdout.endswith(b"\n400") and b"must not be served" not in r.stdout, path
    # Connection: close is honoured: pystack closes after the response
    c = peer_connect(bed, 80)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = b""
    while chunk := c.recv(65536):
        got += chunk
    c.close()
    assert got.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in got
    assert got.endswith(b"<p>pystack</p>\n")
    stop(proc)


# ---- the proxy app ----------------------------------------------------------------------------
class Upstream:
    """A kernel TCP server in the stack namespace running `handler(sock)` per connection."""

    def __init__(self, bed, handler) -> None:
        self.srv = bed.socket("stack", socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.port = self.srv.getsockname()[1]
        self.results: list[object] = []
        self.handler = handler
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            s.settimeout(30)
            try:
                self.results.append(self.handler(s))
            except OSError as e:
                self.results.append(e)
            finally:
                s.close()

    def close(self) -> None:
        try:
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        except OSError:
            pass
        self.srv.close()
        self.thread.join(5)


def read_all(s: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := s.recv(1 << 20):
        buf += chunk
    return bytes(buf)


def test_proxy_relays_both_ways_with_half_close(bed):
    down = os.urandom(4 * MB)

    def handler(s: socket.socket) -> object:
        first = s.recv(1)
        if first == b"A":  # client -> upstream, client FIN first, then upstream -> client
            got = first + read_all(s)  # ends at the client's FIN, relayed as SHUT_WR
            s.sendall(down)
            return sha(got)
        # "B": the upstream half-closes first and keeps reading
        s.sendall(down)
        s.shutdown(socket.SHUT_WR)
        return sha(first + read_all(s))

    up = Upstream(bed, handler)
    proc = attach(bed, "--port", "80", "--app", f"proxy:127.0.0.1:{up.port}")
    try:
        data = b"A" + os.urandom(4 * MB)
        c = peer_connect(bed, 80, timeout=30)
        t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
        t.start()
        got = read_all(c)
        t.join()
        c.close()
        assert sha(got) == sha(down)
        wait_for(lambda: len(up.results) == 1, 10, "the upstream's first connection")
        assert up.results[0] == sha(data)

        data = b"B" + os.urandom(3 * MB)
        c = peer_connect(bed, 80, timeout=30)
        c.sendall(data[:1])
        got = read_all(c)  # the upstream's FIN reached us; we can still send
        assert sha(got) == sha(down)
        c.sendall(data[1:])
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
        c.close()
        wait_for(lambda: len(up.results) == 2, 10, "the upstream's second connection")
        assert up.results[1] == sha(data)
    finally:
        up.close()
        stop(proc)


def test_proxy_propagates_resets_and_refusals(bed):
    seen: list[object] = []

    def handler(s: socket.socket) -> object:
        kind = s.recv(1)
        if kind == b"R":  # the upstream resets: the client must see a reset too
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset sent"
        try:  # "C": the client resets; we must see ECONNRESET
            while s.recv(65536):
                pass
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")
        return "done"

    up = Upstream(bed, handler)
    proc = attach(bed, "--port", "80", "--app", f"proxy:127.0.0.1:{up.port}")
    try:
        c = peer_connect(bed, 80)
        c.sendall(b"R")
        with pytest.raises(ConnectionResetError):
            while c.recv(65536):
                pass
        c.close()

        c = peer_connect(bed, 80)
        c.sendall(b"C")
        wait_for(lambda: len(up.results) == 1, 10, "the upstream to get the connection")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        wait_for(lambda: seen, 10, "the upstream to see the client's reset")
        assert seen == ["reset"]
    finally:
        up.close()
    # no upstream at all: pystack accepted, the upstream connect is refused -> reset
    c = peer_connect(bed, 80)
    c.settimeout(10)
    with pytest.raises(ConnectionResetError):
        c.sendall(b"x")
        while c.recv(65536):
            pass
    c.close()
    stop(proc)


def test_proxy_back_pressure_bounds_what_it_buffers(bed):
    """An upstream that does not read: the client is stopped by TCP windows, not by a
    buffer in pystack growing without bound."""
    release = threading.Event()

    def handler(s: socket.socket) -> object:
        release.wait(60)
        return len(read_all(s))

    up = Upstream(bed, handler)
    proc = attach(bed, "--port", "80", "--app", f"proxy:127.0.0.1:{up.port}")
    try:
        c = peer_connect(bed, 80)
        c.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        while sent < 200 * MB:
            _, w, _ = select.select([], [c], [], 2.0)
            if not w:
                break  # nothing drained for 2 s: back-pressure reached the client
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                continue
        assert sent < 200 * MB, "the proxy never pushed back"
        r = ctl(bed, "ss", "-tn")
        row = next(ln for ln in r.stdout.splitlines() if f"{bed.peer.ip}:" in ln)
        recv_q = int(row.split()[1])
        assert recv_q <= 8 * MB  # bounded by pystack's receive buffer
        release.set()
        c.setblocking(True)
        c.shutdown(socket.SHUT_WR)
        wait_for(lambda: up.results, 30, "the upstream to drain everything")
        assert up.results[0] == sent
        c.close()
    finally:
        release.set()
        up.close()
        stop(proc)


def test_echo_and_discard_close_as_the_issue_says(bed):
    proc = attach(bed, "--port", "7,9", "--app", "echo")
    c = peer_connect(bed, 7)
    data = os.urandom(2 * MB)
    t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
    t.start()
    got = read_all(c)  # echo finishes echoing after our FIN, then sends its own
    t.join()
    c.close()
    assert sha(got) == sha(data)
    stop(proc)
    proc = attach(bed, "--port", "9", "--app", "discard")
    c = peer_connect(bed, 9)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    assert c.recv(10) == b""  # discard closes after our FIN, having sent nothing
    c.close()
    stop(proc)
