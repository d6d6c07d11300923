"""Test helpers: an asyncio loop with a virtual clock.

:class:`VirtualClockLoop` is a normal selector loop whose ``time()`` only moves when the
loop would otherwise sleep: it then jumps straight to the next timer. Code on pystack's
in-memory link (``Stack.pair()``) runs deterministically and retransmission timeouts,
keepalives or ``TCP_USER_TIMEOUT`` take no wall-clock time. Use it only for code that
does not wait for other threads (a jump would skip their time).

>>> import asyncio
>>> async def nap() -> float:
...     loop = asyncio.get_running_loop()
...     t0 = loop.time()
...     await asyncio.sleep(3600)
...     return loop.time() - t0
>>> run(nap())
3600.0
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run"]

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.clock = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            return super().select(None)  # nothing scheduled: only another thread can wake us
        t = self.clock + timeout
        self.clock = t if t > self.clock else math.nextafter(self.clock, math.inf)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A SelectorEventLoop whose clock jumps over idle time (module docstring)."""

    def __init__(self) -> None:
        self._vsel = _Selector()
        super().__init__(self._vsel)

    def time(self) -> float:
        return self._vsel.clock


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh :class:`VirtualClockLoop`."""
    loop = VirtualClockLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
