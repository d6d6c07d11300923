/* pystack XDP ingress program (compiled and loaded by bcc, see pystack/xdp/program.py).
 *
 * For every frame: bounds-checked parse of Ethernet / IPv4 / TCP, then
 *   - not IPv4 or not TCP (ARP, ICMP, UDP, IPv6) ............ XDP_PASS (the kernel's)
 *   - structurally malformed IPv4/TCP ........................ XDP_DROP + reason
 *   - TCP to a port or flow pystack does not own ............. XDP_PASS (kernel TCP)
 *   - owned, IP fragment ..................................... XDP_DROP + reason
 *   - owned, bad IPv4 or TCP checksum ........................ XDP_DROP + reason
 *   - owned, valid ........................................... redirect to the AF_XDP
 *     socket of this rx queue, with a pystack_meta in front saying "checksums verified".
 *   - SYN to an owned listener in cookie mode ................ XDP_TX: the frame becomes a
 *     SYN-ACK whose sequence number is a SYN cookie (no state kept, Python not woken)
 *   - the same, pystack.xdp_synack (mode 1, no pressure) ..... XDP_TX as above, and the
 *     request is kept in synack_req for the control plane (pystack_xdp.h)
 *   - ACK to an owned listener, no flow, cookies active ...... valid cookie: redirect with
 *     META_COOKIE_OK and the options it encoded, and the 4-tuple becomes an owned flow;
 *     invalid: XDP_DROP + reason
 * Checksums are verified only for owned traffic: kernel flows pay for a parse and up to
 * three hash lookups, nothing more (the xdp_tax benchmark measures it); the SYN-cookie code
 * runs only for owned listeners (pystack_xdp.h describes the cookie and the maps).
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>

#include "pystack_xdp.h"

BPF_XSKMAP(xsks, PYSTACK_MAX_QUEUES);
BPF_HASH(owned_ports, struct port_key, __u32, 4096);
BPF_HASH(owned_flows, struct flow_key, __u32, 65536);
/* Local TCP port (host order) -> 1 when pystack owns a listener or a flow on it (set by
 * the control plane, never cleared: a stale 1 only costs the hash lookups of is_owned). */
BPF_ARRAY(port_hint, __u8, 65536);
BPF_PERCPU_ARRAY(action_count, __u64, ACT_MAX);
BPF_PERCPU_ARRAY(drop_count, __u64, DROP_MAX);
BPF_ARRAY(syncookie_cfg, struct syncookie_cfg, 1);
BPF_ARRAY(syncookie_keys, struct syncookie_key, 2);
BPF_HASH(syncookie_pressure, struct port_key, __u32, 4096);
BPF_TABLE("lru_hash", struct port_key, __u64, syncookie_recent, 4096);
BPF_PERCPU_ARRAY(syncookie_count, __u64, SYNCOOKIE_COUNTERS);
BPF_HASH(synack_listen, struct port_key, __u32, 4096);
BPF_HASH(synack_req, struct flow_key, struct synack_req, SYNACK_REQ_MAX);

#define IP_MF     0x2000
#define IP_OFFSET 0x1fff

static __always_inline int count_action(int idx, int action)
{
    __u64 *v = action_count.lookup(&idx);
    if (v)
        *v += 1;
    return action;
}

static __always_inline int drop(int reason)
{
    __u64 *v = drop_count.lookup(&reason);
    if (v)
        *v += 1;
    return count_action(ACT_DROP, XDP_DROP);
}

static __always_inline __u16 fold(__u64 sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)sum;
}

/* Sum of `len` bytes from p for the ones-complement checksum (RFC 1071), len < 2048 (any
 * MTU-sized segment). The chunks follow the bits of len: bit S covers the S bytes after the
 * chunks of the higher bits, at offset len & ~(2S - 1). The sum does not depend on the
 * order of 16-bit words and every chunk starts at an even offset, so this is the plain sum.
 * Each bit is tested through an opaque copy, and no pointer moves: either branch leaves the
 * verifier knowing exactly what it knew before, so its paths merge after every chunk
 * (walking len's 2^11 combinations one by one nearly exhausted its budget). bpf_csum_diff
 * takes at most 512 bytes, in multiples of 4. Returns -1 if the bytes are not all there. */
