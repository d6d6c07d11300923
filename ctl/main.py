"""`pystackctl`: run pystack on an interface, look into a running one, and the demo.

  attach IFACE --port P[,P..] --app echo|discard|http:DIR|proxy:HOST:PORT
         [--metrics HOST:PORT] [--sysctl NAME=VALUE ...] [--mode native|skb]
         [--fastopen QLEN] [--log-level LEVEL]
  status | stats [--json] | ss [-t] [-i] [-l] [-a] | sysctl [-w NAME=VALUE] [NAME ...]
         (the running stacks of this network namespace, over their control sockets;
          -I IFACE picks one)
  detach IFACE [--force]
  demo

Errors are one line on stderr and a non-zero exit (2 for bad arguments, 1 otherwise);
a failed attach leaves nothing attached."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from ctl import format as fmt

log = logging.getLogger("pystackctl")


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class Failure(Exception):
    """The command could not do its job: printed as one line, exit status 1."""


def parse_ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise UsageError(f"--port: {part!r} is not a port number (1-65535)")
        ports.append(int(part))
    return ports


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# ---- attach ------------------------------------------------------------------------------
def check_app(spec: str) -> None:
    """Validate an --app spec before anything is attached (proxy is built later: it needs
    the stack's loop)."""
    kind, _, arg = spec.partition(":")
    if spec in ("echo", "discard"):
        return
    if kind == "http" and arg:
        if not os.path.isdir(arg):
            raise UsageError(f"--app http:{arg}: no such directory")
        return
    if kind == "proxy" and arg:
        from pystack.apps.proxy import parse_upstream

        try:
            parse_upstream(arg)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return
    raise UsageError(f"--app {spec}: expected echo, discard, http:DIR or proxy:HOST:PORT")


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[Any]:
    """bcc and clang print to fd 2 directly: keep their output out of the one-line error
    (and out of a successful start), but available to show it with -v."""
    with tempfile.TemporaryFile(mode="w+") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield f
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_program(verbose: bool) -> Any:
    from pystack.xdp.program import IngressProgram, XdpError

    with _stderr_to_file() as captured:
        try:
            return IngressProgram()
        except XdpError as e:
            captured.seek(0)
            detail = [ln for ln in captured.read().splitlines() if "error" in ln.lower()]
            if verbose and detail:
                print("\n".join(detail), file=sys.stderr)
            msg = _one_line(e)
            if "not importable" in msg:
                raise Failure(f"BPF toolchain missing: {msg}") from None
            first = f" ({detail[0].strip()})" if detail else ""
            raise Failure(f"BPF toolchain cannot build the XDP program{first}: kernel "
                          "headers and clang via bcc are needed (run scripts/setup.sh)") \
                from None


def cmd_attach(args: argparse.Namespace) -> int:
    from pystack.host import parse_sysctls

    ports = list(dict.fromkeys(p for spec in args.port for p in parse_ports(spec)))
    check_app(args.app)
    try:
        settings = parse_sysctls(args.sysctl)
    except ValueError as e:
        raise UsageError(_one_line(e)) from None
    if args.fastopen is not None and args.fastopen < 0:
        raise UsageError("--fastopen: the queue length is 0 or more")
    if args.metrics:
        from pystack.metrics import parse_hostport

        try:
            parse_hostport(args.metrics)
        except ValueError as e:
            raise UsageError(f"--metrics: {_one_line(e)}") from None
    if os.geteuid() != 0:
        raise Failure("attach needs root (CAP_BPF and CAP_NET_ADMIN)")
    try:
        socket.if_nametoindex(args.iface)
    except OSError:
        raise UsageError(f"no such interface: {args.iface}") from None
    _refuse_if_running(args.iface, ports)
    program = load_program(args.verbose > 0)
    try:
        return _run_attached(args, ports, settings, program)
    finally:
        program.close()


def _refuse_if_running(ifname: str, ports: list[int]) -> None:
    from pystack.control import ControlError, request

    try:
        st = request(ifname, "status", timeout=5)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except (OSError, ControlError):
        raise Failure(f"a pystack already runs on {ifname} (its control socket does not "
                      "answer)") from None
    owned = sorted(set(ports) & set(st.get("ports", [])))
    what = f"port {','.join(map(str, owned))} already owned by" if owned else "already has"
    raise Failure(f"{ifname}: {what} pystack pid {st['pid']} (ports "
                  f"{','.join(map(str, st.get('ports', [])))}); one pystack per interface")


def _run_attached(args: argparse.Namespace, ports: list[int], settings: Any,
                  program: Any) -> int:
    from pystack.apps import app_factory
    from pystack.control import ControlError, ControlServer
    from pystack.host import Host, HostError
    from pystack.io.xsk import XskError
    from pystack.xdp.program import XdpError

    try:
        host = Host(args.iface, mode=args.mode, settings=settings, metrics=args.metrics,
                    program=program, queues=args.queues)
    except XdpError as e:
        msg = _one_line(e)
        if "busy" in msg.lower() or "already attached" in msg:
            msg = (f"{args.iface} already has an XDP program; if it is a leftover, "
                   f"`pystackctl detach {args.iface}` removes it")
        raise Failure(msg) from None
    except (HostError, XskError, ValueError, OSError) as e:
        raise Failure(_one_line(e)) from None
    control = None
    try:
        try:
            factory = app_factory(args.app, host.stack)
        except ValueError as e:
            raise UsageError(_one_line(e)) from None
        listeners = [host.serve(p, factory) for p in ports]
        if args.fastopen is not None:
            for lst in listeners:
                try:
                    lst.set_option("TCP_FASTOPEN", args.fastopen)
                except OSError as e:
                    raise Failure(f"--fastopen: {_one_line(e)} (server-side Fast Open is "
                                  "not available in this pystack)") from None
        try:
            control = ControlServer(host, app=args.app, ports=ports, metrics=args.metrics)
        except ControlError as e:
            raise Failure(str(e)) from None
        from pystack.xdp.program import attached_prog_id

        extra = f", metrics http://{args.metrics}/metrics" if args.metrics else ""
        ready = (f"pystack: attached to {args.iface} ({args.mode}, XDP program id "
                 f"{attached_prog_id(host.dp.ifindex)}), ports {','.join(map(str, ports))}, "
                 f"app {args.app}{extra}, control @pystack/{args.iface}, pid {os.getpid()}; "
                 "Ctrl-C to detach")
        # Printed once SIGINT/SIGTERM detach cleanly (the loop's handlers are in place).
        host.run_forever(on_ready=lambda: print(ready, flush=True))
    finally:
        if control is not None:
            control.close()
        host.close()
    print(f"pystack: detached from {args.iface}", flush=True)
    return 0


# ---- query verbs -------------------------------------------------------------------------
def _stacks(iface: str | None) -> list[str]:
    from pystack.control import running_stacks

    if iface is not None:
        try:
            socket.if_nametoindex(iface)
        except OSError:
            raise Failure(f"no such interface: {iface}") from None
        if iface not in running_stacks():
            raise Failure(f"no pystack is running on {iface}")
        return [iface]
    found = running_stacks()
    if not found:
        raise Failure("no pystack is running in this network namespace")
    return found


def _one_stack(iface: str | None) -> str:
    found = _stacks(iface)
    if len(found) > 1:
        raise UsageError(f"pystack runs on {', '.join(found)}: choose one with -I IFACE")
    return found[0]


def _ask(iface: str, verb: str, **kw: Any) -> Any:
    from pystack.control import ControlError, request

    try:
        return request(iface, verb, **kw)
    except ControlError as e:
        raise Failure(str(e)) from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise Failure(f"no pystack is running on {iface}") from None
    except OSError as e:
        raise Failure(f"control socket of {iface}: {_one_line(e)}") from None


def cmd_status(args: argparse.Namespace) -> int:
    blocks = [fmt.format_status(_ask(i, "status")) for i in _stacks(args.iface)]
    print("\n\n".join(blocks))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    counters = _ask(_one_stack(args.iface), "stats")
    print(json.dumps(counters, indent=1) if args.json else fmt.format_stats(counters))
    return 0


def cmd_ss(args: argparse.Namespace) -> int:
    rows = []
    for i in _stacks(args.iface):
        rows += _ask(i, "ss")
    rows = fmt.select_sockets(rows, listening=args.listening, all_states=args.all)
    print(fmt.format_ss(rows, info=args.info))
    return 0


def cmd_sysctl(args: argparse.Namespace) -> int:
    iface = _one_stack(args.iface)
    if args.write and args.names:
        raise UsageError("sysctl: give -w NAME=VALUE or NAMEs to read, not both")
    if args.write and "=" not in args.write:
        raise UsageError(f"sysctl -w {args.write!r}: expected NAME=VALUE")
    values = _ask(iface, "sysctl", write=args.write, names=args.names)
    print(fmt.format_sysctl(values))
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from ctl.detach import DetachError, detach_stale, stop_running
    from pystack.control import running_stacks

    if os.geteuid() != 0:
        raise Failure("detach needs root (CAP_NET_ADMIN)")
    try:
        socket.if_nametoindex(args.iface)
    except OSError:
        raise UsageError(f"no such interface: {args.iface}") from None
    try:
        if args.iface in running_stacks():
            print(stop_running(args.iface))
        else:
            print(detach_stale(args.iface, force=args.force))
    except DetachError as e:
        raise Failure(str(e)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ctl.demo import run_demo

    if os.geteuid() != 0:
        raise Failure("the demo needs root (it builds network namespaces and loads XDP)")
    return run_demo()


# ---- arguments ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sub = self.prog.partition(" ")[2]
        raise UsageError(f"{sub}: {message}" if sub else message)


def _queue_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"--queues {text!r}: expected 1..64")
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="pystackctl", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    a = sub.add_parser("attach", help="run pystack on IFACE in the foreground")
    a.add_argument("iface")
    a.add_argument("--port", action="append", required=True, help="P[,P..]")
    a.add_argument("--app", default="echo",
                   help="echo | discard | http:DIR | proxy:HOST:PORT (default echo)")
    a.add_argument("--mode", default="native", choices=["native", "skb"])
    a.add_argument("--queues", type=_queue_count, metavar="N",
                   help="serve rx queues 0..N-1 (default: all the interface has)")
    a.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE")
    a.add_argument("--metrics", metavar="HOST:PORT")
    a.add_argument("--fastopen", type=int, metavar="QLEN",
                   help="TCP_FASTOPEN on the listeners (server side also needs "
                        "net.ipv4.tcp_fastopen with 0x2)")
    a.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"],
                   help="connection events are logged at info (default warning)")
    a.set_defaults(func=cmd_attach)

    def iface_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("-I", "--iface", help="the stack on IFACE (default: every one here)")

    s = sub.add_parser("status", help="attached interfaces, programs, ports, uptime")
    iface_opt(s)
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("stats", help="every counter (nstat names)")
    s.add_argument("--json", action="store_true")
    iface_opt(s)
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("ss", help="connections, as ss -t prints them")
    s.add_argument("-t", "--tcp", action="store_true", help="TCP (the only kind there is)")
    s.add_argument("-i", "--info", action="store_true", help="internal TCP information")
    s.add_argument("-l", "--listening", action="store_true", help="listening sockets only")
    s.add_argument("-a", "--all", action="store_true", help="listening and the rest")
    s.add_argument("-n", "--numeric", action="store_true", help="(always numeric)")
    iface_opt(s)
    s.set_defaults(func=cmd_ss)
    s = sub.add_parser("sysctl", help="read settings, or set one on the running stack")
    s.add_argument("-w", "--write", metavar="NAME=VALUE")
    s.add_argument("names", nargs="*", metavar="NAME")
    iface_opt(s)
    s.set_defaults(func=cmd_sysctl)
    d = sub.add_parser("detach", help="stop the stack on IFACE or remove a stale XDP program")
    d.add_argument("iface")
    d.add_argument("--force", action="store_true",
                   help="also remove a netlink-attached program that is not pystack's")
    d.set_defaults(func=cmd_detach)
    d = sub.add_parser("demo", help="a veth bed, pystack serving http to kernel clients")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        level = getattr(args, "log_level", "warning").upper()
        if args.verbose:
            level = "DEBUG" if args.verbose > 1 else "INFO"
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except UsageError as e:
        print(f"pystackctl: {e}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"pystackctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
