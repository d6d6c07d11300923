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
 * Checksums are verified only for owned traffic: kernel flows pay for a parse and up to
 * three hash lookups, nothing more (the xdp_tax benchmark measures it).
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
BPF_PERCPU_ARRAY(action_count, __u64, ACT_MAX);
BPF_PERCPU_ARRAY(drop_count, __u64, DROP_MAX);

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

/* One chunk of a ones-complement sum over packet bytes [*p, *p + SIZE) (RFC 1071). The
 * helper takes at most 512 bytes a call; sizes are constants so the verifier can check. */
#define CSUM_CHUNK(SIZE)                                                       \
    if (len >= SIZE) {                                                         \
        if (p + SIZE > data_end)                                               \
            return -1;                                                         \
        sum += (__u32)bpf_csum_diff(0, 0, (void *)p, SIZE, 0);                 \
        p += SIZE;                                                             \
        len -= SIZE;                                                           \
    }

/* Sum of `len` bytes from p (len <= 1536 + 511, i.e. any MTU-sized segment).
 * Returns the 64-bit accumulated sum, or -1 if the bytes are not all in the frame. */
static __always_inline __s64 csum_bytes(__u8 *p, __u32 len, __u8 *data_end)
{
    __u64 sum = 0;

    if (len > 2047)
        return -1;
    CSUM_CHUNK(512)
    CSUM_CHUNK(512)
    CSUM_CHUNK(512)
    CSUM_CHUNK(256)
    CSUM_CHUNK(128)
    CSUM_CHUNK(64)
    CSUM_CHUNK(32)
    CSUM_CHUNK(16)
    CSUM_CHUNK(8)
    CSUM_CHUNK(4)
    if (len >= 2) {
        if (p + 2 > data_end)
            return -1;
        sum += *(__u16 *)p;
        p += 2;
        len -= 2;
    }
    if (len >= 1) {
        if (p + 1 > data_end)
            return -1;
        sum += *p; /* the odd byte is the high byte of a zero-padded word, in memory order */
    }
    return sum;
}

static __always_inline int is_owned(struct iphdr *ip, struct tcphdr *tcp)
{
    struct flow_key fk = {
        .saddr = ip->saddr, .daddr = ip->daddr, .sport = tcp->source, .dport = tcp->dest,
    };
    if (owned_flows.lookup(&fk))
        return 1;
    struct port_key pk = {.addr = ip->daddr, .port = tcp->dest, .pad = 0};
    if (owned_ports.lookup(&pk))
        return 1;
    pk.addr = 0;
    return owned_ports.lookup(&pk) != 0;
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

    /* Mark the frame verified, for the control plane (struct pystack_meta). */
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct pystack_meta)) == 0) {
        struct pystack_meta *meta = (void *)(long)ctx->data_meta;
        if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
            meta->flags = META_CSUM_OK;
            meta->magic = PYSTACK_META_MAGIC;
            meta->reserved = 0;
        }
    }

    int act = xsks.redirect_map(ctx->rx_queue_index, XDP_DROP);
    if (act == XDP_REDIRECT)
        return count_action(ACT_REDIRECT, XDP_REDIRECT);
    return drop(DROP_NO_XSK);
}
