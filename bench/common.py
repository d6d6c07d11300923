"""Shared pieces of the connection benchmarks (crr, rr, memory).

* :data:`TOOL_C` a small C program, compiled at run time, that plays the kernel's side
  at C speed: ``server`` (a single-threaded epoll echo server: echoes every byte, closes
  after the peer's FIN, as netperf's TCP_CRR server does), ``crr`` (THREADS blocking
  clients: connect, 1-byte request, 1-byte response, close; optionally with
  sendto(MSG_FASTOPEN)) and ``rr`` (one connection, 1-byte ping-pong, latency histogram).
* Every role counts only what completes inside an absolute CLOCK_MONOTONIC window
  [FROM, TO): the clock is the same in every namespace, so clients and servers count over
  the same interval. Clients take the window on their command line; servers (the C one
  and the pystack roles, :class:`Counter`) take ``window FROM TO`` and ``report`` lines on
  stdin and answer ``report`` with one JSON line (:class:`Server` drives them).
* :func:`pystack_echo_server` the same echo server on pystack (``python -m bench.common
  echo-server --iface IF --port P [--fastopen QLEN]``): a Host whose app echoes and closes
  on EOF, a dozen lines, so that the stack and not an app is measured; and
  :func:`start_server` to start either kind in the bed's stack namespace.
* Process helpers: wait for a role's "ready" line, collect its last JSON line, stop it.
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pystack.testbed import Testbed

KERNEL_PORT = 6001
PYSTACK_PORT = 6000

TOOL_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(const char *ip, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

/* ---- server: epoll echo; close after the peer's FIN ----
 * stdin commands: "window FROM TO" starts counting connections that end inside
 * [FROM, TO); "report" prints {"conns", "all", "seconds"} for the current window. */
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static int server(const char *ip, int port, int fastopen) {
    struct sockaddr_in sa = addr_of(ip, port);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fastopen > 0 && setsockopt(ls, IPPROTO_TCP, TCP_FASTOPEN, &fastopen, sizeof fastopen)) {
        perror("TCP_FASTOPEN");
        return 1;
    }
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4096)) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evin = {.events = EPOLLIN, .data.fd = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &evin);
    struct sigaction act = {.sa_handler = on_term};
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    printf("ready\n");
    fflush(stdout);
    long done = 0, all = 0;
    double t_from = 0, t_to = 0;
    char buf[4096], cmd[256];
    size_t cmdlen = 0;
    struct epoll_event evs[256];
    while (!stop) {
        int k = epoll_wait(ep, evs, 256, 200);
        for (int j = 0; j < k; j++) {
            int fd = evs[j].data.fd;
            if (fd == 0) {
                ssize_t r = read(0, cmd + cmdlen, sizeof cmd - 1 - cmdlen);
                if (r <= 0) { stop = 1; break; }
                cmdlen += r;
                cmd[cmdlen] = 0;
                char *nl;
                while ((nl = strchr(cmd, '\n')) != NULL) {
                    *nl = 0;
                    if (!strncmp(cmd, "window ", 7)) {
                        sscanf(cmd + 7, "%lf %lf", &t_from, &t_to);
                        done = 0;
                    } else if (!strcmp(cmd, "report")) {
                        printf("{\"conns\": %ld, \"all\": %ld, \"seconds\": %.6f}\n", done, all,
                               t_to - t_from);
                        fflush(stdout);
                    }
                    cmdlen -= nl + 1 - cmd;
                    memmove(cmd, nl + 1, cmdlen + 1);
                }
                continue;
            }
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
                continue;
            }
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    if (send(fd, buf, r, MSG_NOSIGNAL) != r) { close(fd); break; }
                    continue;
                }
                if (r < 0 && errno == EAGAIN) break;
                close(fd); /* EOF (or error): the transaction is over */
                double t = now();
                all++;
                if (t >= t_from && t < t_to) done++;
                break;
            }
        }
    }
    return 0;
}

/* ---- crr: THREADS blocking clients, connect / 1-byte request / response / close ---- */
struct crr_arg {
    struct sockaddr_in sa;
    double t_from, t_to;
    int fastopen;
    long done, fails;
    double lat_sum;
};

static void *crr_thread(void *p) {
    struct crr_arg *a = p;
    struct timeval tv = {.tv_sec = 2};
    char c = 'q';
    for (;;) {
        double t0 = now();
        if (t0 >= a->t_to) break;
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (a->fastopen) {
            ok = sendto(fd, &c, 1, MSG_FASTOPEN, (struct sockaddr *)&a->sa, sizeof a->sa) == 1;
        } else {
            ok = connect(fd, (struct sockaddr *)&a->sa, sizeof a->sa) == 0 &&
                 send(fd, &c, 1, 0) == 1;
        }
        char r;
        ok = ok && recv(fd, &r, 1, 0) == 1 && r == c;
        close(fd);
        double t1 = now();
        if (t0 >= a->t_from && t1 < a->t_to) {
            if (ok) {
                a->done++;
                a->lat_sum += t1 - t0;
            } else {
                a->fails++;
            }
        }
        if (!ok) usleep(10000);
    }
    return NULL;
}

static int crr(const char *ip, int port, int threads, double t_from, double t_to,
               int fastopen) {
    struct crr_arg *a = calloc(threads, sizeof *a);
    pthread_t *th = calloc(threads, sizeof *th);
    for (int i = 0; i < threads; i++) {
        a[i].sa = addr_of(ip, port);
        a[i].t_from = t_from;
        a[i].t_to = t_to;
        a[i].fastopen = fastopen;
        pthread_create(&th[i], NULL, crr_thread, &a[i]);
    }
    long done = 0, fails = 0;
    double lat = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        done += a[i].done;
        fails += a[i].fails;
        lat += a[i].lat_sum;
    }
    printf("{\"conns\": %ld, \"fails\": %ld, \"seconds\": %.6f, \"mean_us\": %.1f}\n", done,
           fails, t_to - t_from, done ? lat / done * 1e6 : 0.0);
    return 0;
}

/* ---- rr: one connection, 1-byte ping-pong; latency histogram in 100 ns steps ---- */
#define BINS 2000000 /* 200 ms */
static double pct(const unsigned *h, long n, double q) {
    long want = (long)(q * n), seen = 0;
    for (long i = 0; i < BINS; i++) {
        seen += h[i];
        if (seen > want) return i / 10.0;
    }
    return BINS / 10.0;
}

static int rr(const char *ip, int port, double t_from, double t_to) {
    struct sockaddr_in sa = addr_of(ip, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
    unsigned *h = calloc(BINS, sizeof *h);
    long n = 0, over = 0;
    double sum = 0, mx = 0;
    char c = 'r', r;
    for (;;) {
        double t0 = now();
        if (t0 >= t_to) break;
        if (send(fd, &c, 1, 0) != 1 || recv(fd, &r, 1, 0) != 1) { perror("rr"); return 1; }
        double dt = now() - t0;
        if (t0 < t_from) continue;
        long b = (long)(dt * 1e7);
        if (b >= BINS) { b = BINS - 1; over++; }
        h[b]++;
        n++;
        sum += dt;
        if (dt > mx) mx = dt;
    }
    close(fd);
    printf("{\"n\": %ld, \"seconds\": %.6f, \"mean_us\": %.2f, \"p50_us\": %.1f, "
           "\"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"over_200ms\": %ld}\n", n, t_to - t_from, n ? sum / n * 1e6 : 0.0,
           pct(h, n, 0.5), pct(h, n, 0.9), pct(h, n, 0.99), pct(h, n, 0.999), mx * 1e6, over);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 5 && !strcmp(argv[1], "server"))
        return server(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc >= 8 && !strcmp(argv[1], "crr"))
        return crr(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atof(argv[6]),
                   atoi(argv[7]));
    if (argc >= 6 && !strcmp(argv[1], "rr"))
        return rr(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: %s server IP PORT FASTOPEN_QLEN\n"
                    "       %s crr IP PORT THREADS FROM TO FASTOPEN(0|1)\n"
                    "       %s rr IP PORT FROM TO\n", argv[0], argv[0], argv[0]);
    return 2;
}
"""


