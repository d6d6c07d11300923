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
#define DROP_MAX         9

/* Metadata the program writes in front of every frame it redirects (bpf_xdp_adjust_meta).
 * User space finds it at frame_addr - sizeof(struct pystack_meta). */
#define PYSTACK_META_MAGIC 0x5053u  /* "PS" */
#define META_CSUM_OK       0x0001u  /* IPv4 header and TCP checksums verified */

struct pystack_meta {
    __u16 flags;
    __u16 magic;
    __u32 reserved;  /* SYN-cookie data (MSS, wscale, SACK) goes here later */
};

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
