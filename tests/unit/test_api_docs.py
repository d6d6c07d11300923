"""The examples in pystack.api's docstrings run (README-style usage must not rot)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from pystack.api.tcpinfo import SIZE, TCP_INFO_FIELDS, pack_tcp_info, unpack_tcp_info

MODULES = ["pystack.api", "pystack.api.testing"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_tcp_info_layout_is_linux_6x() -> None:
    assert SIZE == 248
    names = [n for n, _ in TCP_INFO_FIELDS]
    assert names[8:10] == ["rto", "ato"] and names[-1] == "total_rto_time"
    info = {"options": ["ts", "sack", "wscale"], "wscale": (7, 9), "rto": 204.0, "rtt": 1.5,
            "mss": 1448, "cwnd": 10, "ssthresh": 0x7FFFFFFF, "bytes_acked": 1 << 40,
            "ca_state": "RECOVERY", "snd_wnd": 65535}
    out = unpack_tcp_info(pack_tcp_info(info, state=1))
    assert out["state"] == 1 and out["ca_state"] == 3 and out["options"] == 7
    assert (out["snd_wscale"], out["rcv_wscale"]) == (7, 9)
    assert out["rto"] == 204000 and out["rtt"] == 1500  # microseconds
    assert out["snd_mss"] == 1448 and out["snd_cwnd"] == 10
    assert out["bytes_acked"] == 1 << 40 and out["snd_wnd"] == 65535
    assert unpack_tcp_info(b"\x01")["state"] == 1  # short input (older kernels) is padded
