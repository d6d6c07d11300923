"""Shared fixtures. Integration tests need root and BPF: without them they fail loudly
(never skip). Unit tests run anywhere: `pytest -m "not integration"`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import read_line, running_host

# Directories whose tests need root and BPF (marked integration, never skipped).
INTEGRATION_DIRS = tuple(os.path.join(os.path.dirname(__file__), d, "")
                         for d in ("integration", "reliability"))


def pytest_configure(config: pytest.Config) -> None:
    from pystack.testbed import sigterm_as_interrupt

    sigterm_as_interrupt()  # a killed run still tears down its beds


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.fspath).startswith(INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (BPF, namespaces); run them with sudo, "
                    "or deselect them with -m 'not integration'", pytrace=False)


@pytest.fixture(scope="session")
def program():
    """The XDP ingress program, compiled once per test session (bcc takes seconds)."""
    _need_root()
    from pystack.xdp.program import IngressProgram

    prog = IngressProgram()
    yield prog
    prog.close()


@pytest.fixture
def bed() -> Iterator[object]:
    _need_root()
    from pystack.testbed import Testbed

    b = Testbed.create()
    try:
        yield b
    finally:
        b.destroy()


@pytest.fixture
def host(bed, program) -> Iterator[object]:
    """A started pystack Host with default settings on the bed's stack side."""
    with running_host(bed, program) as h:
        yield h


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove beds of dead runs first; after the session, fail if this run left any."""
    if os.geteuid() == 0:
        from pystack.testbed import cleanup_stale

        cleanup_stale()
    yield
    if os.geteuid() != 0:
        return
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = [line.split()[0] for line in out.splitlines() if f"pystack-{os.getpid()}-" in line]
    assert not mine, f"test run left network namespaces behind: {mine}"


@pytest.fixture
def spawn_stack(bed):
    """Start `python -m pystack.stack` on the bed's stack side; returns the Popen once it
    printed its ready line. The bed kills it at teardown."""

    def start(*ports: int) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "pystack.stack", bed.stack.ifname]
        for p in ports:
            args += ["--port", str(p)]
        proc = bed.spawn("stack", args, stdout=subprocess.PIPE, text=True)
        line = read_line(proc)
        assert line.startswith("ready"), f"stack did not start: {line!r} rc={proc.poll()}"
        return proc

    return start
