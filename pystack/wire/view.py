"""Turn any bytes-like object into a flat unsigned-byte memoryview (no copy)."""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def byte_view(buf: Buffer) -> memoryview:
    """A 1-D memoryview of format 'B' over `buf`; `buf` must be C-contiguous."""
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv
