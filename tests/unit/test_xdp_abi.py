"""bpf/pystack_xdp.h and pystack/xdp/abi.py must agree: the program writes what Python reads."""

from __future__ import annotations

import re

from pystack.xdp import abi
from pystack.xdp.program import bpf_dir

HEADER = (bpf_dir() / "pystack_xdp.h").read_text()


def defines(prefix: str) -> dict[str, int]:
    out = {}
    for name, value in re.findall(rf"#define ({prefix}\w*)\s+(0x[0-9a-fA-F]+|\d+)u?\b", HEADER):
        out[name] = int(value, 0)
    return out


def test_actions_match_header():
    acts = {k: v for k, v in defines("ACT_").items() if k != "ACT_MAX"}
    assert defines("ACT_")["ACT_MAX"] == len(abi.ACTIONS)
    for name, idx in acts.items():
        assert abi.ACTIONS[idx] == name.removeprefix("ACT_").lower()


def test_drop_reasons_match_header():
    drops = {k: v for k, v in defines("DROP_").items() if k != "DROP_MAX"}
    assert defines("DROP_")["DROP_MAX"] == len(abi.DROP_REASONS) == len(drops)
    assert sorted(drops.values()) == list(range(len(drops)))


def test_meta_constants_match_header():
    assert defines("PYSTACK_META_MAGIC")["PYSTACK_META_MAGIC"] == abi.META_MAGIC
    assert defines("META_CSUM_OK")["META_CSUM_OK"] == abi.META_CSUM_OK
    assert defines("PYSTACK_MAX_QUEUES")["PYSTACK_MAX_QUEUES"] == abi.MAX_QUEUES
