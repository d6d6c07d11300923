"""Fixtures of the reliability suite (tests/conftest.py marks the directory integration:
root and real BPF, never skipped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def loss_program(program) -> Iterator[object]:
    """bpf/loss_inject.c (pystack/faults.py), compiled once per session (bcc takes seconds)."""
    from pystack.faults import LossProgram

    prog = LossProgram()
    yield prog
    prog.close()
