"""`pystackctl demo`: a veth bed, `pystackctl attach` serving HTTP on one side, the
Linux kernel's own clients on the other.

1. Two network namespaces joined by a veth pair (pystack.testbed).
2. `pystackctl attach` in the stack namespace: the http app on port 80 serving a temporary
   directory (an index page and a random 4 MB file), Fast Open on the listener, metrics.
3. From the peer namespace, real kernel clients: curl GETs the file (SHA-256 checked),
   curl makes three requests on one keep-alive connection, a Python client uses Fast Open
   (sendto with MSG_FASTOPEN: the first connection fetches a cookie, the second carries
   its request in the SYN), and ping shows the kernel still owns ICMP on that address.
4. `pystackctl ss -ti` while a connection is open, `pystackctl stats`, one scrape of the
   metrics endpoint (served by the kernel's TCP on the same address: only port 80 is
   pystack's), then SIGTERM: pystack detaches and everything is torn down.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

from pystack.testbed import Testbed, sigterm_as_interrupt

HTTP = 80
METRICS = 9464
SIZE = 4 * 1024 * 1024
READY_TIMEOUT = 60.0


def say(msg: str = "") -> None:
    print(msg, flush=True)


def ctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctl.main", *args]


def run_demo() -> int:
    t0 = time.monotonic()
    sigterm_as_interrupt()
    www = tempfile.mkdtemp(prefix="pystack-demo-")
    try:
        return _demo(www, t0)
    finally:
        shutil.rmtree(www, ignore_errors=True)


def _demo(www: str, t0: float) -> int:
    blob = os.urandom(SIZE)
    with open(os.path.join(www, "blob.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<!DOCTYPE html>\n<title>pystack</title>\n<p>Served by pystack over XDP "
                "and AF_XDP.</p>\n")
    say("pystack demo: two network namespaces joined by a veth pair")
    with Testbed.create() as bed:
        say(f"  stack side {bed.stack.netns} {bed.stack.ifname} {bed.stack.ip}")
        say(f"  peer side  {bed.peer.netns} {bed.peer.ifname} {bed.peer.ip}")
        from pystack.tcp.state import OPTION_NAMES

        fastopen = "TCP_FASTOPEN" in OPTION_NAMES
        metrics = f"{bed.stack.ip}:{METRICS}"
        argv = ["attach", bed.stack.ifname, "--port", str(HTTP), "--app", f"http:{www}",
                "--metrics", metrics, "--sysctl", "net.ipv4.tcp_fastopen=3"]
        if fastopen:
            argv += ["--fastopen", "16"]
        say(f"\n$ pystackctl {' '.join(argv)}")
        say("  (compiling the XDP program with bcc, attaching it, opening AF_XDP)")
        proc = bed.spawn("stack", ctl(*argv), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        ready = _read_line(proc, READY_TIMEOUT)
        if not ready.startswith("pystack: attached"):
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            say(f"  pystack did not start: {(ready or err).strip()}")
            return 1
        say("  " + ready.strip())
        checks = {
            "GET with SHA-256": _get_file(bed, blob),
            "keep-alive": _keep_alive(bed),
        }
        checks["ss -ti"] = _show_ss(bed)
        fo = _fast_open(bed)
        checks["ping"] = _ping(bed)
        stats = _stats(bed)
        checks["metrics scrape"] = _scrape(bed, metrics)
        _report(stats, fo, fastopen)
        say(f"\n$ kill -TERM {proc.pid}   (pystackctl attach)")
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            out = ""
        say("  " + (out.strip() or f"exit status {proc.returncode}"))
        gone = bed.xdp_prog_id("stack") == 0
        checks["clean detach"] = proc.returncode == 0 and gone
        say(f"  XDP program on {bed.stack.ifname}: "
            + ("none; port 80 is the kernel's again" if gone else "STILL ATTACHED"))
    failed = [name for name, ok in checks.items() if not ok]
    say(f"\ntorn down (namespaces, veth, XDP) in {time.monotonic() - t0:.1f}s: "
        + ("demo OK" if not failed else f"demo FAILED ({', '.join(failed)})"))
    return 0 if not failed else 1


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if r else ""


def _curl(bed: Testbed, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(bed.command("peer", ["curl", "-sS", "--max-time", "20", *args]),
                          capture_output=True, timeout=30)


def _get_file(bed: Testbed, blob: bytes) -> bool:
    url = f"http://{bed.stack.ip}/blob.bin"
    say(f"\n$ curl {url} | sha256sum      (kernel TCP client -> pystack)")
    t = time.monotonic()
    r = _curl(bed, url)
    dt = time.monotonic() - t
    same = hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()
    say(f"  curl exit {r.returncode}: {len(r.stdout)} bytes in {dt:.2f}s "
        f"({len(r.stdout) * 8 / dt / 1e6:.0f} Mbit/s), SHA-256 "
        + ("matches the file" if same else "DIFFERS"))
    return r.returncode == 0 and same


def _keep_alive(bed: Testbed) -> bool:
    base = f"http://{bed.stack.ip}"
    urls = [f"{base}/", f"{base}/blob.bin", f"{base}/missing"]
    say(f"\n$ curl {' '.join(urls)}      (one keep-alive connection)")
    args = []
    for u in urls:
        args += ["-o", "/dev/null", u]
    r = _curl(bed, "-w", "%{http_code} %{num_connects} %{size_download}\\n", *args)
    lines = r.stdout.decode().split()
    rows = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    for u, row in zip(urls, rows, strict=False):
        say(f"  {u}: HTTP {row[0]}, {row[2]} bytes, new connections: {row[1]}")
    ok = r.returncode == 0 and [row[:2] for row in rows] == [["200", "1"], ["200", "0"],
                                                                ["404", "0"]]
    say("  three requests, one TCP connection" if ok else "  UNEXPECTED")
    return ok


def _show_ss(bed: Testbed) -> bool:
    with bed.enter("peer"):
        c = socket.create_connection((bed.stack.ip, HTTP), timeout=10)
    try:
        c.sendall(f"GET / HTTP/1.1\r\nHost: {bed.stack.ip}\r\n\r\n".encode())
        c.recv(4096)
        say(f"\n$ pystackctl ss -ti      (a kernel client holds a keep-alive connection "
            f"from port {c.getsockname()[1]})")
        r = bed.run("stack", ctl("ss", "-ti"), check=False)
        for line in r.stdout.rstrip().splitlines():
            say("  " + line.replace("\t", "    "))
        return r.returncode == 0 and f":{c.getsockname()[1]}" in r.stdout
    finally:
        c.close()


def _fast_open(bed: Testbed) -> list[dict[str, Any]]:
    """Two Fast Open connections from the kernel (tcp_fastopen=1 in the peer namespace):
    the first asks for a cookie, the second sends its request in the SYN."""
    bed.run("peer", ["sysctl", "-qw", "net.ipv4.tcp_fastopen=1"])
    say("\n$ python: sendto(GET, MSG_FASTOPEN) twice      (TCP Fast Open, RFC 7413)")
    results = []
    for i in (1, 2):
        before = _netstat(bed, "peer")
        s = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        # Blocking (a non-blocking Fast Open sendto without a cookie says EINPROGRESS),
        # with the kernel's own send/receive timeouts bounding each wait.
        tv = struct.pack("ll", 5, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        try:
            req = f"GET / HTTP/1.1\r\nHost: {bed.stack.ip}\r\nConnection: close\r\n\r\n"
            s.sendto(req.encode(), socket.MSG_FASTOPEN, (bed.stack.ip, HTTP))
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            status = got.split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as e:
            status = f"error: {e}"
        finally:
            s.close()
        after = _netstat(bed, "peer")
        active = after.get("TCPFastOpenActive", 0) - before.get("TCPFastOpenActive", 0)
        say(f"  connection {i}: {status}; kernel client TCPFastOpenActive +{active}"
            + ("  (data went in the SYN)" if active else "  (cookie requested)"
               if i == 1 else ""))
        results.append({"status": status, "active": active})
    return results


def _netstat(bed: Testbed, side: str) -> dict[str, int]:
    lines = bed.run(side, ["cat", "/proc/net/netstat"]).stdout.splitlines()
    rows = [ln.split()[1:] for ln in lines if ln.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)} if rows else {}


def _ping(bed: Testbed) -> bool:
    r = bed.run("peer", ["ping", "-c", "1", "-W", "2", bed.stack.ip], check=False)
    say(f"\n$ ping {bed.stack.ip}: {'reply' if r.returncode == 0 else 'NO REPLY'}      "
        "(ARP and ICMP stay with the kernel on the same address)")
    return r.returncode == 0


def _stats(bed: Testbed) -> dict[str, int]:
    r = bed.run("stack", ctl("stats", "--json"), check=False)
    try:
        return dict(json.loads(r.stdout))
    except ValueError:
        say(f"  pystackctl stats failed: {r.stderr.strip()}")
        return {}


def _scrape(bed: Testbed, metrics: str) -> bool:
    url = f"http://{metrics}/metrics"
    say(f"\n$ curl {url}      (Prometheus; scrape it from the peer namespace)")
    r = _curl(bed, url)
    text = r.stdout.decode(errors="replace")
    names = sorted({m.group(1) for m in re.finditer(r"^(pystack_\w+?)(?:_total)?[{ ]", text,
                                                       re.M)})
    for line in text.splitlines():
        if re.match(r"pystack_(tcp_passive_opens_total|tcp_in_segs_total|tcp_out_segs_total|"
                    r"tcp_fastopen_passive_total|xdp_packets_total\{action=\"redirect\"\})",
                    line):
            say("  " + line)
    say(f"  ... {len(names)} pystack_* metric families")
    return r.returncode == 0 and "pystack_tcp_passive_opens_total" in text


def _report(stats: dict[str, int], fo: list[dict[str, Any]], fastopen: bool) -> None:
    def v(name: str) -> int:
        return int(stats.get(name, 0))

    say("\n$ pystackctl stats      (what pystack counted; kernel MIB names)")
    say(f"  connections: {v('TcpPassiveOpens')} accepted, {v('TcpCurrEstab')} open now, "
        f"{v('TcpEstabResets')} reset; segments in {v('TcpInSegs')}, out {v('TcpOutSegs')}, "
        f"retransmitted {v('TcpRetransSegs')}")
    say(f"  XDP: {v('XdpActionRedirect')} frames to AF_XDP, {v('XdpActionPass')} passed to "
        f"the kernel, {v('XdpActionTx')} sent back, {v('XdpActionDrop')} dropped")
    passive = v("TcpExtTCPFastOpenPassive")
    reqd = v("TcpExtTCPFastOpenCookieReqd")
    if not fastopen:
        say("  Fast Open: this pystack has no server-side Fast Open (no TCP_FASTOPEN)")
    elif passive:
        say(f"  Fast Open: TCPFastOpenPassive={passive} (data accepted from a SYN), "
            f"TCPFastOpenCookieReqd={reqd} (cookies handed out)")
    else:
        say(f"  Fast Open: TCPFastOpenPassive=0 (no data accepted from a SYN), "
            f"TCPFastOpenCookieReqd={reqd}")
