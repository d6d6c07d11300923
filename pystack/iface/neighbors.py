"""Neighbour (ARP) resolution: the kernel keeps answering ARP on the interface, so its
neighbour table is the source of truth, read through pyroute2. Frames received from a
peer also teach us its MAC, which covers the moment before the kernel's entry exists."""

from __future__ import annotations

import contextlib
import socket
import time

from pyroute2 import IPRoute

# NUD states with a usable link-layer address (include/uapi/linux/neighbour.h).
NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT


SOLICIT_INTERVAL = 1.0  # seconds, like the kernel's default neigh retrans_time


class NeighbourTable:
    """IPv4 address -> MAC for one interface, cached for `ttl` seconds."""

    def __init__(self, ifname: str, ttl: float = 30.0) -> None:
        self.ipr = IPRoute()  # bound to the caller's network namespace
        idx = self.ipr.link_lookup(ifname=ifname)
        if not idx:
            self.ipr.close()
            raise OSError(f"no such interface: {ifname}")
        self.ifindex = idx[0]
        self.ifname = ifname
        link = self.ipr.get_links(self.ifindex)[0]
        self.local_mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
        self.ttl = ttl
        self._cache: dict[int, tuple[bytes, float]] = {}
        self._learned: dict[int, bytes] = {}
        self._solicited: dict[int, float] = {}  # ip -> when we last asked the kernel
        # Created now, so it lives in the interface's namespace whatever thread solicits.
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.setblocking(False)

    def close(self) -> None:
        self.ipr.close()
        self._udp.close()

    def learn(self, ip: int, mac: bytes) -> None:
        """Remember the source MAC of a frame received from ip."""
        if self._learned.get(ip) != mac:
            self._learned[ip] = bytes(mac)

    def lookup(self, ip: int, now: float | None = None) -> bytes | None:
        now = time.monotonic() if now is None else now
        hit = self._cache.get(ip)
        if hit and hit[1] > now:
            return hit[0]
        mac = self._kernel_lookup(ip) or self._learned.get(ip)
        if mac is None:
            # The kernel retries ARP by itself; one nudge a second (its retrans_time) is enough.
            if now - self._solicited.get(ip, -SOLICIT_INTERVAL) >= SOLICIT_INTERVAL:
                self._solicited[ip] = now
                self.solicit(ip)
            return None
        self._solicited.pop(ip, None)
        self._cache[ip] = (mac, now + self.ttl)
        return mac

    def _kernel_lookup(self, ip: int) -> bytes | None:
        dst = socket.inet_ntoa(ip.to_bytes(4, "big"))
        for n in self.ipr.get_neighbours(ifindex=self.ifindex, dst=dst):
            lladdr = n.get_attr("NDA_LLADDR")
            if lladdr and n["state"] & NUD_USABLE:
                return bytes.fromhex(lladdr.replace(":", ""))
        return None

    def solicit(self, ip: int) -> None:
        """Make the kernel resolve ip: a zero-length UDP datagram to the discard port."""
        dst = socket.inet_ntoa(ip.to_bytes(4, "big"))
        with contextlib.suppress(OSError):
            self._udp.sendto(b"", (dst, 9))