def compile_tool(tmp: Path) -> Path:
    """Build :data:`TOOL_C` into ``tmp``; returns the executable's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the benchmarks' kernel-side tool needs a C compiler (cc)")
    src, exe = tmp / "tcp_tool.c", tmp / "tcp_tool"
    src.write_text(TOOL_C)
    subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
    return exe


def ready(p: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a role's "ready" line (other lines before it are skipped)."""
    assert p.stdout is not None
    while True:
        r, _, _ = select.select([p.stdout], [], [], timeout)
        line = p.stdout.readline() if r else ""
        if not line:
            raise RuntimeError(f"role did not start (rc={p.poll()})")
        if line.startswith("ready"):
            return line


def last_json(out: str, what: str) -> dict[str, object]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no result: {out[-500:]!r}")
    return json.loads(lines[-1])


def finish(p: subprocess.Popen[str], what: str, timeout: float = 30) -> dict[str, object]:
    """SIGTERM a role, wait for it and return the JSON line it printed last."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=timeout)
    return last_json(out, what)


def sysctl(bed: Testbed, side: str, *settings: str) -> None:
    """Write NAME=VALUE sysctls in one side's namespace (per-namespace ones only)."""
    bed.run(side, ["sysctl", "-qw", *settings])


def ratio(a: float, b: float, digits: int = 3) -> float | None:
    return round(a / b, digits) if b else None


