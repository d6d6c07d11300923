"""Property: over any seeded lossy link both byte streams arrive exactly and both ends
close cleanly, with a deadline on the simulated clock."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState

A = 0xC6120001
B = 0xC6120002


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0, 0.15),
    dup=st.floats(0, 0.1),
    reorder=st.floats(0, 0.2),
    corrupt=st.floats(0, 0.1),
    up_len=st.integers(0, 40_000),
    down_len=st.integers(0, 40_000),
    options=st.booleans(),
    nodelay=st.booleans(),
)
def test_streams_delivered_exactly_and_closed_cleanly(
    seed: int, drop: float, dup: float, reorder: float, corrupt: float,
    up_len: int, down_len: int, options: bool, nodelay: bool,
) -> None:
    link = LinkConfig(delay=0.01, jitter=0.002, drop=drop, duplicate=dup, reorder=reorder,
                      reorder_delay=0.015, corrupt=corrupt)
    net = SimNetwork(seed=seed, default=link)
    s = Settings()
    if not options:
        s.tcp_sack = s.tcp_timestamps = s.tcp_window_scaling = 0
    a = TcpEngine(s, secret=seed.to_bytes(4, "big") * 4)
    b = TcpEngine(s, secret=(seed ^ 0xFFFF).to_bytes(4, "big") * 4)
    net.add_host(A, a)
    net.add_host(B, b)
    rng = random.Random(seed)
    up = rng.randbytes(up_len)
    down = rng.randbytes(down_len)
    opts = {"TCP_NODELAY": 1} if nodelay else None
    servers = accept_into(b.listen(0, 80), down)
    client = StreamApp(a.connect(A, B, 80, options=opts), up)

    def finished() -> bool:
        return client.done and len(servers) == 1 and servers[0].done

    assert net.run(until=3000, stop=finished), (client.error, client.conn)
    server = servers[0]
    assert client.error == 0 and server.error == 0
    assert bytes(server.received) == up
    assert bytes(client.received) == down
    # Both ends finish the close handshake: nothing left but (at most) TIME-WAIT.
    net.run(until=net.now + 3000,
            stop=lambda: not a.connections and not b.connections)
    assert client.conn.error == 0 and server.conn.error == 0
    assert client.conn.state == TcpState.CLOSED and server.conn.state == TcpState.CLOSED