#define CSUM_BIT(S)                                                            \
    do {                                                                       \
        __u32 bit = len & (S);                                                 \
        asm volatile("" : "+r"(bit));                                          \
        if (bit) {                                                             \
            __u8 *q = p + (len & ~(2 * (S) - 1) & 0x7ff);                      \
            if (q + (S) > data_end)                                            \
                return -1;                                                     \
            sum += (__u32)bpf_csum_diff(0, 0, (void *)q, (S), 0);              \
        }                                                                      \
    } while (0)

static __always_inline __s64 csum_bytes(__u8 *p, __u32 len, __u8 *data_end)
{
    __u64 sum = 0;
    __u32 bit;

    if (len > 2047)
        return -1;
    bit = len & 1024;
    asm volatile("" : "+r"(bit));
    if (bit) {
        if (p + 1024 > data_end)
            return -1;
        sum += (__u32)bpf_csum_diff(0, 0, (void *)p, 512, 0);
        sum += (__u32)bpf_csum_diff(0, 0, (void *)(p + 512), 512, 0);
    }
    CSUM_BIT(512);
    CSUM_BIT(256);
    CSUM_BIT(128);
    CSUM_BIT(64);
    CSUM_BIT(32);
    CSUM_BIT(16);
    CSUM_BIT(8);
    CSUM_BIT(4);
    bit = len & 2;
    asm volatile("" : "+r"(bit));
    if (bit) {
        __u8 *q = p + (len & ~3u & 0x7ff);
        if (q + 2 > data_end)
            return -1;
        sum += *(__u16 *)q;
    }
    bit = len & 1;
    asm volatile("" : "+r"(bit));
    if (bit) {
        __u8 *q = p + (len & ~1u & 0x7ff);
        if (q + 1 > data_end)
            return -1;
        sum += *q; /* the odd byte is the high byte of a zero-padded word, in memory order */
    }
    return sum;
}

/* What the TCP option parser found (RFC 9293 §3.2, RFC 7323, RFC 2018, RFC 7413). */
struct sc_opts {
    __u32 tsval;
    __u32 tsecr;
    __u16 mss;
    __u8 wscale;
    __u8 have_mss;
    __u8 have_ws;
    __u8 sack;
    __u8 have_ts;
    __u8 fastopen;
};

/* Per-packet working memory, in a per-CPU map rather than on the stack: the verifier does
 * not track what a map value holds, so which kind of owner matched, or which options a SYN
 * carried, does not split its exploration into one path per combination. */
struct pystack_scratch {
    struct port_key lk;  /* the owned_ports key a listener segment matched */
    __u32 own;           /* OWN_FLOW or OWN_LISTENER */
    struct sc_opts o;
};
BPF_PERCPU_ARRAY(scratch, struct pystack_scratch, 1);

#define OWN_FLOW     1
#define OWN_LISTENER 2

static __always_inline struct pystack_scratch *get_scratch(void)
{
    int zero = 0;
    return scratch.lookup(&zero);
}

/* Is the segment pystack's: an owned_flows 4-tuple, or an owned_ports listener? The kind
 * (and the listener key) go to the scratch map, for after the checksums. */
