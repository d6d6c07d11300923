"""Segments per second delivered to Python and echoed back, pystack vs the kernel.

Same veth bed, same generator, one run. A peer-side AF_XDP generator sends 64-byte frames
as fast as it can for DURATION seconds:
  pystack/batch  TCP frames to an owned port -> XDP -> AF_XDP -> Python gets the batch,
                 swaps addresses in C, transmits the batch back.
  pystack/parse  the same, but every frame becomes a TcpSegment and the reply is built from
                 it (the per-segment cost the TCP engine adds on top): the data path's C
                 batch parse and build (pystack.io.batch), and its pure-Python reference
                 (--python: parse_frame / build_frame per frame).
  kernel         UDP frames to a kernel socket -> a Python recvfrom/sendto echo loop.
Reported: echoes per second for each, and the ratios pystack/kernel.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from pystack.testbed import Testbed
from pystack.wire.segment import ip_to_int

PORT = 7777
UDP_PORT = 7778


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


# ---- roles, each run as its own process inside one namespace ----
def role_gen(args: argparse.Namespace) -> None:
    from pystack.io.xsk import XskSocket

    tmpl = bytes.fromhex(args.template)
    with XskSocket(args.iface, frames=8192, ring_size=2048, batch=64) as x:
        print("ready", flush=True)
        sent = 0
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            descs, k = x.alloc(64)
            if k == 0:
                x.complete()
                continue
            x.fill(descs, k, tmpl)
            q = x.transmit(descs, k, checksum=False)
            if q < k:
                x.release(descs + q, k - q)
            sent += q
        print(json.dumps({"sent": sent}), flush=True)


def role_xsk_echo(args: argparse.Namespace) -> None:
    from pystack.iface.datapath import Datapath

    with Datapath(args.iface, c_batch=not args.python) as dp:
        dp.own_port(PORT)
        xsk = dp.xsk
        assert xsk is not None
        print("ready", flush=True)

        def turn() -> int | None:
            if not xsk.wait(1.0):
                return None
            if args.parse:
                segs = dp.receive()
                for s in segs:
                    s.src_ip, s.dst_ip = s.dst_ip, s.src_ip
                    s.src_port, s.dst_port = s.dst_port, s.src_port
                return dp.send(segs)
            n = xsk.recv()
            xsk.reflect(xsk.rx_descs, n)
            t = xsk.transmit(xsk.rx_descs, n, checksum=False)
            if t < n:
                xsk.release(xsk.rx_descs + t, n - t)
            return t

        _report(_timed(args.duration, turn))


def role_udp_echo(args: argparse.Namespace) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", UDP_PORT))
    s.settimeout(1.0)
    print("ready", flush=True)
    recvfrom, sendto = s.recvfrom, s.sendto

    def turn() -> int | None:
        try:
            data, addr = recvfrom(2048)
        except TimeoutError:
            return None
        sendto(data, addr)
        return 1

    _report(_timed(args.duration, turn))


def _timed(duration: float, turn: Callable[[], int | None]) -> tuple[int, float]:
    """Call turn() (echoes done, or None after a second of silence) from the first traffic
    for `duration` seconds, or until traffic stops: (echoes, seconds measured)."""
    echoed = 0
    start: float | None = None
    end = float("inf")
    while time.monotonic() < end:
        n = turn()
        if n is None:
            if start is not None:
                break
            continue
        if start is None:
            start = time.monotonic()
            end = start + duration
        echoed += n
    return echoed, time.monotonic() - (start or time.monotonic())


def _report(result: tuple[int, float]) -> None:
    print(json.dumps({"echoed": result[0], "seconds": result[1]}), flush=True)


# ---- orchestration ----
def _tcp_template(bed: Testbed) -> bytes:
    from pystack.wire.frame import build_frame
    from pystack.wire.segment import ACK, RST, TcpSegment

    seg = TcpSegment(ip_to_int(bed.peer.ip), ip_to_int(bed.stack.ip), 40000, PORT, 1, 1,
                     RST | ACK, 0,
                     payload=b"p" * 10)
    out = build_frame(seg, _mac(bed.peer.mac), _mac(bed.stack.mac))
    assert isinstance(out, bytes)
    return out


def _udp_template(bed: Testbed) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pkt = (Ether(src=bed.peer.mac, dst=bed.stack.mac) / IP(src=bed.peer.ip, dst=bed.stack.ip)
           / UDP(sport=9, dport=UDP_PORT) / (b"p" * 12))
    return bytes(pkt)


def _last_json(p: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = p.communicate(timeout=120)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"role failed (rc={p.returncode}): {out!r}")
    return json.loads(lines[-1])


def _one(bed: Testbed, echo_args: list[str], template: bytes, duration: float) -> float:
    me = [sys.executable, "-m", "bench.echo_pps"]
    echo = bed.spawn("stack", me + echo_args + ["--duration", str(duration),
                                                 "--iface", bed.stack.ifname],
                     stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None and echo.stdout.readline().startswith("ready")
    gen = bed.spawn("peer", me + ["gen", "--iface", bed.peer.ifname, "--duration",
                                   str(duration + 1.5), "--template", template.hex()],
                    stdout=subprocess.PIPE, text=True)
    r = _last_json(echo)
    _last_json(gen)
    return r["echoed"] / max(r["seconds"], 1e-9)


def run(duration: float = 5.0) -> dict[str, object]:
    with Testbed.create() as bed:
        tcp, udp = _tcp_template(bed), _udp_template(bed)
        batch = _one(bed, ["xsk-echo"], tcp, duration)
        parse = _one(bed, ["xsk-echo", "--parse"], tcp, duration)
        parse_py = _one(bed, ["xsk-echo", "--parse", "--python"], tcp, duration)
        kernel = _one(bed, ["udp-echo"], udp, duration)
    return {
        "name": "echo_pps",
        "conditions": f"veth pair in namespaces, 64-byte frames, AF_XDP copy mode, "
                      f"{duration:.0f}s each, peer-side AF_XDP generator at full rate",
        "pystack_batch_pps": round(batch),
        "pystack_parse_pps": round(parse),
        "pystack_parse_python_pps": round(parse_py),
        "kernel_python_udp_echo_pps": round(kernel),
        "ratio_batch": round(batch / kernel, 2),
        "ratio_parse": round(parse / kernel, 2),
        "ratio_parse_python": round(parse_py / kernel, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.echo_pps")
    ap.add_argument("role", nargs="?", choices=["gen", "xsk-echo", "udp-echo"])
    ap.add_argument("--iface")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--template", default="")
    ap.add_argument("--parse", action="store_true")
    ap.add_argument("--python", action="store_true", help="the pure-Python parse/build path")
    args = ap.parse_args(argv)
    if args.role is None:
        print(json.dumps(run(args.duration), indent=2))
        return 0
    {"gen": role_gen, "xsk-echo": role_xsk_echo, "udp-echo": role_udp_echo}[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
