/* Loss injector for the veth test bed (there is no netem on this kernel; PLATFORM.md).
 *
 * A tc classifier in direct-action mode (cls_bpf on a clsact hook), compiled with bcc and
 * driven by pystack/faults.py. The object holds LOSS_SLOTS identical programs,
 * loss_slot0 .. loss_slot<N-1>; each reads its own entry of `loss_cfg` and counts in its own
 * entry of `loss_stats`, so one compilation serves several hooks at once.
 *
 * Only IPv4 TCP segments whose source or destination port equals cfg.port (any port when
 * 0) are considered; everything else passes untouched. For a matching segment, in order:
 *   1. retransmission drop: after a deterministic drop (2. or 3.), data segments covering
 *      the dropped segment's first byte drop as well, cfg.rtx_drops of them in all;
 *   2. the Nth data segment: data segments are numbered from 1 as they pass the hook
 *      (retransmissions included unless rule 1 dropped them); numbers nth_first ..
 *      nth_first + nth_count - 1 drop;
 *   3. a sequence range: data segments starting at a sequence number in [seq_lo, seq_hi),
 *      relative to the first data segment seen, drop (at most seq_max of them);
 *   4. random: drop with probability prob / 2^32 (bpf_get_prandom_u32), data segments only
 *      when LOSS_F_DATA_ONLY is set.
 * tc egress runs before GSO segmentation, and Linux TCP always builds GSO skbs: a GSO
 * super-packet would count (and drop) as one segment. faults.py sets the veth's
 * gso_max_segs to 1 while an egress injector is attached; AF_XDP frames are single segments.
 *
 * A drop returns TC_ACT_STOLEN, not TC_ACT_SHOT: on egress SHOT hands NET_XMIT_DROP back to
 * the sending socket, and Linux TCP then treats it as local congestion and resends the
 * segment as if it had never left (no loss recovery at all). STOLEN reports success, as a
 * frame lost on the wire would. Passing returns TC_ACT_UNSPEC, so later filters on the same
 * hook (the bottleneck's redirect to an ifb) still run.
 */

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/tcp.h>

#define LOSS_SLOTS 4 /* one LOSS_SLOT(n) line below per slot */

#define DROP TC_ACT_STOLEN  /* see above */
#define LOSS_F_ON 1        /* the slot is configured: anything else passes everything */
#define LOSS_F_DATA_ONLY 2 /* random drops hit only segments that carry data */

/* Written by Python; layout mirrored in pystack/faults.py (_CFG). */
struct loss_cfg {
    __u32 flags;
    __u32 prob;      /* random drop if bpf_get_prandom_u32() < prob */
    __u32 port;      /* host order; 0 = any port */
    __u32 nth_first; /* 1-based number of the first data segment to drop; 0 = off */
    __u32 nth_count;
    __u32 rtx_drops; /* also drop this many retransmissions of a deterministically dropped seg */
    __u32 seq_lo;    /* relative to the first data segment's sequence number */
    __u32 seq_hi;    /* seq_hi == seq_lo: off */
    __u32 seq_max;
    __u32 _pad;
};

/* Counters and state, read (and zeroed) by Python; layout mirrored in faults.py (_STATS). */
struct loss_stats {
    __u64 seen;        /* matching TCP segments */
    __u64 data;        /* of which carried data: the number the Nth rule counts with */
    __u64 drop_random;
    __u64 drop_nth;
    __u64 drop_rtx;
    __u64 drop_seq;
    __u64 rtx_seen;    /* segments covering the last deterministic drop, seen after it */
    __u64 seq_hits;    /* segments inside the sequence range */
    __u64 base_set;    /* 64-bit: 32-bit atomics need an ALU32 target */
    __u32 base_seq;    /* sequence number of the first data segment */
    __u32 rtx_seq;     /* first byte of the last deterministically dropped segment */
    __u32 rtx_armed;
    __u32 _pad;
};

BPF_ARRAY(loss_cfg, struct loss_cfg, LOSS_SLOTS);
BPF_ARRAY(loss_stats, struct loss_stats, LOSS_SLOTS);

static __always_inline void arm_rtx(struct loss_stats *st, __u32 seq)
{
    st->rtx_seq = seq;
    st->rtx_armed = 1;
}

static __always_inline int loss(struct __sk_buff *skb, int slot)
{
    int key = slot;
    struct loss_cfg *cfg = loss_cfg.lookup(&key);
    struct loss_stats *st = loss_stats.lookup(&key);
    if (!cfg || !st || !(cfg->flags & LOSS_F_ON))
        return TC_ACT_UNSPEC;

    struct ethhdr eth;
    struct iphdr ip;
    struct tcphdr tcp;
    if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 || eth.h_proto != htons(ETH_P_IP))
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, sizeof(eth), &ip, sizeof(ip)) < 0 || ip.protocol != IPPROTO_TCP
        || ip.ihl < 5 || (ip.frag_off & htons(0x3fff)))
        return TC_ACT_UNSPEC;
    __u32 ihl = ip.ihl * 4;
    if (bpf_skb_load_bytes(skb, sizeof(eth) + ihl, &tcp, sizeof(tcp)) < 0 || tcp.doff < 5)
        return TC_ACT_UNSPEC;
    __u32 port = cfg->port;
    if (port && ntohs(tcp.source) != port && ntohs(tcp.dest) != port)
        return TC_ACT_UNSPEC;

    __sync_fetch_and_add(&st->seen, 1);
    __u32 tot = ntohs(ip.tot_len);
    __u32 hdrs = ihl + tcp.doff * 4;
    __u32 len = tot > hdrs ? tot - hdrs : 0;
    __u32 seq = ntohl(tcp.seq);

    if (len) {
        /* 1. a retransmission of the segment we dropped last */
        if (st->rtx_armed && (__u32)(st->rtx_seq - seq) < len) {
            __u64 n = __sync_fetch_and_add(&st->rtx_seen, 1);
            if (n < cfg->rtx_drops) {
                __sync_fetch_and_add(&st->drop_rtx, 1);
                return DROP;
            }
        }
        /* 2. the Nth data segment */
        __u64 nth = __sync_fetch_and_add(&st->data, 1) + 1;
        if (cfg->nth_first && nth >= cfg->nth_first
            && nth < (__u64)cfg->nth_first + cfg->nth_count) {
            __sync_fetch_and_add(&st->drop_nth, 1);
            arm_rtx(st, seq);
            return DROP;
        }
        /* 3. a sequence range, relative to the first data segment */
        if (__sync_val_compare_and_swap(&st->base_set, 0, 1) == 0)
            st->base_seq = seq;
        __u32 rel = seq - st->base_seq;
        if (cfg->seq_hi != cfg->seq_lo && rel - cfg->seq_lo < cfg->seq_hi - cfg->seq_lo) {
            __u64 n = __sync_fetch_and_add(&st->seq_hits, 1);
            if (n < cfg->seq_max) {
                __sync_fetch_and_add(&st->drop_seq, 1);
                arm_rtx(st, seq);
                return DROP;
            }
        }
    }
    /* 4. random loss */
    if (cfg->prob && (len || !(cfg->flags & LOSS_F_DATA_ONLY))
        && bpf_get_prandom_u32() < cfg->prob) {
        __sync_fetch_and_add(&st->drop_random, 1);
        return DROP;
    }
    return TC_ACT_UNSPEC;
}

#define LOSS_SLOT(n) \
    int loss_slot##n(struct __sk_buff *skb) { return loss(skb, n); }

LOSS_SLOT(0)
LOSS_SLOT(1)
LOSS_SLOT(2)
LOSS_SLOT(3)