static __always_inline int is_owned(struct iphdr *ip, struct tcphdr *tcp)
{
    /* Kernel-owned traffic stops here: one array read instead of three hash lookups
     * (the xdp_tax benchmark: what the program costs flows that are not pystack's). */
    __u32 hk = bpf_ntohs(tcp->dest);
    __u8 *hint = port_hint.lookup(&hk);
    if (!hint || !*hint)
        return 0;
    struct flow_key fk = {
        .saddr = ip->saddr, .daddr = ip->daddr, .sport = tcp->source, .dport = tcp->dest,
    };
    struct pystack_scratch *sc;
    if (owned_flows.lookup(&fk)) {
        sc = get_scratch();
        if (sc)
            sc->own = OWN_FLOW;
        return 1;
    }
    struct port_key pk = {.addr = ip->daddr, .port = tcp->dest, .pad = 0};
    if (!owned_ports.lookup(&pk)) {
        pk.addr = 0;
        if (!owned_ports.lookup(&pk))
            return 0;
    }
    sc = get_scratch();
    if (sc) {
        sc->own = OWN_LISTENER;
        sc->lk = pk;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------
 * SYN cookies (layout and rules in pystack_xdp.h)
 */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define TH_ECE 0x40
#define TH_CWR 0x80

#define SC_NSEC_PER_SEC  1000000000ULL
#define SC_NSEC_PER_MSEC 1000000ULL

static __always_inline void sc_count(int idx)
{
    __u64 *v = syncookie_count.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline __u32 load_be32(__u8 *p)
{
    return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline void store_be32(__u8 *p, __u32 v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

/* Forget what the verifier knows of an option offset beyond "0..63": the loop's states then
 * differ only in the turn number and prune well (the compiler must not drop the mask). */
static __always_inline __u32 opt_off(__u32 i)
{
    asm volatile("" : "+r"(i));
    return i & 0x3f;
}

/* Parse at most 40 option bytes at opt (bounded loop: each turn eats at least one byte).
 * Like Linux's tcp_parse_options, a malformed option ends the parse, it is not an error. */
static __always_inline void parse_opts(__u8 *opt, __u32 optlen, void *data_end,
                                       struct sc_opts *o)
{
    __u32 i = 0;

    if (optlen > 40)
        return;
#pragma clang loop unroll(disable)
    for (int n = 0; n < 40; n++) {
        if (i >= optlen)
            break;
        __u8 *p = opt + (i & 0x3f);
        if ((void *)(p + 1) > data_end)
            break;
        __u8 kind = p[0];
        if (kind == 0) /* EOL */
            break;
        if (kind == 1) { /* NOP */
            i = opt_off(i + 1);
            continue;
        }
        if ((void *)(p + 2) > data_end)
            break;
        __u32 len = p[1];
        if (len < 2 || i + len > optlen)
            break;
        if (kind == 2 && len == 4) {
            if ((void *)(p + 4) > data_end)
                break;
            o->mss = ((__u16)p[2] << 8) | p[3];
            o->have_mss = 1;
        } else if (kind == 3 && len == 3) {
            if ((void *)(p + 3) > data_end)
                break;
            o->wscale = p[2] > 14 ? 14 : p[2]; /* RFC 7323 §2.3: at most 14 */
            o->have_ws = 1;
        } else if (kind == 4 && len == 2) {
            o->sack = 1;
        } else if (kind == 8 && len == 10) {
            if ((void *)(p + 10) > data_end)
                break;
            o->tsval = load_be32(p + 2);
            o->tsecr = load_be32(p + 6);
            o->have_ts = 1;
        } else if (kind == 34) {
            o->fastopen = 1;
        } else if (kind == 254 && len >= 4) {
            if ((void *)(p + 4) > data_end)
                break;
            if (p[2] == 0xf9 && p[3] == 0x89) /* RFC 6994 ExID of Fast Open */
                o->fastopen = 1;
        }
        i = opt_off(i + len);
    }
}

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                   \
    do {                                                                           \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);             \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                                   \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                                   \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);             \
    } while (0)
#define SIPBLOCK(m)                                                                \
    do {                                                                           \
        v3 ^= (m); SIPROUND; SIPROUND; v0 ^= (m);                                  \
    } while (0)

/* SipHash-2-4 of the 24-byte message whose little-endian words are a, b, c. */
static __always_inline __u64 siphash24_3(const struct syncookie_key *k, __u64 a, __u64 b,
                                         __u64 c)
{
    __u64 v0 = 0x736f6d6570736575ULL ^ k->k0;
    __u64 v1 = 0x646f72616e646f6dULL ^ k->k1;
    __u64 v2 = 0x6c7967656e657261ULL ^ k->k0;
    __u64 v3 = 0x7465646279746573ULL ^ k->k1;

    SIPBLOCK(a);
    SIPBLOCK(b);
    SIPBLOCK(c);
    SIPBLOCK(24ULL << 56); /* no tail bytes; the length in the top byte */
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The cookie's hash bits (31..4) for one key. Addresses, ports and seq as on the wire. */
static __always_inline __u32 cookie_hash(const struct syncookie_key *k, __u32 saddr,
                                         __u32 daddr, __u16 sport, __u16 dport,
                                         __u32 isn_wire, __u32 count, __u32 mssind)
{
    __u64 a = (__u64)saddr | ((__u64)daddr << 32);
    __u64 b = (__u64)sport | ((__u64)dport << 16) | ((__u64)isn_wire << 32);
    __u64 c = (__u64)count | ((__u64)mssind << 32);
    return (__u32)(siphash24_3(k, a, b, c) >> 36) << SYNCOOKIE_HASH_SHIFT;
}

static __always_inline __u32 mss_index(struct sc_opts *o)
{
    __u32 mss = o->have_mss ? o->mss : 536; /* RFC 9293 §3.7.1 default */
    if (mss >= 1460)
        return 3;
    if (mss >= 1440)
        return 2;
    if (mss >= 1300)
        return 1;
    return 0;
}

static __always_inline __u16 mss_of_index(__u32 idx)
{
    switch (idx & 3) {
    case 3: return 1460;
    case 2: return 1440;
    case 1: return 1300;
    default: return 536;
    }
}

/* Answer a SYN (already checked: SYN to an owned listener, checksums good) with a cookie
 * SYN-ACK, in place. Returns XDP_TX, or -1 to hand the SYN to the control plane instead
 * (not cookie mode, Fast Open, payload, no key). After a successful bpf_xdp_adjust_tail
 * it never returns -1. */
static __always_inline int syn_cookie(struct xdp_md *ctx, struct iphdr *ip,
                                      struct tcphdr *tcp, __u32 tcp_len, __u32 doff,
                                      struct pystack_scratch *sc)
{
    void *data_end = (void *)(long)ctx->data_end;
    int zero = 0;

    struct syncookie_cfg *cfg = syncookie_cfg.lookup(&zero);
    if (!cfg || cfg->mode == 0)
        return -1;
    int stateful = 0; /* keep the request in synack_req (pystack_xdp.h) */
    if (cfg->mode == 1) {
        __u32 *on = syncookie_pressure.lookup(&sc->lk);
        if (!on || !*on) {
            __u32 *el = synack_listen.lookup(&sc->lk);
            if (!el || !*el)
                return -1;
            stateful = 1;
        }
    }
    if (tcp_len != doff) /* data on the SYN: Fast Open or not, the control plane's */
        return -1;
    struct syncookie_key *key = syncookie_keys.lookup(&zero);
    if (!key || !key->valid)
        return -1;

    __builtin_memset(&sc->o, 0, sizeof(sc->o));
    parse_opts((__u8 *)(tcp + 1), doff - sizeof(*tcp), data_end, &sc->o);
    struct sc_opts o = sc->o;
    if (o.fastopen)
        return -1;

    __u32 flags = cfg->flags;
    int ts = o.have_ts && (flags & SC_CFG_TIMESTAMPS);
    if (stateful && !ts)
        return -1; /* the cookie could not carry its options: the control plane's SYN */
    /* As Linux: without timestamps there is nowhere to keep wscale/SACK/ECN. */
    int ws = ts && o.have_ws && (flags & SC_CFG_WSCALE);
    int sack = ts && o.sack && (flags & SC_CFG_SACK);
    __u8 fl = ((__u8 *)tcp)[13];
    int ecn = ts && (flags & SC_CFG_ECN) && (fl & (TH_ECE | TH_CWR)) == (TH_ECE | TH_CWR);

    __u64 now = bpf_ktime_get_ns();
    __u32 count = (__u32)((now / SC_NSEC_PER_SEC) >> SYNCOOKIE_PERIOD_SHIFT);
    __u32 mssind = mss_index(&o);
    __u32 saddr = ip->saddr, daddr = ip->daddr, seq_wire = tcp->seq;
    __u16 sport = tcp->source, dport = tcp->dest;
    __u32 cookie = cookie_hash(key, saddr, daddr, sport, dport, seq_wire, count, mssind) |
                   ((count & 3) << SYNCOOKIE_MSS_BITS) | mssind;

    __u32 tsval = 0;
    if (ts) { /* Linux's cookie_init_timestamp(): options in the low 6 bits, never ahead */
        __u32 now_ms = (__u32)(now / SC_NSEC_PER_MSEC) + cfg->ts_offset;
        __u32 opt = ws ? o.wscale : SC_WSCALE_NONE;
        if (sack)
            opt |= 0x10;
        if (ecn)
            opt |= 0x20;
        tsval = ((now_ms >> 6) << 6) | opt;
        if ((__s32)(tsval - now_ms) > 0)
            tsval -= 64;
    }
    __u16 our_mss = cfg->mss, window = cfg->window;
    __u8 our_ws = cfg->wscale > 14 ? 14 : cfg->wscale, ttl = cfg->ttl;

    __u8 mac[12];
    struct ethhdr *eth0 = (void *)(long)ctx->data;
    if ((void *)(eth0 + 1) > data_end)
        return -1;
    __builtin_memcpy(mac, eth0->h_dest, 6);
    __builtin_memcpy(mac + 6, eth0->h_source, 6);

    __u32 optlen = 4 + (ts ? 12 : 0) + (ws ? 4 : 0);
    __u32 out_len = sizeof(struct ethhdr) + 20 + 20 + optlen;
    int delta = (int)out_len - (int)((long)ctx->data_end - (long)ctx->data);
    if (delta != 0 && bpf_xdp_adjust_tail(ctx, delta) != 0)
        return -1; /* no room: nothing written yet, the control plane gets the SYN */

    /* Every packet pointer is stale now: start again from ctx. */
    void *data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + sizeof(struct ethhdr) + 20 + 20 + 4 > data_end)
        return count_action(ACT_ABORTED, XDP_ABORTED); /* cannot happen: we sized it */

    struct ethhdr *eth = data;
    __builtin_memcpy(eth->h_dest, mac + 6, 6);
    __builtin_memcpy(eth->h_source, mac, 6);

    __u8 *nip = (__u8 *)(eth + 1);
    struct iphdr *iph = (struct iphdr *)nip;
    nip[0] = 0x45;
    iph->tos = 0;
    iph->tot_len = htons((__u16)(20 + 20 + optlen));
    iph->id = 0;
    iph->frag_off = htons(0x4000); /* DF, as Linux sends SYN-ACKs */
    iph->ttl = ttl ? ttl : 64;
    iph->protocol = IPPROTO_TCP;
    iph->check = 0;
    iph->saddr = daddr;
    iph->daddr = saddr;

    struct tcphdr *th = (void *)(nip + 20);
    __u8 *tb = (__u8 *)th;
    th->source = dport;
    th->dest = sport;
    th->seq = htonl(cookie);
    th->ack_seq = htonl(ntohl(seq_wire) + 1);
    tb[12] = (__u8)(((20 + optlen) / 4) << 4);
    tb[13] = TH_SYN | TH_ACK | (ecn ? TH_ECE : 0);
    th->window = htons(window);
    th->check = 0;
    th->urg_ptr = 0;

    /* Options in Linux's order: MSS, SACK-permitted+TS (or NOP NOP TS), NOP WS. */
    __u8 *op = tb + 20;
    op[0] = 2;
    op[1] = 4;
    op[2] = our_mss >> 8;
    op[3] = our_mss & 0xff;
    __u64 sum = 0;
    if (ts) {
        if ((void *)(op + 16) > data_end)
            return count_action(ACT_ABORTED, XDP_ABORTED);
        op[4] = sack ? 4 : 1;
        op[5] = sack ? 2 : 1;
        op[6] = 8;
        op[7] = 10;
        store_be32(op + 8, tsval);
        store_be32(op + 12, o.tsval); /* TSecr: the SYN's TSval */
        if (ws) {
            if ((void *)(op + 20) > data_end)
                return count_action(ACT_ABORTED, XDP_ABORTED);
            op[16] = 1;
            op[17] = 3;
            op[18] = 3;
            op[19] = our_ws;
            sum = (__u32)bpf_csum_diff(0, 0, (void *)op, 20, 0);
        } else {
            sum = (__u32)bpf_csum_diff(0, 0, (void *)op, 16, 0);
        }
    } else {
        sum = (__u32)bpf_csum_diff(0, 0, (void *)op, 4, 0);
    }

    /* Checksums from scratch: IPv4 header (RFC 791), TCP with pseudo-header (RFC 9293). */
    if ((void *)(nip + 40) > data_end)
        return count_action(ACT_ABORTED, XDP_ABORTED);
    iph->check = ~fold((__u32)bpf_csum_diff(0, 0, (void *)nip, 20, 0));
    sum += (__u32)bpf_csum_diff(0, 0, (void *)tb, 20, 0);
    sum += (__u64)daddr + saddr + htons(IPPROTO_TCP) + htons((__u16)(20 + optlen));
    th->check = ~fold(sum);

    /* Remember that this listener handed out cookies (throttled to a write a second). */
    __u64 *last = syncookie_recent.lookup(&sc->lk);
    if (!last)
        syncookie_recent.update(&sc->lk, &now);
    else if (now - *last > SC_NSEC_PER_SEC)
        *last = now;

    if (stateful) {
        struct flow_key fk = {.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport};
        struct synack_req rq = {
            .sent_ns = now, .isn = cookie, .peer_isn = ntohl(seq_wire),
            .peer_tsval = o.tsval, .mss = o.have_mss ? o.mss : 0,
            .wscale = o.have_ws ? o.wscale : SC_WSCALE_NONE,
            .flags = (o.sack ? REQ_SACK : 0) |
                     ((fl & (TH_ECE | TH_CWR)) == (TH_ECE | TH_CWR) ? REQ_ECN : 0),
        };
        __builtin_memcpy(rq.peer_mac, mac + 6, 6);
        if (synack_req.update(&fk, &rq) == 0) {
            sc_count(SYNACK_XDP);
            return count_action(ACT_TX, XDP_TX);
        }
    }
    sc_count(SYNCOOKIE_SENT);
    return count_action(ACT_TX, XDP_TX);
}

/* An ACK to an owned listener with no owned flow. Returns 0 when cookies are not active
 * for the listener (the control plane gets the segment as before), 1 with *info filled
 * when the cookie is valid, -1 when it is not. */
static __always_inline int cookie_ack(struct iphdr *ip, struct tcphdr *tcp, __u32 doff,
                                      void *data_end, struct pystack_scratch *sc,
                                      __u32 *info)
{
    int zero = 0, one = 1;

    struct syncookie_cfg *cfg = syncookie_cfg.lookup(&zero);
    if (!cfg || cfg->mode == 0)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    __u32 *on = syncookie_pressure.lookup(&sc->lk);
    if (!on || !*on) {
        __u64 *last = syncookie_recent.lookup(&sc->lk);
        if (!last || now - *last >= SYNCOOKIE_VALID_SEC * SC_NSEC_PER_SEC)
            return 0;
    }

    __u32 cookie = ntohl(tcp->ack_seq) - 1;
    __u32 isn_wire = htonl(ntohl(tcp->seq) - 1);
    __u32 count = (__u32)((now / SC_NSEC_PER_SEC) >> SYNCOOKIE_PERIOD_SHIFT);
    __u32 age = (count - (cookie >> SYNCOOKIE_MSS_BITS)) & 3;
    if (age > 1)
        return -1;
    count -= age;
    __u32 mssind = cookie & 3;
    __u32 want = cookie & ~((1u << SYNCOOKIE_HASH_SHIFT) - 1);
    int ok = 0;

    struct syncookie_key *key = syncookie_keys.lookup(&zero);
    if (key && key->valid &&
        cookie_hash(key, ip->saddr, ip->daddr, tcp->source, tcp->dest, isn_wire, count,
                    mssind) == want)
        ok = 1;
    if (!ok) {
        key = syncookie_keys.lookup(&one);
        if (key && key->valid &&
            cookie_hash(key, ip->saddr, ip->daddr, tcp->source, tcp->dest, isn_wire,
                        count, mssind) == want)
            ok = 1;
    }
    if (!ok)
        return -1;

    __builtin_memset(&sc->o, 0, sizeof(sc->o));
    parse_opts((__u8 *)(tcp + 1), doff - sizeof(*tcp), data_end, &sc->o);
    struct sc_opts o = sc->o;
    __u32 v = mss_of_index(mssind);
    if (o.have_ts) { /* cookie_timestamp_decode(): our TSval's low bits, echoed */
        __u32 opt = o.tsecr & 0x3f;
        v |= (opt & 0xf) << SC_INFO_WSCALE_SHIFT;
        if (opt & 0x10)
            v |= SC_INFO_SACK;
        if (opt & 0x20)
            v |= SC_INFO_ECN;
        v |= SC_INFO_TS;
    } else {
        v |= SC_WSCALE_NONE << SC_INFO_WSCALE_SHIFT;
    }
    __u32 our_ws = cfg->wscale > 14 ? 14 : cfg->wscale;
    v |= our_ws << SC_INFO_OUR_WS_SHIFT;
    *info = v;
    return 1;
}

/* Redirect to this rx queue's AF_XDP socket with a pystack_meta in front. */
static __always_inline int deliver(struct xdp_md *ctx, __u16 flags, __u32 syncookie)
{
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct pystack_meta)) == 0) {
        struct pystack_meta *meta = (void *)(long)ctx->data_meta;
        if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
            meta->flags = flags;
            meta->magic = PYSTACK_META_MAGIC;
            meta->syncookie = syncookie;
        }
    }
    int act = xsks.redirect_map(ctx->rx_queue_index, XDP_DROP);
    if (act == XDP_REDIRECT)
        return count_action(ACT_REDIRECT, XDP_REDIRECT);
    return drop(DROP_NO_XSK);
}

