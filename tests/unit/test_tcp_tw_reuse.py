"""tcp_tw_reuse: connect() taking over a TIME-WAIT four-tuple (Linux tcp_twsk_unique,
__inet_check_established): 0 off, 1 on, 2 loopback only; timestamps required and
TS.Recent more than 1 s old; the new ISN is the old SND.NXT + 65537; TWRecycled."""

import errno

import pytest

from pystack.tcp import seq as sq
from pystack.tcp.connection import Connection
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.tcp.twreuse import TW_REUSE_DELAY, is_loopback
from pystack.wire.segment import ACK, FIN, SYN, TcpOptions, TcpSegment

CLIENT = 0xC6120001  # 198.18.0.1
SERVER = 0xC6120002  # 198.18.0.2
LO_CLIENT = 0x7F000001  # 127.0.0.1
LO_SERVER = 0x7F000002  # 127.0.0.2
SPORT = 80
PORT = 61000  # the only ephemeral port (ip_local_port_range "61000 61000")
ISN = 1000
PEER_ISN = 5000


class Client:
    """One engine as the client; the test is the server and answers by hand."""

    def __init__(self, lip: int = CLIENT, rip: int = SERVER, *, ts: bool = True,
                 isn: int = ISN, ports: str = f"{PORT} {PORT}", **sysctls: str) -> None:
        s = Settings()
        s.tcp_timestamps = 1 if ts else 0
        s.set("ip_local_port_range", ports)
        for k, v in sysctls.items():
            s.set(k, v)
        self.eng = TcpEngine(s, secret=bytes(16), isn=lambda t, now: isn)
        self.lip, self.rip = lip, rip
        self.now = 0.0
        self.tsval = 100  # the server's TSval clock

    def poll(self) -> list[TcpSegment]:
        return self.eng.poll(self.now)

    def send(self, c: Connection, flags: int, seq: int, ack: int, *, mss: bool = False,
             tsecr: int = 0) -> None:
        self.tsval += 1
        ts = (self.tsval, tsecr) if self.eng.settings.tcp_timestamps else None
        opts = TcpOptions(mss=1460 if mss else None, timestamp=ts)
        self.eng.input(TcpSegment(self.rip, self.lip, SPORT, c.local_port, seq & sq.MASK,
                                  ack & sq.MASK, flags, 65535, options=opts), self.now)

    def connect(self, port: int | None = None) -> tuple[Connection, TcpSegment]:
        c = self.eng.connect(self.lip, self.rip, SPORT, local_port=port, now=self.now)
        (syn,) = self.poll()
        assert syn.flags == SYN
        return c, syn

    def time_wait(self, port: int | None = None) -> Connection:
        """Open, exchange nothing, close first: TIME-WAIT with SND.NXT = ISS + 2."""
        c, syn = self.connect(port)
        tsecr = syn.options.timestamp[0] if syn.options.timestamp else 0
        self.send(c, SYN | ACK, PEER_ISN, c.iss + 1, mss=True, tsecr=tsecr)
        self.poll()
        c.close()
        (fin,) = self.poll()
        assert fin.flags & FIN
        self.send(c, FIN | ACK, PEER_ISN + 1, c.iss + 2)
        self.poll()
        assert c.state == TcpState.TIME_WAIT
        return c


def test_default_is_linux_2() -> None:
    assert Settings().tcp_tw_reuse == 2
    assert is_loopback(LO_CLIENT) and is_loopback(0x7FFFFFFF) and not is_loopback(CLIENT)


# =====================================================================================
# Ephemeral ports: tcp_tw_reuse decides
# =====================================================================================
@pytest.mark.parametrize(("reuse", "loopback", "taken"), [
    ("0", False, False),
    ("0", True, False),
    ("1", False, True),
    ("1", True, True),
    ("2", False, False),
    ("2", True, True),
])
def test_ephemeral_port_in_time_wait(reuse: str, loopback: bool, taken: bool) -> None:
    lip, rip = (LO_CLIENT, LO_SERVER) if loopback else (CLIENT, SERVER)
    cl = Client(lip, rip, tcp_tw_reuse=reuse)
    old = cl.time_wait()
    assert old.local_port == PORT
    cl.now += TW_REUSE_DELAY + 0.5
    if not taken:
        with pytest.raises(OSError) as ei:
            cl.eng.connect(lip, rip, SPORT, now=cl.now)
        assert ei.value.errno == errno.EADDRNOTAVAIL
        assert cl.eng.connections[old.four_tuple] is old
        assert cl.eng.mib["TWRecycled"] == 0
        return
    c, syn = cl.connect()
    assert c.local_port == PORT and cl.eng.connections[c.four_tuple] is c
    assert syn.seq == sq.add(old.snd_nxt, 65535 + 2)
    assert cl.eng.mib["TWRecycled"] == 1
    assert old.state == TcpState.CLOSED and cl.eng.tw_count == 0
    assert cl.eng.mib["TW"] == 0  # taken over, not a TIME-WAIT expiry


