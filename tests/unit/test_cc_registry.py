"""The congestion-control name registry (Linux tcp_register_congestion_control)."""

from __future__ import annotations

import doctest

import pytest

import pystack.cc as cc
from pystack.cc.base import CcState, CongestionOps
from pystack.cc.cubic import Cubic
from pystack.cc.reno import Reno


class _Fixed(CongestionOps):
    name = "fixed_test"

    def ssthresh(self, tp: CcState) -> int:
        return tp.snd_cwnd

    def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
        pass


@pytest.fixture
def fixed():  # type: ignore[no-untyped-def]
    cc.register(_Fixed)
    yield _Fixed
    cc.unregister(_Fixed.name)


def test_builtin_algorithms_registered_in_order() -> None:
    names = cc.available()
    assert names[:2] == ["reno", "cubic"]
    assert cc.DEFAULT == "cubic" and cc.DEFAULT in names


def test_get_returns_fresh_instances() -> None:
    a, b = cc.get("cubic"), cc.get("cubic")
    assert isinstance(a, Cubic) and isinstance(b, Cubic) and a is not b
    assert isinstance(cc.get("reno"), Reno)


def test_duplicate_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        cc.register(Reno)

    class Reno2(Reno):
        pass  # same name "reno"

    with pytest.raises(ValueError):
        cc.register(Reno2)
    assert cc.available().count("reno") == 1


def test_unknown_name_is_keyerror_naming_it() -> None:
    with pytest.raises(KeyError) as info:
        cc.get("bbr9")
    msg = str(info.value)
    assert "bbr9" in msg and "\n" not in msg
    assert isinstance(info.value, cc.UnknownAlgorithm)
    with pytest.raises(KeyError):
        cc.unregister("bbr9")


@pytest.mark.parametrize("bad", ["", "x" * 16, "two words", "tab\t", 5, None])
def test_name_validation(bad: object) -> None:
    cls = type("Bad", (_Fixed,), {"name": bad})
    with pytest.raises(ValueError):
        cc.register(cls)


def test_name_of_fifteen_bytes_ok() -> None:
    cls = type("Long", (_Fixed,), {"name": "x" * 15})
    assert cc.register(cls) is cls
    try:
        assert "x" * 15 in cc.available()
    finally:
        cc.unregister("x" * 15)


def test_required_hooks_and_type_checked() -> None:
    class NoSsthresh(CongestionOps):
        name = "nossthresh"

        def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
            pass

    class NoCongAvoid(CongestionOps):
        name = "nocongavoid"

        def ssthresh(self, tp: CcState) -> int:
            return 2

    for cls in (NoSsthresh, NoCongAvoid):
        with pytest.raises(ValueError, match="does not implement"):
            cc.register(cls)
    with pytest.raises(ValueError):
        cc.register(object)  # type: ignore[type-var]
    with pytest.raises(ValueError):
        cc.register(Reno())  # type: ignore[type-var]  # an instance, not a class


def test_user_algorithm_works(fixed: type[_Fixed]) -> None:
    assert cc.available()[-1] == "fixed_test"
    ops = cc.get("fixed_test")
    tp = CcState(mss=1448, snd_cwnd=33)
    ops.init(tp)
    for _ in range(100):
        ops.cong_avoid(tp, 0, 1)
    assert tp.snd_cwnd == 33
    assert ops.ssthresh(tp) == 33
    assert ops.undo_cwnd(tp) == 33  # inherited default: max(cwnd, prior_cwnd)


def test_unregister_then_reregister(fixed: type[_Fixed]) -> None:
    cc.unregister("fixed_test")
    assert "fixed_test" not in cc.available()
    with pytest.raises(KeyError):
        cc.get("fixed_test")
    cc.register(_Fixed)  # fixture unregisters again


def test_docstring_example_runs() -> None:
    before = cc.available()
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(cc, "pystack.cc")
    assert tests and tests[0].examples
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted >= 5
    assert cc.available() == before  # the example unregisters itself
