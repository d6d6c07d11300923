"""`python -m bench [NAME ...]` (`sudo ./run bench [NAME ...]`): run benchmarks, write
bench/results.json and bench/results.md.

Each benchmark builds its own veth bed and measures pystack and the kernel side by side in
the same run; what matters is the ratio. Don't run them while other work loads the CPU.
Running some benchmarks updates their entries and keeps the others' last results (each
result carries its own time). A benchmark that fails is recorded with its error and the
rest still run; the exit status is then 1.

The table has one row per comparison: name, condition, pystack, kernel, ratio, target,
met?. A benchmark may return its rows itself (a "rows" list of dicts with those keys);
for the others, ROWS below derives them from the figures they return.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pystack.testbed import sigterm_as_interrupt

# name -> module with run() -> dict (imported only when it runs). Issue 7's table first.
BENCHMARKS: dict[str, str] = {
    "bulk": "bench.bulk",
    "crr": "bench.crr",
    "rr": "bench.rr",
    "synflood": "bench.synflood",
    "echo_asyncio": "bench.echo_asyncio",
    "memory": "bench.memory",
    "xdp_tax": "bench.xdp_tax",
    "loss": "bench.loss",
    "echo_pps": "bench.echo_pps",
}

HERE = Path(__file__).resolve().parent
COLUMNS = ("name", "condition", "pystack", "kernel", "ratio", "target", "met?")

Row = dict[str, object]


def _row(condition: str, pystack: object, kernel: object, ratio: object = None,
         target: str = "", met: bool | None = None) -> Row:
    return {"condition": condition, "pystack": pystack, "kernel": kernel, "ratio": ratio,
            "target": target, "met": met}


def _at_least(value: object, target: float) -> bool | None:
    return value >= target if isinstance(value, int | float) else None


def _bulk(r: dict[str, object]) -> list[Row]:
    t = r.get("target_ratio", 0.45)
    rows = []
    for d, what in (("rx", "kernel sender -> pystack receiver"),
                    ("tx", "pystack sender -> kernel receiver")):
        if f"{d}_ratio" in r:
            rows.append(_row(f"{what}, Mbit/s, TSO/GSO off", r[f"{d}_pystack_mbit_s"],
                             r[f"{d}_kernel_mbit_s"], r[f"{d}_ratio"], f">= {t}",
                             _at_least(r[f"{d}_ratio"], float(t))))  # type: ignore[arg-type]
    for d, what in (("rx", "kernel sender -> pystack receiver"),
                    ("tx", "pystack sender -> kernel receiver")):
        if f"{d}_ratio_vs_kernel_defaults" in r:
            rows.append(_row(f"... {what} vs the kernel with default offloads (TSO/GSO on)",
                             r[f"{d}_pystack_mbit_s"], r[f"{d}_kernel_defaults_mbit_s"],
                             r[f"{d}_ratio_vs_kernel_defaults"]))
    return rows


def _synflood(r: dict[str, object]) -> list[Row]:
    q = r.get("queues", 1)
    rows = [
        _row(f"SYN-ACKs per SYN delivered ({q} rx queues)", r["pystack_synack_per_syn"],
             r["kernel_synack_per_syn"], None, "pystack >= 0.99",
             _at_least(r["pystack_synack_per_syn"], 0.99)),
        _row("SYN-ACKs/s during the flood", r["pystack_synack_pps"], r["kernel_synack_pps"],
             r["ratio_synack_pps"]),
        _row(f"legitimate handshakes/s during the flood ({q} rx queues; kernel "
             "tcp_syncookies=2)", r["pystack_handshakes_ps"], r["kernel_handshakes_ps"],
             r["ratio_handshakes_ps"], ">= 1.0", _at_least(r["ratio_handshakes_ps"], 1.0)),
    ]
    if "one_queue_pystack_handshakes_ps" in r:
        rows.append(_row("legitimate handshakes/s during the flood, one rx queue shared with "
                         "the flood (reference)", r["one_queue_pystack_handshakes_ps"],
                         r["one_queue_kernel_handshakes_ps"],
                         r["one_queue_ratio_handshakes_ps"]))
    return rows


def _echo_asyncio(r: dict[str, object]) -> list[Row]:
    return [
        _row("asyncio streams echo, 1 KiB x 10 connections, echoes/s",
             r["pystack_streams_echoes_per_s"], r["kernel_asyncio_streams_echoes_per_s"],
             r["ratio_streams"], ">= 1.0", _at_least(r["ratio_streams"], 1.0)),
        _row("asyncio Protocol echo, echoes/s", r["pystack_protocol_echoes_per_s"],
             r["kernel_asyncio_protocol_echoes_per_s"], r["ratio_protocol"]),
    ]


def _xdp_tax(r: dict[str, object]) -> list[Row]:
    t = r.get("target_ratio", 0.95)
    return [_row("kernel TCP on a non-owned port, Mbit/s: pystack's XDP attached (pystack "
                 "column) vs detached (kernel column)", r["attached_mbit_s"],
                 r["detached_mbit_s"], r["ratio"], f">= {t}",
                 _at_least(r["ratio"], float(t))),  # type: ignore[arg-type]
            _row("... pystack's XDP attached vs a bare XDP_PASS program (kernel column): "
                 "what the program adds to the veth's per-frame copy for any XDP",
                 r["attached_mbit_s"], r["xdp_pass_mbit_s"], r["ratio_vs_xdp_pass"])]


def _loss(r: dict[str, object]) -> list[Row]:
    rows = []
    for k in r:
        m = re.fullmatch(r"(tx|rx)_(.+)_pystack_mbit_s", k)
        if m:
            d, rate = m.groups()
            p = f"{d}_{rate}"
            rows.append(_row(f"{d} goodput at {rate.replace('pct', ' %')} loss, Mbit/s", r[k],
                             r.get(f"{p}_kernel_mbit_s"), r.get(f"{p}_ratio")))
    return rows


def _echo_pps(r: dict[str, object]) -> list[Row]:
    k = r.get("kernel_python_udp_echo_pps")
    return [_row(f"64-byte frame echo, pps ({what}) vs a Python UDP echo on kernel sockets",
                 r[f"pystack_{key}_pps"], k, r.get(f"ratio_{key}"))
            for key, what in (("batch", "AF_XDP batch"), ("parse", "parse + build"),
                              ("parse_python", "pure-Python parse + build"))
            if f"pystack_{key}_pps" in r]


def _generic(r: dict[str, object]) -> list[Row]:
    """pystack_X / kernel_X pairs (any prefix), ratio computed; target_ratio if given."""
    rows = []
    t = r.get("target_ratio")
    for k, v in r.items():
        if "pystack" not in k or not isinstance(v, int | float):
            continue
        kv = r.get(k.replace("pystack", "kernel"))
        if not isinstance(kv, int | float):
            continue
        ratio = round(v / kv, 3) if kv else None
        rows.append(_row(k.replace("pystack_", "").replace("_pystack", ""), v, kv, ratio,
                         f">= {t}" if t is not None else "",
                         _at_least(ratio, float(t)) if t is not None else None))  # type: ignore[arg-type]
    return rows


ROWS: dict[str, Callable[[dict[str, object]], list[Row]]] = {
    "bulk": _bulk,
    "synflood": _synflood,
    "echo_asyncio": _echo_asyncio,
    "xdp_tax": _xdp_tax,
    "loss": _loss,
    "echo_pps": _echo_pps,
}


def rows_of(r: dict[str, object]) -> list[Row]:
    if "error" in r:
        return [_row(f"failed: {r['error']}", None, None)]
    if isinstance(r.get("rows"), list):
        return r["rows"]  # type: ignore[return-value]
    try:
        return ROWS.get(str(r["name"]), _generic)(r) or _generic(r)
    except (KeyError, TypeError, ValueError):  # figures of an older version of the benchmark
        return _generic(r)


def _cell(v: object) -> str:
    if v is None:
        return ""
    if v is True:
        return "yes"
    if v is False:
        return "**no**"
    return str(v).replace("|", "\\|")


def markdown(doc: dict[str, object]) -> str:
    results: list[dict[str, object]] = doc["results"]  # type: ignore[assignment]
    lines = [f"Benchmarks, pystack vs the Linux kernel on the same veth bed (kernel "
             f"{doc['kernel']}); ratio = pystack / kernel. Provisional when measured on a "
             f"shared machine.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        for row in rows_of(r):
            lines.append("| " + " | ".join(_cell(v) for v in (
                r["name"], row.get("condition"), row.get("pystack"), row.get("kernel"),
                row.get("ratio"), row.get("target"), row.get("met"))) + " |")
    lines += ["", "Conditions:", ""]
    for r in results:
        lines.append(f"- **{r['name']}** ({r.get('when', doc.get('when', ''))}): "
                     f"{r.get('conditions', '')}")
    return "\n".join(lines) + "\n"


def _load() -> dict[str, object]:
    try:
        doc = json.loads((HERE / "results.json").read_text())
    except (OSError, ValueError):
        return {"results": []}
    for r in doc.get("results", []):
        r.setdefault("when", doc.get("when", ""))  # results written before per-result times
    return doc


def run_one(name: str) -> dict[str, object]:
    try:
        r = importlib.import_module(BENCHMARKS[name]).run()
    except Exception as e:
        traceback.print_exc()
        r = {"name": name, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    r["name"] = name
    r["when"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    ap.add_argument("--table", action="store_true",
                    help="only rewrite results.md from results.json")
    args = ap.parse_args(argv)
    if args.table:
        doc = _load()
        doc.setdefault("kernel", platform.release())
        (HERE / "results.md").write_text(markdown(doc))
        print(markdown(doc))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    sigterm_as_interrupt()
    doc = _load()
    old = {str(r["name"]): r for r in doc["results"]}  # type: ignore[union-attr]
    failed = False
    for name in args.names or list(BENCHMARKS):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        r = run_one(name)
        failed |= "error" in r
        print(json.dumps(r, indent=2), flush=True)
        old[name] = r
        order = [n for n in BENCHMARKS if n in old] + [n for n in old if n not in BENCHMARKS]
        doc = {"when": r["when"], "kernel": platform.release(),
               "results": [old[n] for n in order]}
        # Written after every benchmark: an interrupted run keeps what it measured.
        (HERE / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
        (HERE / "results.md").write_text(markdown(doc))
    print(markdown(doc))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
