/* Definitions shared by the XDP programs (bpf/) and the control plane (pystack/xdp/abi.py
 * mirrors every value here; tests/unit/test_xdp_abi.py checks that they agree). */
#ifndef PYSTACK_XDP_H
#define PYSTACK_XDP_H

#define PYSTACK_MAX_QUEUES 64

/* Actions counted per CPU, by index into the `action_count` array. */
#define ACT_ABORTED  0
#define ACT_DROP     1
#define ACT_PASS     2
#define ACT_TX       3
#define ACT_REDIRECT 4
#define ACT_MAX      5

/* Drop reasons, by index into the `drop_count` array. */
#define DROP_TRUNCATED   0  /* a header runs past the frame */
#define DROP_BAD_VERSION 1  /* ethertype IPv4 but version != 4 */
#define DROP_BAD_IHL     2  /* IHL < 5 */
#define DROP_BAD_TOTLEN  3  /* IP total length < header or > frame */
#define DROP_BAD_DOFF    4  /* TCP data offset < 5 or past the IP payload */
#define DROP_IP_CSUM     5  /* owned flow, bad IPv4 header checksum */
#define DROP_TCP_CSUM    6  /* owned flow, bad TCP checksum */
#define DROP_FRAGMENT    7  /* IP fragment addressed to an owned port */
#define DROP_NO_XSK      8  /* owned flow but no AF_XDP socket on this rx queue */
#define DROP_SYNCOOKIE   9  /* ACK to a listener in cookie mode whose cookie does not check */
#define DROP_MAX         10

/* Metadata the program writes in front of every frame it redirects (bpf_xdp_adjust_meta).
 * User space finds it at frame_addr - sizeof(struct pystack_meta). */
#define PYSTACK_META_MAGIC 0x5053u  /* "PS" */
#define META_CSUM_OK       0x0001u  /* IPv4 header and TCP checksums verified */
#define META_COOKIE_OK     0x0002u  /* an ACK completing a SYN-cookie handshake: the cookie
                                     * (ack - 1) checked; `syncookie` holds what it encoded */

struct pystack_meta {
    __u16 flags;
    __u16 magic;
    __u32 syncookie;  /* with META_COOKIE_OK: the options the handshake agreed (below), else 0 */
};

/* pystack_meta.syncookie (user space: ps_desc.syncookie, pystack.xdp.abi.decode_cookie_info).
 *   bits  0..15  MSS the client may send (msstab[index from the cookie])
 *   bits 16..19  the client's window scale shift (from its SYN: it scales the windows
 *                the client advertises to us, Linux's snd_wscale);
 *                SC_WSCALE_NONE (0xf) = no window scaling on this connection
 *   bit  20      SACK permitted
 *   bit  21      timestamps: the ACK carried a timestamp option (TSecr = our SYN-ACK's TSval)
 *   bit  22      ECN negotiated (RFC 3168 ECN-setup SYN, and our SYN-ACK set ECE)
 *   bits 24..27  our window scale shift as configured now (what the SYN-ACK offered, unless
 *                the configuration changed in between); meaningful only with window scaling
 * Only the MSS is authenticated by the cookie; the option bits ride in the low bits of
 * TSval/TSecr exactly as Linux's cookie_init_timestamp() puts them. */
#define SC_INFO_MSS_MASK     0x0000ffffu
#define SC_INFO_WSCALE_SHIFT 16
#define SC_INFO_SACK         0x00100000u
#define SC_INFO_TS           0x00200000u
#define SC_INFO_ECN          0x00400000u
#define SC_INFO_OUR_WS_SHIFT 24
#define SC_WSCALE_NONE       0xf

/* ---- SYN cookies (net.ipv4.tcp_syncookies) ----
 *
 * Cookie mode for a SYN to an owned listener: mode 2, or mode 1 and the listener's flag in
 * `syncookie_pressure` set (the control plane raises it when that listener's SYN backlog
 * overflows, lowers it when it drains; keyed by the owned_ports key the SYN matched). A SYN
 * with no ACK/RST/FIN, no payload and no Fast Open option (kind 34, or kind 254 with the
 * experimental TFO magic 0xF989) is then answered by XDP_TX with a SYN-ACK whose sequence
 * number is the cookie; the program keeps no state beyond a per-listener "cookie sent at"
 * time (`syncookie_recent`).
 *
 * Cookie (the SYN-ACK's sequence number), 32 bits:
 *   bits 31..4  the top 28 bits of SipHash-2-4(key, msg)
 *   bits  3..2  count & 3, count = the 64 s time counter (CLOCK_MONOTONIC seconds >> 6)
 *   bits  1..0  MSS index into msstab {536, 1300, 1440, 1460}: the largest entry <= the
 *               SYN's MSS option (index 0 when smaller, or without the option)
 * msg (24 bytes) = client addr, server addr, client port, server port, client ISN (all 4
 * in wire order), count (u32 little endian), MSS index (u32 little endian). key: 128 bits,
 * k0 = the first 8 key bytes little endian, k1 the next 8 (SipHash's convention). The
 * check recomputes the hash for count = now or now - 1 (whichever has the cookie's low
 * count bits: a cookie lives 64 to 128 s), with the primary key then the previous one.
 *
 * The returning ACK (ACK set, no SYN/RST) to an owned listener whose 4-tuple is not in
 * owned_flows is checked as a cookie when the listener's pressure flag is up or it sent a
 * cookie within SYNCOOKIE_VALID_SEC (mode != 0 either way; Linux's tcp_synq_no_recent_overflow
 * rule). Valid: redirected with META_CSUM_OK | META_COOKIE_OK and `syncookie` filled in;
 * invalid: dropped (DROP_SYNCOOKIE, SyncookiesFailed). Otherwise it reaches the control plane
 * as before. So the control plane must put a 4-tuple in owned_flows as soon as it holds ANY
 * state for it (SYN-RECEIVED from a stateful SYN-ACK, a Fast Open SYN, ...), not only once
 * established: an ACK completing a stateful handshake while cookies are active would
 * otherwise be judged as a cookie and dropped. A segment with the cookie's seq/ack that
 * arrives before the control plane added the flow (the ACK's data, a retransmission) also
 * carries META_COOKIE_OK: treat it as a normal segment if the connection exists.
 */
