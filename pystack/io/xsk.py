"""AF_XDP socket: one UMEM and its four rings, driven a batch at a time.

The rings, the frame accounting and the checksums are C (`xsk.c`, bound by cffi in API
mode). Python sees a batch as a cffi array of `struct ps_desc` and touches frames only
through `frame()` views; every frame handed out must be given back with `release()` or
`transmit()`, and the C side refuses a frame the application does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pystack.io._xsk import ffi, lib

MODES = {"auto": 0, "copy": 1, "zerocopy": 2}


class XskError(OSError):
    """The AF_XDP socket could not be created or used."""


@dataclass(frozen=True, slots=True)
class XskStats:
    frames: int
    free: int
    fill: int
    app: int
    tx: int
    rx_frames: int
    tx_frames: int
    bad_release: int
    kicks: int
    rx_dropped: int
    rx_ring_full: int
    fill_ring_empty: int
    tx_ring_empty: int


class XskSocket:
    """An AF_XDP socket bound to (ifname, queue) in the caller's network namespace."""

    def __init__(
        self,
        ifname: str,
        queue: int = 0,
        *,
        frames: int = 8192,
        frame_size: int = 4096,
        ring_size: int = 2048,
        mode: str = "copy",
        batch: int = 64,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"AF_XDP mode must be one of {', '.join(MODES)}, not {mode!r}")
        err = ffi.new("char[]", 256)
        self._x = lib.ps_xsk_open(
            ifname.encode(), queue, frames, frame_size, ring_size, MODES[mode], err, 256
        )
        if self._x == ffi.NULL:
            raise XskError(ffi.string(err).decode())
        self.ifname = ifname
        self.queue = queue
        self.frame_size = frame_size
        self.batch = batch
        self._area = ffi.buffer(lib.ps_xsk_area(self._x), frames * frame_size)
        self._view = memoryview(self._area)
        self.rx_descs = ffi.new("struct ps_desc[]", batch)

    @property
    def area(self) -> Any:
        """The UMEM (cdata uint8_t *) that descriptors' addr fields are offsets into."""
        return lib.ps_xsk_area(self._x)

    @property
    def fd(self) -> int:
        return int(lib.ps_xsk_fd(self._x))

    def close(self) -> None:
        if self._x != ffi.NULL:
            self._view.release()
            lib.ps_xsk_close(self._x)
            self._x = ffi.NULL

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- receive ----
    def wait(self, timeout: float | None) -> bool:
        """Block until frames are ready or `timeout` seconds pass (None: forever)."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        r = lib.ps_xsk_wait(self._x, ms)
        if r < 0 and r != -4:  # -EINTR: let the caller's loop look at its flags
            raise XskError(-r, "poll on AF_XDP socket failed")
        return r > 0

    def spin(self, usec: int) -> bool:
        """Busy-poll the rx ring for up to `usec` microseconds (no syscall, the GIL
        released); True as soon as frames are ready."""
        return bool(lib.ps_xsk_spin(self._x, usec))

    def recv(self) -> int:
        """Fill `rx_descs` with up to `batch` frames; returns the count. Release them after.
        Each desc has addr, len, flags (the XDP program's META_* flags) and syncookie (with
        META_COOKIE_OK, the handshake's options: pystack.xdp.abi.decode_cookie_info)."""
        return int(lib.ps_rx_burst(self._x, self.rx_descs, self.batch))

    def frame(self, desc: Any) -> memoryview:
        """A view of one frame's bytes (valid until the frame is released or transmitted)."""
        start = int(desc.addr)
        return self._view[start : start + int(desc.len)]

    def release(self, descs: Any, n: int) -> int:
        return int(lib.ps_release(self._x, descs, n))

    # ---- transmit ----
    def alloc(self, n: int) -> tuple[Any, int]:
        """Allocate up to n free frames for transmit: (desc array, count)."""
        descs = ffi.new("struct ps_desc[]", n)
        return descs, int(lib.ps_tx_alloc(self._x, descs, n))

    def buffer(self, desc: Any) -> memoryview:
        """A writable view of a whole allocated tx frame."""
        start = int(desc.addr)
        return self._view[start : start + self.frame_size]

    def transmit(self, descs: Any, n: int, *, checksum: bool = True) -> int:
        """Queue n frames (lengths set in descs[i].len). Returns how many were queued;
        the rest are still the caller's (release or retry them)."""
        return int(lib.ps_tx_submit(self._x, descs, n, 1 if checksum else 0))

    def transmit_segments(self, segs: Any, n: int, src_mac: bytes, out: Any) -> int:
        """Build and queue n `struct ps_txseg` (pystack.io.batch.TxPacker) in one C call:
        frames from the free list, TSO split, checksums, one kick. Returns the segments
        consumed; out[0] = frames queued, out[1] = segments refused (their error set)."""
        return int(lib.ps_tx_segs(self._x, segs, n, src_mac, out))

    def complete(self) -> int:
        return int(lib.ps_tx_complete(self._x))

    def flush(self) -> int:
        """Kick again while frames wait in the tx ring (a kick gives up when the device
        queue is stopped, and nothing else resends them); returns frames not completed."""
        return int(lib.ps_tx_flush(self._x))

    def fill(self, descs: Any, n: int, template: bytes) -> None:
        """Copy template into n allocated tx frames and set their lengths (C)."""
        if len(template) > self.frame_size:
            raise ValueError("template larger than a frame")
        lib.ps_tx_fill(self._x, descs, n, template, len(template))

    def reflect(self, descs: Any, n: int) -> None:
        """Swap addresses and ports of n received frames in place (echo benchmark)."""
        lib.ps_reflect(self._x, descs, n)

    # ---- accounting ----
    def stats(self) -> XskStats:
        st = ffi.new("struct ps_xsk_stats *")
        lib.ps_xsk_get_stats(self._x, st)
        return XskStats(**{f: int(getattr(st, f)) for f in XskStats.__dataclass_fields__})

    def check(self) -> None:
        """Raise if any frame is unaccounted for or on two lists at once."""
        r = lib.ps_xsk_check(self._x)
        if r != 0:
            raise AssertionError(f"AF_XDP frame accounting is inconsistent (code {r})")


def csum_fill(frame: bytearray) -> None:
    """Compute IPv4 and TCP checksums of an Ethernet frame in place (C)."""
    buf = ffi.from_buffer(frame, require_writable=True)
    if lib.ps_csum_fill(ffi.cast("uint8_t *", buf), len(frame)) != 0:
        raise ValueError("not an Ethernet/IPv4/TCP frame")


def csum_ok(frame: bytes | bytearray | memoryview) -> bool:
    buf = ffi.from_buffer(frame)
    return bool(lib.ps_csum_verify(ffi.cast("uint8_t *", buf), len(frame)) == 0)
