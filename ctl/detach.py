"""`pystackctl detach IFACE`: take XDP off an interface pystack was attached to.

pystack attaches through a BPF link owned by the `attach` process, so a running stack is
asked to stop over its control socket (it detaches cleanly), and a killed one leaves
nothing behind: the kernel drops the link with the process (PLATFORM.md). What can be left
is a program attached through netlink (an older pystack, bcc's attach_xdp, `ip link set
xdp`): that outlives its process, and this removes it. A program held by some other live
process's BPF link cannot be removed from outside; this names the process instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass

PYSTACK_PROG_NAMES = ("xdp_ingress",)  # bpf/xdp_ingress.c's entry point, as bcc names it
XDP_MODES = {1: ("driver", "xdpdrv"), 2: ("generic", "xdpgeneric"), 3: ("offload",
                                                                        "xdpoffload")}


class DetachError(Exception):
    """Could not (or would not) detach; one line."""


@dataclass
class Attached:
    prog_id: int
    name: str
    mode: int


def attached_programs(ifname: str) -> list[Attached]:
    """The XDP programs on ifname (this namespace), from `ip -j -d link show`."""
    r = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", ifname], capture_output=True,
                       text=True, timeout=10)
    if r.returncode != 0:
        raise DetachError(f"no such interface: {ifname}")
    xdp = json.loads(r.stdout)[0].get("xdp") or {}
    entries = xdp.get("attached") or ([xdp] if xdp.get("prog") else [])
    return [Attached(int(e["prog"]["id"]), str(e["prog"].get("name", "")), int(e["mode"]))
            for e in entries if e.get("prog")]


def link_holders(prog_id: int, ifindex: int) -> list[tuple[int, str]]:
    """(pid, command) of processes holding an XDP BPF link of prog_id on ifindex, from
    /proc/*/fdinfo (a link shows link_type, prog_id and ifindex there)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf_link":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines()
                                if ":" in line)
            except OSError:
                continue
            info = {k.strip(): v.strip() for k, v in info.items()}
            if (info.get("link_type") == "xdp" and info.get("prog_id") == str(prog_id)
                    and info.get("ifindex") in (None, str(ifindex))):
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found.append((int(pid), comm))
                break
    return found


def stop_running(ifname: str, timeout: float = 15.0) -> str:
    """Ask the pystack on ifname to stop; wait until its control socket is gone."""
    from pystack.control import request, running_stacks

    st = request(ifname, "stop")
    deadline = time.monotonic() + timeout
    while ifname in running_stacks():
        if time.monotonic() > deadline:
            raise DetachError(f"pystack pid {st['pid']} on {ifname} did not stop within "
                              f"{timeout:.0f}s")
        time.sleep(0.05)
    return f"{ifname}: stopped pystack pid {st['pid']}; its XDP program is detached"


def detach_stale(ifname: str, *, force: bool = False) -> str:
    """Remove a netlink-attached (stale) XDP program from ifname; the message says what
    was done. DetachError when nothing could be removed for a reason the user must act on."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        raise DetachError(f"no such interface: {ifname}") from None
    progs = attached_programs(ifname)
    if not progs:
        return f"{ifname}: no XDP program attached; nothing to detach"
    done = []
    for p in progs:
        mode_name, ip_kw = XDP_MODES.get(p.mode, ("unknown", "xdp"))
        what = f"XDP program id {p.prog_id} ({p.name or 'unnamed'}, {mode_name} mode)"
        holders = link_holders(p.prog_id, ifindex)
        if holders:
            who = ", ".join(f"pid {pid} ({comm})" for pid, comm in holders)
            raise DetachError(f"{ifname}: {what} is attached through a BPF link held by "
                              f"{who}; it goes away when that process exits")
        if p.name not in PYSTACK_PROG_NAMES and not force:
            raise DetachError(f"{ifname}: {what} is not pystack's; use --force to remove it")
        r = subprocess.run(["ip", "link", "set", "dev", ifname, ip_kw, "off"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0 or any(q.prog_id == p.prog_id for q in attached_programs(ifname)):
            err = (r.stderr.strip().splitlines() or ["still attached"])[-1]
            raise DetachError(f"{ifname}: cannot remove {what}: {err} (a BPF link pinned in "
                              "bpffs? see `bpftool link`)")
        done.append(what)
    return f"{ifname}: removed {'; '.join(done)}, attached through netlink by a process " \
           "that is gone"