#define SYNCOOKIE_PERIOD_SHIFT 6    /* count = seconds >> 6 */
#define SYNCOOKIE_VALID_SEC    128  /* two periods: a cookie's life, and "recently active" */
#define SYNCOOKIE_MSS_BITS     2
#define SYNCOOKIE_COUNT_BITS   2
#define SYNCOOKIE_HASH_SHIFT   4    /* cookie bits 31..4 = hash >> 36 */

/* `syncookie_cfg[0]`, set by the control plane (IngressProgram.set_syncookies ...). */
struct syncookie_cfg {
    __u32 mode;       /* net.ipv4.tcp_syncookies: 0 never, 1 under pressure, 2 always */
    __u32 flags;      /* SC_CFG_*: what the SYN-ACK may offer */
    __u16 mss;        /* our MSS option in the SYN-ACK */
    __u16 window;     /* the SYN-ACK's window field (a SYN's window is never scaled) */
    __u8  wscale;     /* our window scale shift, offered when the client offered one */
    __u8  ttl;        /* IPv4 TTL of the SYN-ACK */
    __u16 pad;
    __u32 ts_offset;  /* TSval = CLOCK_MONOTONIC ms + ts_offset (low 6 bits: options) */
};
#define SC_CFG_TIMESTAMPS 0x1u  /* net.ipv4.tcp_timestamps: without it no wscale/SACK/ECN */
#define SC_CFG_SACK       0x2u  /* net.ipv4.tcp_sack */
#define SC_CFG_WSCALE     0x4u  /* net.ipv4.tcp_window_scaling */
#define SC_CFG_ECN        0x8u  /* net.ipv4.tcp_ecn (accept ECN-setup SYNs) */

/* ---- SYN-ACKs from XDP with the request kept (pystack.xdp_synack; pystack/tcp/xdpsyn.py) ----
 *
 * In mode 1, with no pressure, a SYN to a listener in `synack_listen` (the control plane
 * puts there the listeners whose SYN-ACK XDP can send exactly: no per-socket options, room
 * in the accept queue) and carrying timestamps is answered like a cookie SYN (the same
 * SYN-ACK, ISN = the cookie, options in the TSval), and the request is recorded in
 * `synack_req` under its 4-tuple: that is the SYN queue entry Linux keeps. The control plane
 * reads the map on its tick, retransmits the SYN-ACK of a request not answered in time
 * (TCP_TIMEOUT_INIT doubled, tcp_synack_retries) and removes the expired ones. The ACK that
 * completes the handshake passes the cookie check as any cookie ACK; the program then
 * takes the request out of the map and reports the SYN's exact MSS in the cookie info.
 * A full map only loses the request (the SYN-ACK is then a plain cookie, SyncookiesSent). */
#define SYNACK_REQ_MAX 8192
#define REQ_SACK 0x1u  /* the SYN offered SACK */
#define REQ_ECN  0x2u  /* the SYN was an ECN-setup SYN (ECE and CWR) */

struct synack_req {
    __u64 sent_ns;     /* bpf_ktime_get_ns() when XDP sent the SYN-ACK */
    __u32 isn;         /* our ISN (the cookie), host order */
    __u32 peer_isn;    /* the SYN's sequence number, host order */
    __u32 peer_tsval;  /* the SYN's TSval (every SYN-ACK's TSecr) */
    __u16 mss;         /* the SYN's MSS option, 0 without one */
    __u8  wscale;      /* the SYN's window scale shift, SC_WSCALE_NONE without the option */
    __u8  flags;       /* REQ_* */
    __u8  peer_mac[6]; /* the SYN's source MAC: where a retransmitted SYN-ACK goes */
    __u16 pad;
};

/* `syncookie_keys[0]` the primary key (new cookies, checked first), [1] the previous one
 * (still accepted on check), like Linux's two-minute window across a key change. */
struct syncookie_key {
    __u64 k0;
    __u64 k1;
    __u32 valid;
    __u32 pad;
};

/* Per-CPU counters, by index into `syncookie_count` (Linux's TcpExt names). */
#define SYNCOOKIE_SENT     0  /* SyncookiesSent: SYN-ACKs with a cookie sent (XDP_TX) */
#define SYNCOOKIE_RECV     1  /* SyncookiesRecv: ACKs with a valid cookie */
#define SYNCOOKIE_FAILED   2  /* SyncookiesFailed: ACKs with an invalid cookie */
#define SYNACK_XDP         3  /* pystack's XdpSynAcks: SYN-ACKs sent for requests kept in
                               * synack_req (below), not counted as SyncookiesSent */
#define SYNCOOKIE_COUNTERS 4

/* owned_ports key: a local (address, port) pystack serves; addr 0 means any address. */
struct port_key {
    __u32 addr;  /* network byte order */
    __u16 port;  /* network byte order */
    __u16 pad;
};

/* owned_flows key: one connection, as the received packet names it. */
struct flow_key {
    __u32 saddr;  /* remote, network byte order */
    __u32 daddr;  /* local */
    __u16 sport;  /* remote */
    __u16 dport;  /* local */
};

#endif