/* A verified segment to an owned listener (no owned flow): the SYN-cookie decisions.
 * It starts again from ctx, re-reading the headers the caller already validated, so that
 * the verifier reaches it in one state whatever the parse and checksum code learnt on the
 * way (lengths, pointer ranges) and checks this code once, not once per such state. */
static __always_inline int listener(struct xdp_md *ctx, struct pystack_scratch *sc)
{
    asm volatile("" ::: "memory");
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > data_end)
        return count_action(ACT_ABORTED, XDP_ABORTED);
    __u32 ihl = (ip->ihl * 4) & 0x3c;
    __u32 tot_len = ntohs(ip->tot_len);
    struct tcphdr *tcp = (void *)ip + ihl;
    if ((void *)(tcp + 1) > data_end || tot_len < ihl)
        return count_action(ACT_ABORTED, XDP_ABORTED);
    __u32 tcp_len = tot_len - ihl;
    __u32 doff = tcp->doff * 4;
    __u8 fl = ((__u8 *)tcp)[13];

    if ((fl & (TH_SYN | TH_ACK | TH_RST | TH_FIN)) == TH_SYN) {
        int r = syn_cookie(ctx, ip, tcp, tcp_len, doff, sc);
        if (r >= 0)
            return r;
        /* not answered, nothing changed: the control plane gets the SYN */
        return deliver(ctx, META_CSUM_OK, 0);
    }
    if ((fl & (TH_SYN | TH_ACK | TH_RST)) == TH_ACK) {
        __u32 info = 0;
        int r = cookie_ack(ip, tcp, doff, data_end, sc, &info);
        if (r < 0) {
            sc_count(SYNCOOKIE_FAILED);
            return drop(DROP_SYNCOOKIE);
        }
        if (r > 0) {
            /* The flow is pystack's from here on, as Linux makes the socket in softirq:
             * the client's next segments may arrive before the control plane has seen
             * this ACK, and their seq no longer carries the cookie. The control plane
             * removes the entry if it refuses the ACK (accept queue full). */
            struct flow_key fk = {
                .saddr = ip->saddr, .daddr = ip->daddr,
                .sport = tcp->source, .dport = tcp->dest,
            };
            __u32 one = 1;
            owned_flows.update(&fk, &one);
            struct synack_req *rq = synack_req.lookup(&fk);
            if (rq) { /* a request XDP kept: its SYN's exact MSS, and the SYN queue entry
                       * goes (Linux: the request becomes the child) */
                __u32 mss = rq->mss ? rq->mss : 536; /* RFC 9293 §3.7.1 default */
                info = (info & ~SC_INFO_MSS_MASK) | (mss & SC_INFO_MSS_MASK);
                synack_req.delete(&fk);
            } else {
                sc_count(SYNCOOKIE_RECV);
            }
            return deliver(ctx, META_CSUM_OK | META_COOKIE_OK, info);
        }
    }
    return deliver(ctx, META_CSUM_OK, 0);
}