def test_one_loopback_address_is_enough_for_2() -> None:
    cl = Client(LO_CLIENT, SERVER, tcp_tw_reuse="2")
    cl.time_wait()
    cl.now += 2
    c, _ = cl.connect()
    assert c.local_port == PORT and cl.eng.mib["TWRecycled"] == 1


def test_ts_recent_must_be_more_than_one_second_old() -> None:
    cl = Client(tcp_tw_reuse="1")
    old = cl.time_wait()
    age = old.ts_recent_age
    assert age is not None
    cl.now = age + TW_REUSE_DELAY
    with pytest.raises(OSError):
        cl.eng.connect(CLIENT, SERVER, SPORT, now=cl.now)
    cl.now = age + TW_REUSE_DELAY + 0.001
    c, _ = cl.connect()
    assert c.four_tuple == old.four_tuple


def test_no_timestamps_no_reuse() -> None:
    cl = Client(ts=False, tcp_tw_reuse="1")
    old = cl.time_wait()
    assert old.ts_recent_age is None
    cl.now += 10
    with pytest.raises(OSError) as ei:
        cl.eng.connect(CLIENT, SERVER, SPORT, now=cl.now)
    assert ei.value.errno == errno.EADDRNOTAVAIL
    # ...and with an explicit port either.
    with pytest.raises(OSError) as ei:
        cl.eng.connect(CLIENT, SERVER, SPORT, local_port=PORT, now=cl.now)
    assert ei.value.errno == errno.EADDRINUSE


def test_ephemeral_selection_passes_over_a_time_wait_it_may_not_take() -> None:
    cl = Client(tcp_tw_reuse="0", ports=f"{PORT} {PORT + 1}")
    old = cl.time_wait()
    cl.now += 5
    c, _ = cl.connect()
    assert c.local_port != old.local_port and cl.eng.mib["TWRecycled"] == 0
    assert cl.eng.connections[old.four_tuple] is old


# =====================================================================================
# An explicit local port (bind + connect): Linux checks only the timestamps
# =====================================================================================
def test_explicit_port_takes_over_with_timestamps_whatever_the_setting() -> None:
    cl = Client(tcp_tw_reuse="0")
    old = cl.time_wait(port=4000)
    c, syn = cl.connect(port=4000)  # no delay needed either (twp == NULL in Linux)
    assert c.four_tuple == old.four_tuple
    assert syn.seq == sq.add(old.snd_nxt, 65537)
    assert cl.eng.mib["TWRecycled"] == 1


def test_live_connection_is_never_taken_over() -> None:
    cl = Client(tcp_tw_reuse="1")
    c, _ = cl.connect(port=4000)
    cl.now += 5
    with pytest.raises(OSError) as ei:
        cl.eng.connect(CLIENT, SERVER, SPORT, local_port=4000, now=cl.now)
    assert ei.value.errno == errno.EADDRINUSE
    assert cl.eng.connections[c.four_tuple] is c


# =====================================================================================
# The reused connection
# =====================================================================================
def test_reused_connection_inherits_ts_recent_and_completes() -> None:
    cl = Client(LO_CLIENT, LO_SERVER)  # default 2, loopback
    old = cl.time_wait()
    cl.now += 3
    c, syn = cl.connect()
    assert (c.ts_recent, c.ts_recent_age) == (old.ts_recent, old.ts_recent_age)
    assert c.iss == sq.add(old.snd_nxt, 65537) and c.iss == ISN + 2 + 65537
    cl.send(c, SYN | ACK, PEER_ISN + 100_000, c.iss + 1, mss=True,
            tsecr=syn.options.timestamp[0])
    (ack,) = cl.poll()
    assert c.state == TcpState.ESTABLISHED and ack.ack == PEER_ISN + 100_001
    assert c.ts_recent == cl.tsval  # the SYN-ACK's TSval replaces the inherited one


def test_new_isn_wraps_past_zero_to_one() -> None:
    # SND.NXT + 65537 == 2**32: Linux never uses 0 (tcp_twsk_unique).
    cl = Client(LO_CLIENT, LO_SERVER, isn=(1 << 32) - 65537 - 2)
    old = cl.time_wait()
    assert sq.add(old.snd_nxt, 65537) == 0
    cl.now += 3
    c, syn = cl.connect()
    assert c.iss == 1 and syn.seq == 1


def test_crossing_syn_older_than_inherited_ts_recent_is_dropped() -> None:
    # RFC 7323 §5.3 PAWS, as Linux applies it to a SYN crossing ours in SYN-SENT.
    cl = Client(LO_CLIENT, LO_SERVER)
    old = cl.time_wait()
    cl.now += 3
    c, _ = cl.connect()
    cl.tsval = old.ts_recent - 10  # the next segment's TSval is older than TS.Recent
    cl.send(c, SYN, PEER_ISN + 100_000, 0, mss=True)
    assert cl.poll() == [] and c.state == TcpState.SYN_SENT
    cl.tsval = old.ts_recent + 10
    cl.send(c, SYN, PEER_ISN + 100_000, 0, mss=True)
    (synack,) = cl.poll()
    assert c.state == TcpState.SYN_RECEIVED and synack.flags == SYN | ACK
