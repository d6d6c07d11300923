"""AF_XDP frame accounting over a real veth: a peer-side AF_XDP generator sends frames to
an owned port, the stack side receives them and echoes every other batch back."""

from __future__ import annotations

import pytest

from pystack.io.xsk import XskSocket
from pystack.wire.frame import build_frame
from pystack.wire.segment import ACK, RST, TcpSegment, ip_to_int

PORT = 7777
TOTAL = 1_000_000
BATCH = 64


@pytest.fixture
def pair(bed, program):
    """(peer generator socket, stack socket) with the ingress program steering PORT."""
    with bed.enter("stack"):
        stack = XskSocket(bed.stack.ifname, frames=4096, ring_size=1024, batch=BATCH)
        program.set_xsk(0, stack.fd)
        ifindex = program.attach(bed.stack.ifname)
    program.own_port(PORT)
    with bed.enter("peer"):
        peer = XskSocket(bed.peer.ifname, frames=4096, ring_size=1024, batch=BATCH)
    try:
        yield peer, stack
    finally:
        program.disown_port(PORT)
        program.detach(ifindex)
        peer.close()
        stack.close()


def test_a_million_frames_leave_every_frame_accounted_for(bed, pair):
    peer, stack = pair
    # RST segments: the peer kernel ignores the echoes, whatever arrives there.
    seg = TcpSegment(ip_to_int(bed.peer.ip), ip_to_int(bed.stack.ip), 40000, PORT, 1, 1,
                     RST | ACK, 0,
                     payload=b"p" * 18)
    template = build_frame(seg, bytes.fromhex(bed.peer.mac.replace(":", "")),
                           bytes.fromhex(bed.stack.mac.replace(":", "")))
    assert isinstance(template, bytes)
    n_t = len(template)

    sent = received = echoed = 0
    batches = 0
    while sent < TOTAL:
        descs, k = peer.alloc(min(BATCH, TOTAL - sent))
        assert k > 0, f"peer ran out of frames: {peer.stats()}"
        for i in range(k):
            peer.buffer(descs[i])[:n_t] = template
            descs[i].len = n_t
        q = peer.transmit(descs, k, checksum=False)
        if q < k:
            peer.release(descs + q, k - q)
        sent += q
        # Receive exactly what was sent: the veth delivers in order and nothing is dropped
        # while the rings have room, so a count mismatch is a real loss.
        while received < sent:
            assert stack.wait(5.0), f"frames lost: sent {sent}, received {received}"
            n = stack.recv()
            received += n
            if batches % 2:
                stack.reflect(stack.rx_descs, n)
                t = stack.transmit(stack.rx_descs, n, checksum=False)
                echoed += t
                if t < n:
                    stack.release(stack.rx_descs + t, n - t)
            else:
                assert stack.release(stack.rx_descs, n) == n
            batches += 1

    for s in (peer, stack):
        s.complete()
        s.check()
    st = stack.stats()
    assert received == sent == TOTAL
    assert st.rx_frames == TOTAL and st.bad_release == 0
    assert st.app == 0, "the application still holds frames"
    assert st.free + st.fill + st.tx == st.frames
    assert echoed > TOTAL // 3
    ps = peer.stats()
    assert ps.app == 0 and ps.free + ps.fill + ps.tx == ps.frames


def test_double_release_and_foreign_frames_are_refused(bed, pair):
    peer, _stack = pair
    descs, k = peer.alloc(4)
    assert k == 4
    assert peer.release(descs, 4) == 4
    assert peer.release(descs, 4) == 0, "a frame was released twice"
    bogus, _ = peer.alloc(0)
    st = peer.stats()
    assert st.bad_release == 4 and st.app == 0
    peer.check()
    # A transmit of frames the application does not hold queues nothing.
    assert peer.transmit(descs, 4) == 0
    peer.check()
    del bogus