int xdp_ingress(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return count_action(ACT_PASS, XDP_PASS); /* runt: not ours to judge */
    if (eth->h_proto != htons(ETH_P_IP))
        return count_action(ACT_PASS, XDP_PASS);

    /* RFC 791 §3.1 */
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return drop(DROP_TRUNCATED);
    if (ip->version != 4)
        return drop(DROP_BAD_VERSION);
    __u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(*ip))
        return drop(DROP_BAD_IHL);
    if ((void *)ip + ihl > data_end)
        return drop(DROP_TRUNCATED);
    __u32 tot_len = ntohs(ip->tot_len);
    if (tot_len < ihl || (void *)ip + tot_len > data_end)
        return drop(DROP_BAD_TOTLEN);
    if (ip->protocol != IPPROTO_TCP)
        return count_action(ACT_PASS, XDP_PASS);

    __u16 frag = ntohs(ip->frag_off);
    if (frag & IP_OFFSET) /* no TCP header to tell the port: the kernel reassembles or drops */
        return count_action(ACT_PASS, XDP_PASS);

    /* RFC 9293 §3.1 */
    struct tcphdr *tcp = (void *)ip + ihl;
    if ((void *)(tcp + 1) > data_end)
        return drop(DROP_TRUNCATED);
    __u32 tcp_len = tot_len - ihl;
    __u32 doff = tcp->doff * 4;
    if (doff < sizeof(*tcp) || doff > tcp_len)
        return drop(DROP_BAD_DOFF);

    if (!is_owned(ip, tcp))
        return count_action(ACT_PASS, XDP_PASS);
    if (frag & IP_MF)
        return drop(DROP_FRAGMENT);

    /* IPv4 header checksum over IHL words (RFC 791 §3.1, RFC 1071). */
    __s64 s = csum_bytes((__u8 *)ip, ihl & 0x3c, (__u8 *)data_end);
    if (s < 0)
        return drop(DROP_TRUNCATED);
    if (fold((__u64)s) != 0xffff)
        return drop(DROP_IP_CSUM);

    /* TCP checksum: pseudo-header (RFC 9293 §3.1) + header + payload. */
    s = csum_bytes((__u8 *)tcp, tcp_len, (__u8 *)data_end);
    if (s < 0)
        return drop(DROP_TRUNCATED);
    __u64 sum = (__u64)s + ip->saddr + ip->daddr + htons(IPPROTO_TCP) + htons((__u16)tcp_len);
    if (fold(sum) != 0xffff)
        return drop(DROP_TCP_CSUM);

    struct pystack_scratch *sc = get_scratch();
    if (sc && sc->own == OWN_LISTENER)
        return listener(ctx, sc);
    return deliver(ctx, META_CSUM_OK, 0);
}
