"""Embedded asyncio API echo: pystack.api vs stdlib asyncio on kernel sockets.

Same veth bed, same load generator, one run. The server is the same asyncio code in both
cases, only the module providing ``start_server`` differs:

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

  pystack  ``pystack.api.start_server`` on the stack side's interface (XDP + AF_XDP, the
           engine driven inside the asyncio loop), port 7000.
  kernel   ``asyncio.start_server`` on kernel sockets in the same namespace, port 7001
           (pystack not attached).
The same pair also runs with a Protocol (``create_server``; ``data_received`` writes back)
to show what the streams layer costs on each side, and pystack's own event-hook echo app
(``Host`` loop + ``pystack.apps.Echo``, no asyncio at all) shows what the asyncio layer
costs over the bare engine.

Load: a C client in the peer namespace (compiled at run time) keeps CONNS connections
busy, each sending a SIZE-byte message and waiting for its echo before the next
(closed loop), for DURATION seconds after a warm-up. Reported: echoes per second and
the ratio pystack/kernel (issue 7's target: >= 1.0 for the streams variant).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pystack.testbed import Testbed

PYSTACK_PORT = 7000
KERNEL_PORT = 7001
CONNS = 10
SIZE = 1024

CLIENT_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s IP PORT CONNS SIZE WARMUP DURATION\n", argv[0]);
        return 2;
    }
    const char *ip = argv[1];
    int port = atoi(argv[2]), n = atoi(argv[3]), size = atoi(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    int ep = epoll_create1(0);
    int *fd = calloc(n, sizeof(int)), *got = calloc(n, sizeof(int));
    char *msg = malloc(size), *buf = malloc(65536);
    memset(msg, 'e', size);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd[i], (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
        if (send(fd[i], msg, size, 0) != size) { perror("send"); return 1; }
    }
    double t0 = now(), start = t0 + warmup, end = start + duration;
    long counted = 0;
    struct epoll_event evs[64];
    for (;;) {
        double t = now();
        if (t >= end) break;
        int k = epoll_wait(ep, evs, 64, 1000);
        if (k < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        if (k == 0) { fprintf(stderr, "no echo for 1 s\n"); return 1; }
        t = now();
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32;
            ssize_t r = recv(fd[i], buf, 65536, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "connection %d closed (%zd)\n", i, r);
                return 1;
            }
            got[i] += r;
            while (got[i] >= size) {
                got[i] -= size;
                if (t >= start) counted++;
                if (send(fd[i], msg, size, 0) != size) { perror("send"); return 1; }
            }
        }
    }
    printf("{\"echoes\": %ld, \"seconds\": %.6f}\n", counted, duration);
    for (int i = 0; i < n; i++) close(fd[i]);
    return 0;
}
"""


# ---- servers, each run as its own process in the stack namespace ----
async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the load generator resets its connections when it stops
    writer.close()


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def serve_native(args: argparse.Namespace) -> None:
    from pystack.apps import Echo
    from pystack.host import Host

    with Host(args.iface) as host:
        host.serve(PYSTACK_PORT, Echo)
        host.run_forever(on_ready=lambda: print("ready", flush=True))  # until SIGTERM


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (2, 15):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if args.role == "pystack":
        from pystack import api

        stack = api.Stack(args.iface)
        stack.attach()
        if args.api == "streams":
            server = await api.start_server(echo, None, PYSTACK_PORT, stack=stack)
        else:
            server = await api.create_server(EchoProtocol, None, PYSTACK_PORT, stack=stack)
    else:
        stack = None
        if args.api == "streams":
            server = await asyncio.start_server(echo, None, KERNEL_PORT)
        else:
            server = await loop.create_server(EchoProtocol, None, KERNEL_PORT)
    print("ready", flush=True)
    await stop
    server.close()
    if stack is not None:
        stack.close()


# ---- orchestration ----
def _compile(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("echo_asyncio needs a C compiler (cc) for its load generator")
    src, exe = tmp / "echo_client.c", tmp / "echo_client"
    src.write_text(CLIENT_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def _one(bed: Testbed, exe: Path, role: str, api_kind: str, warmup: float,
         duration: float) -> float:
    me = [sys.executable, "-m", "bench.echo_asyncio", role, "--iface", bed.stack.ifname,
          "--api", api_kind]
    server = bed.spawn("stack", me, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"{role} server did not start: {line!r} rc={server.poll()}")
    port = KERNEL_PORT if role == "kernel" else PYSTACK_PORT
    try:
        out = bed.run("peer", [str(exe), bed.stack.ip, str(port), str(CONNS), str(SIZE),
                               str(warmup), str(duration)], timeout=warmup + duration + 60)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return float(r["echoes"]) / float(r["seconds"])


def run(duration: float = 5.0, warmup: float = 1.0) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d, Testbed.create() as bed:
        exe = _compile(Path(d))
        res = {(role, kind): _one(bed, exe, role, kind, warmup, duration)
               for kind in ("streams", "protocol") for role in ("pystack", "kernel")}
        native = _one(bed, exe, "native", "protocol", warmup, duration)
    p_s, k_s = res[("pystack", "streams")], res[("kernel", "streams")]
    p_p, k_p = res[("pystack", "protocol")], res[("kernel", "protocol")]
    return {
        "name": "echo_asyncio",
        "conditions": f"veth pair in namespaces, {CONNS} connections x {SIZE}-byte messages, "
                      f"closed loop (C client in the peer namespace), {duration:.0f}s after "
                      f"{warmup:.0f}s warm-up; same asyncio echo code on pystack.api "
                      f"(AF_XDP copy mode, engine in the asyncio loop) and on kernel sockets",
        "pystack_streams_echoes_per_s": round(p_s),
        "kernel_asyncio_streams_echoes_per_s": round(k_s),
        "ratio_streams": round(p_s / k_s, 3),
        "pystack_protocol_echoes_per_s": round(p_p),
        "kernel_asyncio_protocol_echoes_per_s": round(k_p),
        "ratio_protocol": round(p_p / k_p, 3),
        "pystack_native_echo_app_echoes_per_s": round(native),
        "asyncio_streams_over_native": round(p_s / native, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.echo_asyncio")
    ap.add_argument("role", nargs="?", choices=["pystack", "kernel", "native"])
    ap.add_argument("--iface")
    ap.add_argument("--api", choices=["streams", "protocol"], default="streams")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args(argv)
    if args.role is None:
        print(json.dumps(run(args.duration, args.warmup), indent=2))
        return 0
    if args.role == "native":
        serve_native(args)
        return 0
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
