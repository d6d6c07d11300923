"""`pystackctl`: attach pystack to an interface, and the demo.

Errors are one line on stderr and a non-zero exit; nothing is left attached."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


def parse_ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise UsageError(f"--port: {part!r} is not a port number (1-65535)")
        ports.append(int(part))
    return ports


def cmd_attach(args: argparse.Namespace) -> int:
    from pystack.apps import APPS
    from pystack.host import Host, HostError

    ports = [p for spec in args.port for p in parse_ports(spec)]
    if args.app not in APPS:
        raise UsageError(f"--app {args.app}: choose from {', '.join(APPS)}")
    try:
        socket.if_nametoindex(args.iface)
    except OSError:
        raise UsageError(f"no such interface: {args.iface}") from None
    if os.geteuid() != 0:
        raise UsageError("attach needs root (CAP_BPF and CAP_NET_ADMIN)")
    try:
        host = Host(args.iface, mode=args.mode, sysctls=args.sysctl, metrics=args.metrics)
    except (HostError, ValueError, OSError) as e:
        raise UsageError(str(e)) from None
    with host:
        for p in ports:
            host.serve(p, APPS[args.app])
        extra = f", metrics on http://{args.metrics}/metrics" if args.metrics else ""
        print(f"pystack: attached to {args.iface} ({args.mode}), ports "
              f"{','.join(map(str, ports))}, app {args.app}{extra}; Ctrl-C to detach", flush=True)
        host.run_forever()
    print(f"pystack: detached from {args.iface}", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ctl.demo import run_demo

    if os.geteuid() != 0:
        raise UsageError("the demo needs root (it builds network namespaces and loads XDP)")
    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pystackctl", description=__doc__)
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("attach", help="run pystack on IFACE in the foreground")
    a.add_argument("iface")
    a.add_argument("--port", action="append", required=True, help="P[,P..]")
    a.add_argument("--app", default="echo", help="echo | discard")
    a.add_argument("--mode", default="native", choices=["native", "skb"])
    a.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE")
    a.add_argument("--metrics", metavar="HOST:PORT")
    a.set_defaults(func=cmd_attach)
    d = sub.add_parser("demo", help="build a veth bed, serve a kernel client, tear down")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"pystackctl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
