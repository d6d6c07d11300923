"""`python -m bench [NAME ...]`: run benchmarks, write bench/results.json and bench/results.md.

Each benchmark builds its own veth bed and measures pystack and the kernel side by side in
the same run; what matters is the ratio. Don't run them while other work loads the CPU."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import bulk, echo_pps
from pystack.testbed import sigterm_as_interrupt

BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {
    "echo_pps": echo_pps.run,
    "bulk": bulk.run,
}

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    sigterm_as_interrupt()
    results = []
    for name in args.names or list(BENCHMARKS):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        r = BENCHMARKS[name]()
        print(json.dumps(r, indent=2), flush=True)
        results.append(r)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(),
           "results": results}
    (HERE / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for r in results:
        for k, v in r.items():
            if k not in ("name", "conditions"):
                lines.append(f"| {r['name']} | {k} | {v} |")
        lines.append(f"| {r['name']} | conditions | {r['conditions']} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
