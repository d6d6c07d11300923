"""The XDP program run frame by frame in the kernel (BPF_PROG_TEST_RUN): random and mutated
frames never make it misbehave, every frame is counted under exactly one action, and it
never redirects a frame the control plane's parser would refuse."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystack.io.xsk import XskSocket
from pystack.wire.errors import WireError
from pystack.wire.frame import build_frame, parse_frame
from pystack.wire.segment import ACK, PSH, SYN, TcpOptions, TcpSegment
from pystack.xdp.program import test_run as xdp_run

OWNED = 7777
STACK_IP = 0xC6120001
PEER_IP = 0xC6120002
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


@pytest.fixture(scope="module")
def armed(program):
    """The session's program with an AF_XDP socket in its map and OWNED owned."""
    from pystack.testbed import Testbed

    bed = Testbed.create()
    try:
        with bed.enter("stack"):
            xsk = XskSocket(bed.stack.ifname, frames=1024, ring_size=256)
        program.set_xsk(0, xsk.fd)
        program.own_port(OWNED)
        yield program
    finally:
        program.disown_port(OWNED)
        xsk.close()
        bed.destroy()


def frame(dport: int = OWNED, payload: bytes = b"", flags: int = ACK | PSH,
          opts: TcpOptions | None = None) -> bytes:
    seg = TcpSegment(PEER_IP, STACK_IP, 40000, dport, 1000, 2000, flags, 512,
                     options=opts or TcpOptions(), payload=payload)
    out = build_frame(seg, MAC_B, MAC_A)
    assert isinstance(out, bytes)
    return out


def run_counted(prog, frames: list[bytes]) -> list[str]:
    a0, d0 = prog.actions(), prog.drops()
    acts = [xdp_run(prog.prog_fd, f) for f in frames]
    a1, d1 = prog.actions(), prog.drops()
    da = {k: a1[k] - a0[k] for k in a1}
    assert sum(da.values()) == len(frames), f"frames not counted exactly once: {da}"
    for name in ("pass", "drop", "redirect"):
        assert da[name] == acts.count(name), (name, da, acts)
    assert sum(d1[k] - d0[k] for k in d1) == da["drop"], "a drop without a reason"
    return acts


def test_valid_owned_segments_are_redirected_others_passed(armed):
    frames = [
        frame(flags=SYN, opts=TcpOptions(mss=1460, sack_permitted=True, wscale=7,
                                         timestamp=(1, 0))),
        frame(payload=b"x" * 1460),
        frame(payload=b"y" * 1),  # odd length: the checksum's padded last byte
        frame(payload=b"z" * 3),
        frame(dport=OWNED + 1, payload=b"kernel's"),
    ]
    assert run_counted(armed, frames) == ["redirect"] * 4 + ["pass"]


def test_non_tcp_and_non_ip_go_to_the_kernel(armed):
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether

    frames = [bytes(Ether() / ARP()), bytes(Ether() / IP() / ICMP()),
              bytes(Ether() / IP(dst="198.18.0.1") / UDP(dport=OWNED)),
              bytes(Ether() / IPv6() / (b"\0" * 40))]
    assert run_counted(armed, frames) == ["pass"] * 4


def _python_verdict(f: bytes) -> str | None:
    """What the control plane's parser says: None = accepted, else the WireError reason."""
    try:
        parse_frame(f, verify_checksums=True)
    except WireError as e:
        return e.reason
    return None


def _owned(f: bytes) -> bool:
    return (len(f) >= 38 and f[12:14] == b"\x08\x00" and f[23] == 6
            and int.from_bytes(f[36:38], "big") == OWNED)


def _check_agreement(frames: list[bytes], acts: list[str]) -> None:
    for f, act in zip(frames, acts, strict=True):
        verdict = _python_verdict(f)
        if act == "redirect":
            # XDP does not parse TCP options; everything else it checks, Python agrees with.
            assert verdict in (None, "bad_option"), (verdict, f.hex())
        elif verdict is None and _owned(f):
            assert act == "redirect", f"valid owned frame got {act}: {f.hex()}"


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=14, max_size=1600))
def test_random_bytes(armed, data: bytes):
    acts = run_counted(armed, [data])
    assert acts[0] in ("pass", "drop", "redirect")
    _check_agreement([data], acts)


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=1460), cut=st.integers(0, 1600),
       flips=st.lists(st.tuples(st.integers(0, 1599), st.integers(1, 255)), max_size=3))
def test_mutated_owned_frames(armed, payload: bytes, cut: int, flips: list[tuple[int, int]]):
    f = bytearray(frame(payload=payload, opts=TcpOptions(timestamp=(5, 6))))
    for pos, mask in flips:
        if pos < len(f):
            f[pos] ^= mask
    whole = cut >= len(f)
    if not whole:
        f = f[: max(14, cut)]
    acts = run_counted(armed, [bytes(f)])
    _check_agreement([bytes(f)], acts)
    if not flips and whole:
        assert acts == ["redirect"]
