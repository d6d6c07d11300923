"""Text output of the query verbs, modelled on the Linux tools: `ss -ti` (iproute2's
misc/ss.c, tcp_show_info: same field names, order and "print only when set" rules),
`nstat -az` for counters and `sysctl -a` for settings. Pure functions of the control
socket's answers, unit-tested without a stack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TCP_INFINITE_SSTHRESH = 0x7FFFFFFF


def _g(x: float) -> str:
    """C's %g, as ss prints times in ms."""
    return f"{x:g}"


def _bw(bps: float) -> str:
    """ss's sprint_bw: 3 significant digits and a k/M/G/T suffix."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if bps >= div:
            return f"{bps / div:.3g}{unit}"
    return f"{bps:g}"


def tcp_info_fields(info: Mapping[str, Any]) -> list[str]:
    """The `ss -i` fields of one connection, in ss's order, each only when ss prints it."""
    out: list[str] = []
    opts = info.get("options") or []
    for opt in ("ts", "sack", "ecn", "ecnseen", "fastopen"):
        if opt in opts:
            out.append(opt)
    if info.get("cc"):
        out.append(str(info["cc"]))
    ws = info.get("wscale")
    if ws:
        out.append(f"wscale:{ws[0]},{ws[1]}")
    if info.get("rto"):
        out.append(f"rto:{_g(info['rto'])}")
    if info.get("backoff"):
        out.append(f"backoff:{info['backoff']}")
    if info.get("rtt"):
        out.append(f"rtt:{_g(info['rtt'])}/{_g(info.get('rttvar', 0))}")
    if info.get("ato"):
        out.append(f"ato:{_g(info['ato'])}")
    for key, name in (("mss", "mss"), ("pmtu", "pmtu"), ("rcvmss", "rcvmss"),
                      ("advmss", "advmss"), ("cwnd", "cwnd")):
        if info.get(key):
            out.append(f"{name}:{info[key]}")
    ssthresh = info.get("ssthresh")
    if ssthresh and ssthresh < 0xFFFF:  # ss hides the "infinite" initial value
        out.append(f"ssthresh:{ssthresh}")
    for key in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out",
                "segs_in", "data_segs_out", "data_segs_in"):
        if info.get(key):
            out.append(f"{key}:{info[key]}")
    rtt, mss, cwnd = info.get("rtt") or 0, info.get("mss") or 0, info.get("cwnd") or 0
    if rtt > 0 and mss and cwnd:
        out.append(f"send {_bw(cwnd * mss * 8 / (rtt / 1000))}bps")
    if info.get("unacked"):
        out.append(f"unacked:{info['unacked']}")
    retrans_now = info.get("retransmits") or 0
    retrans_total = info.get("retrans") or 0
    if retrans_now or retrans_total:
        out.append(f"retrans:{retrans_now}/{retrans_total}")
    if info.get("lost"):
        out.append(f"lost:{info['lost']}")
    for key in ("rcv_space", "rcv_ssthresh"):
        if info.get(key):
            out.append(f"{key}:{info[key]}")
    if info.get("notsent"):
        out.append(f"notsent:{info['notsent']}")
    if info.get("snd_wnd"):
        out.append(f"snd_wnd:{info['snd_wnd']}")
    return out


def select_sockets(rows: Iterable[Mapping[str, Any]], *, listening: bool = False,
                   all_states: bool = False) -> list[Mapping[str, Any]]:
    """ss's default filter: every state but LISTEN (and closed); -l only LISTEN; -a all."""
    out = []
    for r in rows:
        is_listen = r["state"] == "LISTEN"
        if all_states or (is_listen if listening else not is_listen and r["state"] != "UNCONN"):
            out.append(r)
    return out


def format_ss(rows: Sequence[Mapping[str, Any]], *, info: bool = False,
              header: bool = True) -> str:
    """Lines as `ss -tn` / `ss -tni` print them."""
    def endpoint(ep: Sequence[Any]) -> tuple[str, str]:
        ip, port = ep
        return str(ip), ("*" if port == 0 else str(port))  # ss: 0.0.0.0:80, 0.0.0.0:*

    table = []
    for r in rows:
        la, lp = endpoint(r["local"])
        pa, pp = endpoint(r["peer"])
        table.append((r["state"], str(r["recv_q"]), str(r["send_q"]), la, lp, pa, pp))
    w = [max([len(t[i]) for t in table] + [base]) for i, base in
         enumerate((5, 6, 6, 13, 4, 12, 4))]
    lines = []
    if header:
        lines.append(f"{'State':<{w[0]}} {'Recv-Q':<{w[1]}} {'Send-Q':<{w[2]}} "
                     f"{'Local Address':>{w[3]}}:{'Port':<{w[4]}} "
                     f"{'Peer Address':>{w[5]}}:{'Port':<{w[6]}} Process")
    for r, (st, rq, sq, la, lp, pa, pp) in zip(rows, table, strict=True):
        lines.append(f"{st:<{w[0]}} {rq:<{w[1]}} {sq:<{w[2]}} {la:>{w[3]}}:{lp:<{w[4]}} "
                     f"{pa:>{w[5]}}:{pp:<{w[6]}}".rstrip())
        if info and r.get("info"):
            lines.append("\t " + " ".join(tcp_info_fields(r["info"])))
    return "\n".join(lines)


def format_stats(counters: Mapping[str, int]) -> str:
    """`nstat -az` style: one NAME VALUE line per counter."""
    width = max([len(k) for k in counters] + [24])
    return "\n".join(f"{k:<{width}} {v}" for k, v in counters.items())


def format_sysctl(values: Iterable[Sequence[str]]) -> str:
    """`sysctl -a` style: NAME = VALUE."""
    return "\n".join(f"{name} = {value}" for name, value in values)


def format_uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def format_status(st: Mapping[str, Any]) -> str:
    states = st.get("states") or {}
    by_state = ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if k != "LISTEN")
    conns = f"{st.get('connections', 0)}" + (f" ({by_state})" if by_state else "")
    ports = ",".join(str(p) for p in st.get("ports", [])) or "none"
    lines = [
        f"{st['iface']}: pystack pid {st['pid']}, up {format_uptime(st.get('uptime', 0))}",
        f"  xdp:          program id {st.get('prog_id', 0)}, {st.get('mode')} mode, "
        f"attached by {st.get('attachment', 'bpf_link')} (ifindex {st.get('ifindex')})",
        f"  af_xdp:       {st.get('queues', 1)} rx queue"
        + ("s" if st.get("queues", 1) != 1 else "") + ", one socket each",
        f"  addresses:    {', '.join(st.get('addresses', [])) or 'none'}",
        f"  ports:        {ports}" + (f" (app {st['app']})" if st.get("app") else ""),
        f"  connections:  {conns}",
        "  metrics:      " + (f"http://{st['metrics']}/metrics" if st.get("metrics")
                              else "off"),
        f"  control:      @pystack/{st['iface']}",
    ]
    return "\n".join(lines)