class Server:
    """Drives a server role through the window/report protocol."""

    def __init__(self, p: subprocess.Popen[str], what: str) -> None:
        self.p = p
        self.what = what

    def window(self, t_from: float, t_to: float) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(f"window {t_from:.6f} {t_to:.6f}\n")
        self.p.stdin.flush()

    def ask(self, cmd: str, timeout: float = 15) -> dict[str, object]:
        """Send one stdin command; the first JSON line printed after it is the answer (a
        JSON answer with an "error" key raises)."""
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.p.stdout], [], [], max(0.0, end - time.monotonic()))
            line = self.p.stdout.readline() if r else ""
            if r and not line:
                break
            if line.startswith("{"):
                answer = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(f"{self.what}: {cmd}: {answer['error']}")
                return answer
        raise RuntimeError(f"{self.what} gave no answer to {cmd!r} (rc={self.p.poll()})")

    def report(self, timeout: float = 15) -> dict[str, object]:
        return self.ask("report", timeout)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.communicate(timeout=5)


class Counter:
    """The server half of the protocol for Python roles: ``done()`` counts a finished
    connection (in the window or not); a daemon thread answers the stdin commands, adding
    ``extra()`` (run through ``call``, e.g. on a stack's loop thread) to each report."""

    def __init__(self, extra: Callable[[], dict[str, object]] | None = None,
                 call: Callable[[Callable[[], dict[str, object]]], dict[str, object]]
                 | None = None) -> None:
        self.win = (0.0, 0.0)
        self.conns = 0
        self.all = 0
        self._extra = extra
        self._call = call
        threading.Thread(target=self._commands, daemon=True).start()

    def done(self) -> None:
        t = time.monotonic()
        self.all += 1
        w = self.win
        if w[0] <= t < w[1]:
            self.conns += 1

    def _commands(self) -> None:
        for line in sys.stdin:
            cmd = line.split()
            if cmd[:1] == ["window"]:
                self.conns = 0
                self.win = (float(cmd[1]), float(cmd[2]))
            elif cmd == ["report"]:
                r: dict[str, object] = {"conns": self.conns, "all": self.all,
                                        "seconds": self.win[1] - self.win[0]}
                if self._extra is not None:
                    r |= self._call(self._extra) if self._call else self._extra()
                print(json.dumps(r), flush=True)


