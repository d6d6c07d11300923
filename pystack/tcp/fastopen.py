"""TCP Fast Open (RFC 7413): server cookies, the client's cookie cache, blackhole detection.

The model is Linux's ``net/ipv4/tcp_fastopen.c``; names of functions there are given next
to their counterparts here.

* Server cookies (RFC 7413 §4.1.2): SipHash-2-4 of the client and server IPv4 addresses
  under a 128-bit key, 8 bytes, exactly as Linux computes them, so a key written to
  ``net.ipv4.tcp_fastopen_key`` gives the same cookies in pystack and in the kernel.  A
  backup key (``"primary,backup"``) is accepted for checking while new cookies use the
  primary: keys can rotate without invalidating the cookies clients hold.
* The client cache (RFC 7413 §4.1.3): per destination address, the last cookie and the
  server's MSS (Linux keeps both in ``tcp_metrics``).
* The blackhole detector (Linux ``tcp_fastopen_active_disable``): after a Fast Open
  connection suffered three consecutive timeouts, or a FIN arrived without the data before
  it, active Fast Open pauses for ``tcp_fastopen_blackhole_timeout_sec`` seconds, doubling
  on each repeat up to 64 times (TCPFastOpenBlackhole); 0, Linux's default, disables it.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.constants import F_SEND_SYN
from pystack.tcp.state import TCP_FASTOPEN, TCP_MAXSEG, TCP_SYNCNT, TcpState
from pystack.wire.segment import ACK, FIN, SYN, TcpSegment
from pystack.xdp.syncookie import siphash24

if TYPE_CHECKING:
    from pystack.tcp.connection import Connection
    from pystack.tcp.engine import Listener, TcpEngine

__all__ = [
    "TFO_CLIENT_ENABLE",
    "TFO_SERVER_ENABLE",
    "TFO_CLIENT_NO_COOKIE",
    "TFO_SERVER_COOKIE_NOT_REQD",
    "TFO_SERVER_WO_SOCKOPT1",
    "COOKIE_SIZE",
    "ConnFastOpen",
    "FastOpen",
    "make_cookie",
    "parse_keys",
]

# net.ipv4.tcp_fastopen bits (tcp(7); Linux include/net/tcp.h TFO_*).
TFO_CLIENT_ENABLE = 0x1
TFO_SERVER_ENABLE = 0x2
TFO_CLIENT_NO_COOKIE = 0x4
TFO_SERVER_COOKIE_NOT_REQD = 0x200
TFO_SERVER_WO_SOCKOPT1 = 0x400

COOKIE_SIZE = 8  # Linux TCP_FASTOPEN_COOKIE_SIZE (RFC 7413 §4.1.1 allows 4..16)
MAX_TCP_OPTION_SPACE = 40  # reserved from the SYN's data room (Linux tcp_send_syn_data)
CACHE_SIZE = 1024  # destinations remembered (Linux bounds tcp_metrics similarly)
BLACKHOLE_MAX_SHIFT = 6  # the pause doubles up to 2**6 times (Linux)
MEMO_SIZE = 4096  # server cookies remembered per address pair (cleared when full)

_KEY_PART = r"(?:0[xX])?([0-9a-fA-F]{1,8})"
_KEY_RE = re.compile(rf"^{_KEY_PART}-{_KEY_PART}-{_KEY_PART}-{_KEY_PART}$")


def parse_keys(text: str) -> list[bytes]:
    """``net.ipv4.tcp_fastopen_key`` text -> 16-byte keys, primary first.

    Each key is four 32-bit hex words "%x-%x-%x-%x" (Linux ``sscanf_key``), optionally
    followed by ",backup".  A key's bytes are the words in little-endian order, as Linux
    stores them (``cpu_to_le32``) before reading them as the two SipHash key halves.
    Raises ValueError for anything else.
    """
    parts = text.strip().split(",")
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"invalid key {text!r} (expected xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx"
                         f"[,backup])")
    keys = []
    for part in parts:
        m = _KEY_RE.match(part.strip())
        if m is None:
            raise ValueError(f"invalid key {text!r} (expected xxxxxxxx-xxxxxxxx-xxxxxxxx-"
                             f"xxxxxxxx[,backup])")
        keys.append(struct.pack("<4I", *(int(g, 16) for g in m.groups())))
    return keys


def format_keys(keys: list[bytes]) -> str:
    """The text Linux prints for keys (``proc_tcp_fastopen_key``: "%08x-%08x-%08x-%08x")."""
    return ",".join("-".join(f"{w:08x}" for w in struct.unpack("<4I", k)) for k in keys)


def make_cookie(key: bytes, client_ip: int, server_ip: int) -> bytes:
    """The server cookie for a client (RFC 7413 §4.1.2): Linux
    ``__tcp_fastopen_cookie_gen_cipher``, SipHash-2-4 over the IPv4 source and destination
    addresses as they appear in the SYN, the 64-bit result in little-endian byte order."""
    msg = client_ip.to_bytes(4, "big") + server_ip.to_bytes(4, "big")
    return siphash24(key, msg).to_bytes(8, "little")


class ConnFastOpen:
    """Fast Open state of one connection (``Connection._fo``); absent on plain ones.

    Active side: ``syn_option`` is what the first SYN carries in its Fast Open option
    (a cookie, b"" to request one, None for no option), ``data_ok`` whether it may carry
    data, ``space`` how much; ``syn_fastopen``/``syn_data``/``data_acked`` record what
    happened (Linux tp->syn_fastopen, syn_data, syn_data_acked), ``check`` that this
    connection opened after a blackhole pause ended (syn_fastopen_ch).
    Passive side: ``grant`` is the cookie the SYN-ACK carries; ``child`` marks a
    connection created by Fast Open, ``listener`` the listener whose Fast Open queue
    counts it until it leaves SYN-RECEIVED.
    """

    __slots__ = ("active", "syn_option", "data_ok", "space", "defer", "syn_fastopen",
                 "syn_data", "data_acked", "check", "grant", "child", "listener")

    def __init__(self, active: bool) -> None:
        self.active = active
        self.syn_option: bytes | None = None
        self.data_ok = False
        self.space = 0
        self.defer = False
        self.syn_fastopen = False
        self.syn_data = 0
        self.data_acked = False
        self.check = False
        self.grant: bytes | None = None
        self.child = False
        self.listener: Listener | None = None


class _CacheEntry:
    __slots__ = ("cookie", "mss", "syn_loss", "last_syn_loss")

    def __init__(self) -> None:
        self.cookie: bytes | None = None
        self.mss = 0
        self.syn_loss = 0
        self.last_syn_loss = 0.0


class FastOpen:
    """Engine-wide Fast Open state: keys, the client cookie cache, the blackhole pause."""

    def __init__(self, engine: TcpEngine) -> None:
        self.engine = engine
        self._cache: OrderedDict[int, _CacheEntry] = OrderedDict()
        self._key_text: str | None = None
        self._keys: list[bytes] = []
        self._random_key: bytes | None = None
        self.disable_times = 0  # Linux net->ipv4.tfo_active_disable_times
        self.disable_stamp = 0.0  # and tfo_active_disable_stamp
        self._memo: dict[tuple[int, int], bytes] = {}  # (client, server) -> primary cookie
        self._memo_key: bytes | None = None  # the primary key the memo was made with

    # =================================================================================
    # Keys and cookies (server)
    # =================================================================================
    def keys(self) -> list[bytes]:
        """Primary (and backup) key; a random primary when none was configured (Linux
        ``tcp_fastopen_init_key_once``)."""
        text = self.engine.settings.tcp_fastopen_key
        if text != self._key_text:
            self._key_text = text
            if text:
                self._keys = parse_keys(text)
            else:
                if self._random_key is None:
                    self._random_key = os.urandom(16)
                self._keys = [self._random_key]
        return self._keys

    def cookie_for(self, client_ip: int, server_ip: int) -> bytes:
        """A fresh cookie under the primary key (Linux ``tcp_fastopen_cookie_gen``).
        Remembered per address pair (pure-Python SipHash costs ~9 µs; a client opening
        many connections asks again and again), forgotten when the keys change."""
        keys = self.keys()
        memo = self._memo
        if self._memo_key is not keys[0]:
            memo.clear()
            self._memo_key = keys[0]
        pair = (client_ip, server_ip)
        c = memo.get(pair)
        if c is None:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            c = memo[pair] = make_cookie(keys[0], client_ip, server_ip)
        return c

    def check_cookie(self, cookie: bytes, client_ip: int, server_ip: int) -> int:
        """0 if invalid, else 1 + the index of the key that made it (Linux
        ``tcp_fastopen_cookie_gen_check``)."""
        if self.cookie_for(client_ip, server_ip) == cookie:
            return 1
        for i, key in enumerate(self.keys()[1:]):
            if make_cookie(key, client_ip, server_ip) == cookie:
                return i + 2
        return 0

    # =================================================================================
    # Server: a SYN at a listener (Linux tcp_try_fastopen)
    # =================================================================================
    def max_qlen(self, lst: Listener) -> int:
        return int(lst._opt(TCP_FASTOPEN, 0))

    def on_listen(self, lst: Listener) -> None:
        """tcp_fastopen 0x400 (with 0x2): Fast Open on every listener that did not set
        TCP_FASTOPEN, its queue as long as the backlog (Linux ``inet_listen``)."""
        s = self.engine.settings.tcp_fastopen
        both = TFO_SERVER_ENABLE | TFO_SERVER_WO_SOCKOPT1
        if s & both == both and not self.max_qlen(lst):
            lst._set_opt(TCP_FASTOPEN, lst.backlog)

    def try_passive(self, lst: Listener, seg: TcpSegment) -> tuple[bool, bytes | None]:
        """Decide on a SYN's Fast Open option and data (RFC 7413 §4.2.2, Linux
        ``tcp_try_fastopen``).  Returns (accept the SYN's data now, cookie to grant)."""
        eng = self.engine
        mib = eng.mib
        foc = seg.options.fastopen_cookie
        syn_data = bool(seg.payload) or bool(seg.flags & FIN)
        if foc is not None and not foc:
            mib["TCPFastOpenCookieReqd"] += 1
        s = eng.settings.tcp_fastopen
        if not (s & TFO_SERVER_ENABLE and (syn_data or foc is not None)):
            return False, None
        if not self._queue_check(lst):
            return False, None
        if s & TFO_SERVER_COOKIE_NOT_REQD:
            mib["TCPFastOpenPassive"] += 1
            return True, None
        if foc is None:
            return False, None  # data without a cookie option: ignored, no cookie
        valid = self.cookie_for(seg.src_ip, seg.dst_ip)
        if not foc:
            return False, valid  # RFC 7413 §4.1.2: cookie request -> grant one
        ret = self.check_cookie(foc, seg.src_ip, seg.dst_ip)
        if not ret:
            # §4.2.2: invalid cookie -> drop the data, ACK only the SYN, send a new cookie.
            mib["TCPFastOpenPassiveFail"] += 1
            return False, valid
        mib["TCPFastOpenPassive"] += 1
        if ret == 2:
            # Made with the backup key: accepted, and the client gets the primary's cookie.
            mib["TCPFastOpenPassiveAltKey"] += 1
            return True, valid
        return True, None

    def _queue_check(self, lst: Listener) -> bool:
        """Linux ``tcp_fastopen_queue_check``: TCP_FASTOPEN bounds the children still in
        SYN-RECEIVED that were created by Fast Open (tcp(7))."""
        max_qlen = self.max_qlen(lst)
        if not max_qlen:
            return False
        if lst._fo_qlen >= max_qlen:
            self.engine.mib["TCPFastOpenListenOverflow"] += 1
            return False
        return True

    # =================================================================================
    # Client: cookie cache and the first SYN (Linux tcp_fastopen_cookie_check)
    # =================================================================================
    def cookie(self, remote_ip: int) -> bytes | None:
        """The cached cookie for a destination, if any."""
        e = self._cache.get(remote_ip)
        return e.cookie if e is not None else None

    def cached_mss(self, remote_ip: int) -> int:
        e = self._cache.get(remote_ip)
        return e.mss if e is not None else 0

    def forget(self, remote_ip: int | None = None) -> None:
        """Drop one destination's (or every) cached cookie and MSS."""
        if remote_ip is None:
            self._cache.clear()
        else:
            self._cache.pop(remote_ip, None)

    def _entry(self, remote_ip: int) -> _CacheEntry:
        e = self._cache.get(remote_ip)
        if e is None:
            e = self._cache[remote_ip] = _CacheEntry()
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(remote_ip)
        return e

    def prepare_active(self, c: Connection, now: float) -> ConnFastOpen:
        """What the first SYN of an active Fast Open carries (Linux
        ``tcp_fastopen_cookie_check`` and ``tcp_send_syn_data``)."""
        fo = ConnFastOpen(active=True)
        s = self.engine.settings.tcp_fastopen
        rip = c.four_tuple.remote_ip
        cookie = self.cookie(rip)
        if self.should_disable(fo, now):
            fo.syn_option = None  # paused: a plain SYN, no option at all
        elif s & TFO_CLIENT_NO_COOKIE:
            fo.data_ok = True  # 0x4: data without any option
        elif cookie:
            fo.syn_option = cookie
            fo.data_ok = True
        else:
            fo.syn_option = b""  # RFC 7413 §4.1.3: request a cookie
        # The SYN's data room: the MSS the server had (else ours), bounded by the path and
        # TCP_MAXSEG, less the largest option space (Linux reserves it for middleboxes).
        mss = min(self.cached_mss(rip) or c._advmss(), self.engine.mtu - 40)
        user = int(c._opt(TCP_MAXSEG, 0))
        if user:
            mss = min(mss, user)
        fo.space = max(0, mss - MAX_TCP_OPTION_SPACE)
        return fo

    def syn_parts(self, c: Connection, flags: int) -> tuple[bytes | memoryview, bytes | None]:
        """Data and Fast Open option of a connection's first SYN or SYN-ACK.

        SYN: the cookie (or b"" request, or None) and as much queued data as the SYN's
        room allows (Linux ``tcp_send_syn_data``).  SYN-ACK: the cookie granted, on the
        first transmission only (Linux sends none on retransmitted SYN-ACKs)."""
        fo = c._fo
        assert fo is not None
        if flags & ACK:
            cookie, fo.grant = fo.grant, None
            return b"", cookie
        payload: bytes | memoryview = b""
        if fo.data_ok:
            n = min(sq.sub(c._write_seq, sq.add(c.iss, 1)), fo.space)
            sb = c._sndbuf
            if n > 0 and sb is not None:
                payload = sb.view(0, n)
        fo.syn_fastopen = fo.syn_option is not None
        fo.syn_data = len(payload)
        return payload, fo.syn_option

    def on_synack(self, c: Connection, seg: TcpSegment) -> None:
        """The SYN-ACK of an active Fast Open (RFC 7413 §4.2.1, Linux
        ``tcp_rcv_fastopen_synack``), after SND.UNA has moved: cache the cookie and the
        server's MSS; SYN data left unacknowledged is retransmitted at once."""
        fo = c._fo
        assert fo is not None
        mib = self.engine.mib
        cookie = seg.options.fastopen_cookie if fo.syn_fastopen else None  # unsolicited
        unacked = c.snd_una != c.snd_nxt
        e = self._entry(c.four_tuple.remote_ip)
        if seg.options.mss:
            e.mss = seg.options.mss
        if cookie:
            e.cookie = cookie
        if fo.syn_fastopen and c.total_retrans and not cookie and unacked:
            # The SYN timed out and the SYN-ACK neither has a cookie nor acknowledges data:
            # the server presumably saw only the retransmitted (plain) SYN.
            e.syn_loss += 1
            e.last_syn_loss = self.engine._now
        else:
            e.syn_loss = 0
        if fo.syn_data and unacked:
            # RFC 7413 §4.2.1: the server did not take the SYN's data; send it again now.
            # Nothing else was sent yet, so SND.NXT simply goes back and the data leaves as
            # the first segment; counted as the retransmission it is (Linux
            # tcp_non_congestion_loss_retransmit: cwnd untouched).
            c.snd_nxt = c.snd_una
            mib["RetransSegs"] += 1
            c.total_retrans += 1
            mib["TCPFastOpenActiveFail"] += 1
            return
        if fo.syn_data:
            fo.data_acked = True
            mib["TCPFastOpenActive"] += 1

    def child_rto(self, c: Connection, now: float) -> None:
        """Retransmission timer of a Fast Open child whose SYN-ACK is unacknowledged
        (Linux ``tcp_fastopen_synack_timer``): resend the SYN-ACK, whatever the state (the
        application may have closed it already: FIN-WAIT-1), up to tcp_synack_retries + 1
        times (TCP_SYNCNT if set), then fail with ETIMEDOUT like any accepted socket."""
        t = c._t_rtx
        if t is None or t > now or c.snd_una != c.iss or c.state == TcpState.CLOSED:
            return
        c._t_rtx = None
        eng = self.engine
        limit = int(c._opt(TCP_SYNCNT, 0)) or eng.settings.tcp_synack_retries + 1
        if c._retransmits >= limit:
            c._fail(errno.ETIMEDOUT)
            return
        c._retransmits += 1
        c.rtt.on_timeout()
        eng.mib["TCPSynRetrans"] += 1
        if c.state == TcpState.SYN_RECEIVED:
            c._f |= F_SEND_SYN  # the usual output path sends it
        else:
            c._send_syn(now, eng._tx, SYN | ACK)
        c._t_rtx = now + c.rtt.rto

    # =================================================================================
    # Blackhole detection (Linux tcp_fastopen_active_*)
    # =================================================================================
    def should_disable(self, fo: ConnFastOpen, now: float) -> bool:
        """Active Fast Open is paused (``tcp_fastopen_active_should_disable``)."""
        timeout = self.engine.settings.tcp_fastopen_blackhole_timeout_sec
        if not timeout or not self.disable_times:
            return False
        mult = 1 << min(self.disable_times - 1, BLACKHOLE_MAX_SHIFT)
        if now < self.disable_stamp + mult * timeout:
            return True
        fo.check = True  # first connection after the pause: may clear the count
        return False

    def disable(self, now: float) -> None:
        """Pause active Fast Open (``tcp_fastopen_active_disable``)."""
        if not self.engine.settings.tcp_fastopen_blackhole_timeout_sec:
            return
        self.disable_stamp = now
        self.disable_times += 1
        self.engine.mib["TCPFastOpenBlackhole"] += 1

    def after_rto(self, c: Connection, timeouts: int, expired: bool, now: float) -> None:
        """``tcp_fastopen_active_detect_blackhole``, at each retransmission timeout:
        middleboxes may black-hole Fast Open connections during or after the handshake,
        so pause it after the third consecutive timeout, or when the connection gave up
        sooner."""
        fo = c._fo
        if fo is None or not fo.active:
            return
        if (fo.syn_fastopen or fo.syn_data or fo.data_acked) and (
            timeouts == 2 or (timeouts < 2 and expired)
        ):
            self.disable(now)
            self.engine.mib["TCPFastOpenActiveFail"] += 1

    def on_remove(self, c: Connection) -> None:
        """``tcp_fastopen_active_disable_ofo_check`` when a connection goes away: a FIN
        with nothing before it ever arriving means the data was black-holed; data received
        on the first connection after a pause clears the pause count."""
        fo = c._fo
        if fo is None or not fo.active or not fo.syn_fastopen:
            return
        if not c.data_segs_in:
            rb = c._rcvbuf
            if c._fin_seq is not None and (rb is None or not rb.ooo):
                self.disable(self.engine._now)
        elif fo.check and self.disable_times:
            self.disable_times = 0


def check_connect_allowed(engine: TcpEngine) -> None:
    """MSG_FASTOPEN needs ``tcp_fastopen`` & 0x1 (Linux ``tcp_sendmsg_fastopen``)."""
    if not engine.settings.tcp_fastopen & TFO_CLIENT_ENABLE:
        raise OSError(errno.EOPNOTSUPP, "Fast Open client disabled (net.ipv4.tcp_fastopen)")