def pystack_echo_server(iface: str, port: int, fastopen: int = 0,
                        sysctls: Sequence[str] = ()) -> None:
    """Echo on a pystack Host until SIGTERM; with fastopen > 0 the host has
    net.ipv4.tcp_fastopen=3 and the listener TCP_FASTOPEN=fastopen; ``sysctls``
    ("name=value", e.g. net.ipv4.tcp_syncookies=2) go to the host after it. Every
    connection gets TCP_NODELAY, as the C server's."""
    from pystack.host import Host

    with Host(iface, sysctls=(["net.ipv4.tcp_fastopen=3"] if fastopen else []) + list(sysctls)
              ) as h:
        counter = Counter(extra=lambda: {"mib": {k: v for k, v in h.mib().items() if v}},
                          call=h.call)

        def on_event(conn: object, kind: str) -> None:
            if kind == "drained":
                return  # (the C server waits for EPOLLIN only, too)
            c = conn  # a pystack.tcp.connection.Connection
            try:
                while True:
                    data = c.recv(4096)  # type: ignore[attr-defined]
                    if not data:
                        c.close()  # type: ignore[attr-defined]
                        counter.done()
                        return
                    c.send(data)  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError:
                c.abort()  # type: ignore[attr-defined]

        def accept(conn: object) -> None:
            conn.set_option("TCP_NODELAY", 1)  # type: ignore[attr-defined]
            conn.on_event = on_event  # type: ignore[attr-defined]
            on_event(conn, "accept")  # a Fast Open child may hold its request already

        lst = h.serve(port, accept, backlog=4096)
        if fastopen:
            lst.set_option("TCP_FASTOPEN", fastopen)
        # "ready" once SIGTERM stops it cleanly (the loop's signal handlers are in place).
        h.run_forever(on_ready=lambda: print("ready", flush=True))


def timed_main(prog: str, run: Callable[[int, float, float], dict[str, object]],
               warmup: float, duration: float, argv: list[str] | None, runs: int = 1) -> int:
    """The command line of a benchmark whose run(runs, warmup, duration) measures for a
    time after a warm-up (crr, rr): prints its result as JSON."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--warmup", type=float, default=warmup)
    ap.add_argument("--duration", type=float, default=duration)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.runs, args.warmup, args.duration), indent=2))
    return 0


def start_server(bed: Testbed, kind: str, exe: Path, fastopen: int = 0,
                 sysctls: Sequence[str] = ()) -> Server:
    """The echo server of ``kind`` ("kernel": the C tool on KERNEL_PORT, "pystack": on
    PYSTACK_PORT) in the stack namespace, ready. ``sysctls`` are pystack's settings
    ("name=value"; the kernel's are the namespace's sysctls, the caller's)."""
    if kind == "kernel":
        argv = [str(exe), "server", bed.stack.ip, str(KERNEL_PORT), str(fastopen)]
    else:
        argv = [sys.executable, "-m", "bench.common", "echo-server", "--iface",
                bed.stack.ifname, "--port", str(PYSTACK_PORT), "--fastopen", str(fastopen)]
        for s in sysctls:
            argv += ["--sysctl", s]
    p = bed.spawn("stack", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    srv = Server(p, f"{kind} server")
    try:
        ready(p)
    except BaseException:
        srv.stop()
        raise
    return srv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.common")
    ap.add_argument("role", choices=["echo-server"])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--port", type=int, default=PYSTACK_PORT)
    ap.add_argument("--fastopen", type=int, default=0, help="TCP_FASTOPEN queue length")
    ap.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                    help="a pystack setting, e.g. net.ipv4.tcp_syncookies=2 (repeatable)")
    args = ap.parse_args(argv)
    pystack_echo_server(args.iface, args.port, args.fastopen, args.sysctl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
