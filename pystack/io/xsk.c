/* pystack AF_XDP I/O (see xsk.h): UMEM, the four rings, batching, frame ownership,
 * checksums. Uses libxdp's xsk API; the XDP program itself is loaded by bcc elsewhere and
 * this socket is put into its XSKMAP, so libxdp is told not to load its own program. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include "xsk.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

enum { F_FREE = 0, F_FILL = 1, F_APP = 2, F_TX = 3 };

#define META_SIZE 8
#define META_MAGIC 0x5053u

struct ps_xsk {
    struct xsk_umem *umem;
    struct xsk_socket *sock;
    struct xsk_ring_prod fill;
    struct xsk_ring_cons comp;
    struct xsk_ring_cons rx;
    struct xsk_ring_prod tx;
    uint8_t *area;
    size_t area_size;
    uint32_t nframes;
    uint32_t frame_size;
    uint32_t ring_size;
    uint32_t tx_reserve; /* free frames the fill ring never takes, so tx can allocate */
    uint8_t *state;      /* one F_* per frame */
    uint32_t *free_stack;
    uint32_t free_top;
    uint32_t n_fill, n_app, n_tx;
    struct ps_xsk_stats st;
};

static inline uint32_t frame_index(const struct ps_xsk *x, uint64_t addr)
{
    return (uint32_t)(addr / x->frame_size);
}

static void refill(struct ps_xsk *x)
{
    if (x->free_top <= x->tx_reserve)
        return;
    uint32_t want = x->free_top - x->tx_reserve;
    uint32_t idx;
    uint32_t space = xsk_prod_nb_free(&x->fill, want);
    if (want > space)
        want = space;
    if (want == 0)
        return;
    uint32_t got = xsk_ring_prod__reserve(&x->fill, want, &idx);
    for (uint32_t i = 0; i < got; i++) {
        uint32_t f = x->free_stack[--x->free_top];
        x->state[f] = F_FILL;
        *xsk_ring_prod__fill_addr(&x->fill, idx + i) = (uint64_t)f * x->frame_size;
    }
    xsk_ring_prod__submit(&x->fill, got);
    x->n_fill += got;
}

struct ps_xsk *ps_xsk_open(const char *ifname, uint32_t queue, uint32_t nframes,
                           uint32_t frame_size, uint32_t ring_size, int mode,
                           char *err, size_t errlen)
{
    struct ps_xsk *x = calloc(1, sizeof(*x));
    int ret;

    if (!x) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (ring_size == 0 || (ring_size & (ring_size - 1)) || frame_size < 2048 ||
        (frame_size & (frame_size - 1)) || nframes < 2 * ring_size) {
        snprintf(err, errlen, "bad sizes: ring %u (power of two), frame %u (power of two >= 2048), "
                 "frames %u (>= 2 x ring)", ring_size, frame_size, nframes);
        free(x);
        return NULL;
    }
    x->nframes = nframes;
    x->frame_size = frame_size;
    x->ring_size = ring_size;
    x->tx_reserve = nframes - ring_size < ring_size / 2 ? nframes - ring_size : ring_size / 2;
    x->area_size = (size_t)nframes * frame_size;
    x->area = mmap(NULL, x->area_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    x->state = calloc(nframes, 1);
    x->free_stack = calloc(nframes, sizeof(uint32_t));
    if (x->area == MAP_FAILED || !x->state || !x->free_stack) {
        snprintf(err, errlen, "cannot allocate a UMEM of %zu bytes", x->area_size);
        if (x->area == MAP_FAILED)
            x->area = NULL;
        ps_xsk_close(x);
        return NULL;
    }

    /* A completion ring that can hold every frame is never full: the kernel never has to
     * refuse a transmit (EAGAIN) because completions were not reaped yet. */
    uint32_t comp_size = ring_size;
    while (comp_size < nframes)
        comp_size <<= 1;
    struct xsk_umem_config ucfg = {
        .fill_size = ring_size,
        .comp_size = comp_size,
        .frame_size = frame_size,
        .frame_headroom = 0,
        .flags = 0,
    };
    ret = xsk_umem__create(&x->umem, x->area, x->area_size, &x->fill, &x->comp, &ucfg);
    if (ret) {
        snprintf(err, errlen, "xsk_umem__create: %s", strerror(-ret));
        ps_xsk_close(x);
        return NULL;
    }

    struct xsk_socket_config scfg = {
        .rx_size = ring_size,
        .tx_size = ring_size,
        .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
        .xdp_flags = 0,
        .bind_flags = XDP_USE_NEED_WAKEUP,
    };
    if (mode == 1)
        scfg.bind_flags |= XDP_COPY;
    else if (mode == 2)
        scfg.bind_flags |= XDP_ZEROCOPY;
    ret = xsk_socket__create(&x->sock, ifname, queue, x->umem, &x->rx, &x->tx, &scfg);
    if (ret) {
        snprintf(err, errlen, "xsk_socket__create(%s, queue %u): %s", ifname, queue,
                 strerror(-ret));
        ps_xsk_close(x);
        return NULL;
    }

    for (uint32_t i = 0; i < nframes; i++)
        x->free_stack[i] = nframes - 1 - i;
    x->free_top = nframes;
    x->st.frames = nframes;
    refill(x);
    return x;
}

void ps_xsk_close(struct ps_xsk *x)
{
    if (!x)
        return;
    if (x->sock)
        xsk_socket__delete(x->sock);
    if (x->umem)
        xsk_umem__delete(x->umem);
    if (x->area)
        munmap(x->area, x->area_size);
    free(x->state);
    free(x->free_stack);
    free(x);
}

int ps_xsk_fd(struct ps_xsk *x) { return xsk_socket__fd(x->sock); }
uint8_t *ps_xsk_area(struct ps_xsk *x) { return x->area; }
uint32_t ps_xsk_frame_size(struct ps_xsk *x) { return x->frame_size; }

uint32_t ps_tx_complete(struct ps_xsk *x)
{
    uint32_t idx;
    uint32_t n = xsk_ring_cons__peek(&x->comp, x->nframes, &idx);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t f = frame_index(x, *xsk_ring_cons__comp_addr(&x->comp, idx + i));
        if (f < x->nframes && x->state[f] == F_TX) {
            x->state[f] = F_FREE;
            x->free_stack[x->free_top++] = f;
            x->n_tx--;
        }
    }
    xsk_ring_cons__release(&x->comp, n);
    x->st.tx_frames += n;
    return n;
}

uint32_t ps_rx_burst(struct ps_xsk *x, struct ps_desc *out, uint32_t max)
{
    uint32_t idx;
    ps_tx_complete(x);
    refill(x);
    uint32_t n = xsk_ring_cons__peek(&x->rx, max, &idx);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
        uint32_t f = frame_index(x, d->addr);
        if (f >= x->nframes || x->state[f] != F_FILL)
            continue; /* cannot happen with a sane kernel; never hand out a frame twice */
        x->state[f] = F_APP;
        x->n_fill--;
        x->n_app++;
        out[k].addr = d->addr;
        out[k].len = d->len;
        out[k].flags = 0;
        out[k].syncookie = 0;
        if (d->addr % x->frame_size >= META_SIZE) {
            const uint16_t *meta = (const uint16_t *)(x->area + d->addr - META_SIZE);
            if (meta[1] == META_MAGIC) {
                out[k].flags = meta[0];
                memcpy(&out[k].syncookie, meta + 2, 4);
            }
        }
        k++;
    }
    xsk_ring_cons__release(&x->rx, n);
    x->st.rx_frames += k;
    if (n == 0 && xsk_ring_prod__needs_wakeup(&x->fill))
        recvfrom(xsk_socket__fd(x->sock), NULL, 0, MSG_DONTWAIT, NULL, NULL);
    return k;
}

uint32_t ps_release(struct ps_xsk *x, const struct ps_desc *descs, uint32_t n)
{
    uint32_t ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t f = frame_index(x, descs[i].addr);
        if (f >= x->nframes || x->state[f] != F_APP) {
            x->st.bad_release++;
            continue;
        }
        x->state[f] = F_FREE;
        x->free_stack[x->free_top++] = f;
        x->n_app--;
        ok++;
    }
    refill(x);
    return ok;
}

uint32_t ps_tx_alloc(struct ps_xsk *x, struct ps_desc *descs, uint32_t n)
{
    if (x->free_top < n)
        ps_tx_complete(x);
    uint32_t k = 0;
    while (k < n && x->free_top > 0) {
        uint32_t f = x->free_stack[--x->free_top];
        x->state[f] = F_APP;
        x->n_app++;
        descs[k].addr = (uint64_t)f * x->frame_size;
        descs[k].len = 0;
        descs[k].flags = 0;
        descs[k].syncookie = 0;
        k++;
    }
    return k;
}

static void kick_tx(struct ps_xsk *x, uint32_t queued)
{
    /* Copy mode sends at most 32 frames per sendto() and says EAGAIN while more wait. */
    uint32_t tries = queued / 16 + 4;
    int fd = xsk_socket__fd(x->sock);
    while (tries--) {
        if (!xsk_ring_prod__needs_wakeup(&x->tx))
            return;
        x->st.kicks++;
        if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
            return;
        if (errno != EAGAIN && errno != EBUSY && errno != ENOBUFS)
            return;
        ps_tx_complete(x);
    }
}

uint32_t ps_tx_submit(struct ps_xsk *x, const struct ps_desc *descs, uint32_t n, int csum)
{
    uint32_t idx, k = 0;
    uint32_t space = xsk_prod_nb_free(&x->tx, n);
    if (space < n) {
        ps_tx_complete(x);
        space = xsk_prod_nb_free(&x->tx, n);
    }
    uint32_t want = n < space ? n : space;
    /* Only a prefix of frames the application really holds is queued. */
    while (k < want) {
        uint32_t f = frame_index(x, descs[k].addr);
        if (f >= x->nframes || x->state[f] != F_APP || descs[k].len > x->frame_size -
            descs[k].addr % x->frame_size)
            break;
        k++;
    }
    if (k == 0)
        return 0;
    uint32_t got = xsk_ring_prod__reserve(&x->tx, k, &idx);
    for (uint32_t i = 0; i < got; i++) {
        uint32_t f = frame_index(x, descs[i].addr);
        if (csum)
            ps_csum_fill(x->area + descs[i].addr, descs[i].len);
        struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + i);
        d->addr = descs[i].addr;
        d->len = descs[i].len;
        d->options = 0;
        x->state[f] = F_TX;
    }
    xsk_ring_prod__submit(&x->tx, got);
    x->n_app -= got;
    x->n_tx += got;
    kick_tx(x, got);
    return got;
}

int ps_xsk_wait(struct ps_xsk *x, int timeout_ms)
{
    struct pollfd p = {.fd = xsk_socket__fd(x->sock), .events = POLLIN};
    if (xsk_cons_nb_avail(&x->rx, 1))
        return 1;
    int r = poll(&p, 1, timeout_ms);
    return r < 0 ? -errno : r;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int ps_xsk_spin(struct ps_xsk *x, uint32_t usec)
{
    /* Like the kernel's busy polling (net.core.busy_poll): after activity, the next frame
     * usually follows within tens of microseconds; reading the ring costs no syscall and
     * no scheduler wakeup. The clock is read every 64 looks only (vDSO, cheap anyway). */
    uint64_t end = now_ns() + (uint64_t)usec * 1000u;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (xsk_cons_nb_avail(&x->rx, 1))
                return 1;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (now_ns() >= end)
            return 0;
    }
}

void ps_xsk_get_stats(struct ps_xsk *x, struct ps_xsk_stats *st)
{
    struct xdp_statistics xs;
    socklen_t len = sizeof(xs);
    x->st.free = x->free_top;
    x->st.fill = x->n_fill;
    x->st.app = x->n_app;
    x->st.tx = x->n_tx;
    if (getsockopt(xsk_socket__fd(x->sock), SOL_XDP, XDP_STATISTICS, &xs, &len) == 0) {
        x->st.rx_dropped = xs.rx_dropped;
        x->st.rx_ring_full = xs.rx_ring_full;
        x->st.fill_ring_empty = xs.rx_fill_ring_empty_descs;
        x->st.tx_ring_empty = xs.tx_ring_empty_descs;
    }
    *st = x->st;
}

int ps_xsk_check(struct ps_xsk *x)
{
    uint32_t count[4] = {0, 0, 0, 0};
    for (uint32_t i = 0; i < x->nframes; i++) {
        if (x->state[i] > F_TX)
            return -1;
        count[x->state[i]]++;
    }
    if (count[F_FREE] != x->free_top || count[F_FILL] != x->n_fill ||
        count[F_APP] != x->n_app || count[F_TX] != x->n_tx)
        return -2;
    /* Each free-list entry is a distinct free frame: mark and unmark. */
    for (uint32_t i = 0; i < x->free_top; i++) {
        uint32_t f = x->free_stack[i];
        if (f >= x->nframes || x->state[f] != F_FREE)
            return -3;
        x->state[f] = 0xff;
    }
    for (uint32_t i = 0; i < x->free_top; i++)
        x->state[x->free_stack[i]] = F_FREE;
    return 0;
}

/* ---- checksums (RFC 1071), IPv4 (RFC 791 §3.1), TCP pseudo-header (RFC 9293 §3.1) ---- */

static uint64_t sum_bytes(const uint8_t *p, uint32_t len, uint64_t sum)
{
    uint64_t q;
    uint32_t w;
    while (len >= 8) { /* two 32-bit words at a time; each add stays far below 2^64 */
        memcpy(&q, p, 8);
        sum += (q & 0xffffffffu) + (q >> 32);
        p += 8;
        len -= 8;
    }
    while (len >= 4) {
        memcpy(&w, p, 4);
        sum += w;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        sum += h;
        p += 2;
        len -= 2;
    }
    if (len)
        sum += *p; /* little-endian: the odd byte is the high byte of a padded word */
    return sum;
}

static uint16_t fold(uint64_t sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

/* Finds the IPv4 and TCP headers; returns the TCP length or -1 if malformed. */
static int locate(const uint8_t *f, uint32_t len, uint32_t *ihl)
{
    if (len < 14 + 20 || f[12] != 0x08 || f[13] != 0x00)
        return -1;
    const uint8_t *ip = f + 14;
    *ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    uint32_t tot = ((uint32_t)ip[2] << 8) | ip[3];
    if ((ip[0] >> 4) != 4 || *ihl < 20 || tot < *ihl + 20 || 14 + tot > len || ip[9] != 6)
        return -1;
    return (int)(tot - *ihl);
}

static uint64_t pseudo(const uint8_t *ip, uint32_t tcp_len)
{
    uint32_t s, d;
    memcpy(&s, ip + 12, 4);
    memcpy(&d, ip + 16, 4);
    uint16_t proto = htons(6), l = htons((uint16_t)tcp_len);
    return (uint64_t)s + d + proto + l;
}

int ps_csum_fill(uint8_t *f, uint32_t len)
{
    uint32_t ihl;
    int tcp_len = locate(f, len, &ihl);
    if (tcp_len < 0)
        return -1;
    uint8_t *ip = f + 14, *tcp = ip + ihl;
    uint16_t c;
    ip[10] = ip[11] = 0;
    c = (uint16_t)~fold(sum_bytes(ip, ihl, 0));
    memcpy(ip + 10, &c, 2);
    tcp[16] = tcp[17] = 0;
    c = (uint16_t)~fold(sum_bytes(tcp, (uint32_t)tcp_len, pseudo(ip, (uint32_t)tcp_len)));
    memcpy(tcp + 16, &c, 2);
    return 0;
}

int ps_csum_verify(const uint8_t *f, uint32_t len)
{
    uint32_t ihl;
    int tcp_len = locate(f, len, &ihl);
    if (tcp_len < 0)
        return -1;
    const uint8_t *ip = f + 14, *tcp = ip + ihl;
    if (fold(sum_bytes(ip, ihl, 0)) != 0xffff)
        return -2;
    if (fold(sum_bytes(tcp, (uint32_t)tcp_len, pseudo(ip, (uint32_t)tcp_len))) != 0xffff)
        return -3;
    return 0;
}

void ps_tx_fill(struct ps_xsk *x, struct ps_desc *descs, uint32_t n, const uint8_t *tmpl,
                uint32_t len)
{
    if (len > x->frame_size)
        return;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(x->area + descs[i].addr, tmpl, len);
        descs[i].len = len;
    }
}

void ps_reflect(struct ps_xsk *x, struct ps_desc *descs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *f = x->area + descs[i].addr, tmp[6];
        uint32_t ihl;
        if (locate(f, descs[i].len, &ihl) < 0)
            continue;
        memcpy(tmp, f, 6);
        memcpy(f, f + 6, 6);
        memcpy(f + 6, tmp, 6);
        uint8_t *ip = f + 14, *tcp = ip + ihl;
        memcpy(tmp, ip + 12, 4);
        memcpy(ip + 12, ip + 16, 4);
        memcpy(ip + 16, tmp, 4);
        memcpy(tmp, tcp, 2);
        memcpy(tcp, tcp + 2, 2);
        memcpy(tcp + 2, tmp, 2);
    }
}

/* ---- XDP attachment ---- */

int ps_xdp_link_create(int prog_fd, int ifindex, uint32_t xdp_flags)
{
    LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = xdp_flags);
    int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);
    return fd < 0 ? -errno : fd;
}

int ps_xdp_pass_prog(void)
{
    /* r0 = XDP_PASS; exit */
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS},
        {.code = BPF_JMP | BPF_EXIT},
    };
    int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "pystack_pass", "GPL", insns, 2, NULL);
    return fd < 0 ? -errno : fd;
}

int ps_xdp_query_id(int ifindex, uint32_t *prog_id)
{
    int r = bpf_xdp_query_id(ifindex, 0, prog_id);
    return r < 0 ? r : 0;
}

int ps_xdp_test_run(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t *action,
                    uint8_t *out, uint32_t *out_len, uint32_t *meta_len)
{
    /* The kernel reports where the metadata ends only through an xdp_md context, and
     * takes one only if it describes the input exactly: no metadata, data_end = len. */
    struct xdp_md ctx_in = {.data = 0, .data_end = len}, ctx_out = {0};
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len,
                .data_out = out, .data_size_out = out ? *out_len : 0, .repeat = 1);
    if (meta_len) {
        opts.ctx_in = &ctx_in;
        opts.ctx_size_in = sizeof(ctx_in);
        opts.ctx_out = &ctx_out;
        opts.ctx_size_out = sizeof(ctx_out);
    }
    int r = bpf_prog_test_run_opts(prog_fd, &opts);
    if (r < 0)
        return -errno;
    *action = opts.retval;
    if (out_len)
        *out_len = opts.data_size_out;
    if (meta_len)
        *meta_len = ctx_out.data;
    return 0;
}

/* ---- batch parsing (rx) ----
 * The checks and their order are pystack.wire.frame.parse_frame's (without checksums: the
 * XDP program verified them, META_CSUM_OK), so both give the same segment or the same
 * reason; tests/unit/test_wire_c_batch.py holds them to it. */

#define ETH_HLEN_ 14
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_PSH 0x08
#define TCP_F_ACK 0x10
#define TCP_F_URG 0x20
#define TCP_F_ECE 0x40
#define TCP_F_CWR 0x80
#define META_CSUM_OK_ 0x0001u
#define META_COOKIE_OK_ 0x0002u
#define NO_FRAG 0xffffffffu

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* TCP options (RFC 9293 §3.2), as pystack.wire.tcp.parse_options: unknown kinds skipped,
 * a repeated option replaces the earlier one, a bad length refuses the segment. */
static int parse_opts(const uint8_t *b, uint32_t n, struct ps_rxseg *s)
{
    uint32_t i = 0;
    while (i < n) {
        uint8_t kind = b[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n)
            return PS_E_BAD_OPTION;
        uint32_t len = b[i + 1];
        if (len < 2 || i + len > n)
            return PS_E_BAD_OPTION;
        switch (kind) {
        case 2: /* MSS, RFC 9293 §3.2 */
            if (len != 4)
                return PS_E_BAD_OPTION;
            s->mss = rd16(b + i + 2);
            s->opts |= PS_O_MSS;
            break;
        case 3: /* window scale, RFC 7323 §2.2 */
            if (len != 3)
                return PS_E_BAD_OPTION;
            s->wscale = b[i + 2];
            s->opts |= PS_O_WSCALE;
            break;
        case 4: /* SACK permitted, RFC 2018 §2 */
            if (len != 2)
                return PS_E_BAD_OPTION;
            s->opts |= PS_O_SACK_PERM;
            break;
        case 5: { /* SACK, RFC 2018 §3 */
            uint32_t nb = (len - 2) / 8;
            if ((len - 2) % 8 || nb < 1 || nb > 4)
                return PS_E_BAD_OPTION;
            for (uint32_t k = 0; k < 2 * nb; k++)
                s->sack[k] = rd32(b + i + 2 + 4 * k);
            s->nsack = (uint8_t)nb;
            break;
        }
        case 8: /* timestamps, RFC 7323 §3.2 */
            if (len != 10)
                return PS_E_BAD_OPTION;
            s->tsval = rd32(b + i + 2);
            s->tsecr = rd32(b + i + 6);
            s->opts |= PS_O_TS;
            break;
        case 34: { /* Fast Open, RFC 7413 §4.1.1 */
            uint32_t clen = len - 2;
            if (clen && ((clen & 1) || clen < 4 || clen > 16))
                return PS_E_BAD_OPTION;
            memcpy(s->fo, b + i + 2, clen);
            s->fo_len = (uint8_t)clen;
            s->opts |= PS_O_FASTOPEN;
            break;
        }
        case 254: /* RFC 6994 experimental Fast Open (ExID 0xF989), as Linux */
            if (len >= 4 && rd16(b + i + 2) == 0xF989 && !(s->opts & PS_O_FASTOPEN)) {
                uint32_t clen = len - 4;
                if (clen == 0 || (!(clen & 1) && clen >= 4 && clen <= 16)) {
                    memcpy(s->fo, b + i + 4, clen);
                    s->fo_len = (uint8_t)clen;
                    s->opts |= PS_O_FASTOPEN;
                }
            }
            break;
        default:
            break;
        }
        i += len;
    }
    return PS_E_OK;
}

/* One frame: fills s, returns PS_E_*; *pay_at = frame offset of the payload. */
static int parse_frame_c(const uint8_t *f, uint32_t len, struct ps_rxseg *s, uint32_t *pay_at)
{
    if (len < ETH_HLEN_)
        return PS_E_TRUNCATED;
    if (f[12] != 0x08 || f[13] != 0x00)
        return PS_E_NOT_IPV4;
    const uint8_t *ip = f + ETH_HLEN_;
    uint32_t iplen = len - ETH_HLEN_;
    if (iplen < 20)
        return PS_E_TRUNCATED;
    if ((ip[0] >> 4) != 4)
        return PS_E_NOT_IPV4;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > iplen)
        return PS_E_BAD_IHL;
    uint32_t tot = rd16(ip + 2); /* bytes past it are link padding (RFC 894) */
    if (tot < ihl || tot > iplen)
        return PS_E_BAD_TOTAL_LENGTH;
    if (rd16(ip + 6) & 0x3fff) /* MF or an offset: no reassembly (RFC 791 §2.3) */
        return PS_E_FRAGMENT;
    if (ip[9] != 6)
        return PS_E_NOT_TCP;
    const uint8_t *t = ip + ihl;
    uint32_t tlen = tot - ihl;
    if (tlen < 20)
        return PS_E_TRUNCATED;
    uint32_t hl = (uint32_t)(t[12] >> 4) * 4; /* data offset, RFC 9293 §3.1 */
    if (hl < 20 || hl > tlen)
        return PS_E_BAD_DOFF;
    int e = parse_opts(t + 20, hl - 20, s);
    if (e)
        return e;
    s->src_ip = rd32(ip + 12);
    s->dst_ip = rd32(ip + 16);
    s->ecn = ip[1] & 0x03;
    s->src_port = rd16(t);
    s->dst_port = rd16(t + 2);
    s->seq = rd32(t + 4);
    s->ack = rd32(t + 8);
    s->flags = t[13];
    s->window = rd16(t + 14);
    s->urgent = rd16(t + 18);
    s->pay_len = tlen - hl;
    memcpy(s->eth_src, f + 6, 6);
    *pay_at = ETH_HLEN_ + ihl + hl;
    return PS_E_OK;
}

static int same_opts(const struct ps_rxseg *a, const struct ps_rxseg *b)
{
    if (a->opts != b->opts || a->nsack != b->nsack)
        return 0;
    if ((a->opts & PS_O_MSS) && a->mss != b->mss)
        return 0;
    if ((a->opts & PS_O_WSCALE) && a->wscale != b->wscale)
        return 0;
    if ((a->opts & PS_O_TS) && (a->tsval != b->tsval || a->tsecr != b->tsecr))
        return 0;
    if ((a->opts & PS_O_FASTOPEN) &&
        (a->fo_len != b->fo_len || memcmp(a->fo, b->fo, a->fo_len)))
        return 0;
    return memcmp(a->sack, b->sack, 8u * a->nsack) == 0;
}

/* GRO (Linux tcp_gro_receive, stricter): s continues p's in-order run of full-sized data
 * segments: flags ACK (PSH allowed on the last one, which ends the run), same ack, window,
 * urgent field, ECN bits and options (so the same TSval), contiguous seq, no longer than
 * the first frame; a shorter frame ends the run too. */
static int can_merge_data(const struct ps_rxseg *p, const struct ps_rxseg *s,
                          const struct ps_rxfrag *frags)
{
    if (!p->pay_len || !s->pay_len || p->flags != TCP_F_ACK ||
        (s->flags != TCP_F_ACK && s->flags != (TCP_F_ACK | TCP_F_PSH)))
        return 0;
    uint32_t first_len = frags[p->first].len;
    if (p->gso_segs >= PS_GRO_MAX_SEGS || frags[p->last].len != first_len ||
        s->pay_len > first_len)
        return 0;
    return s->seq == p->seq + p->pay_len && s->ack == p->ack && s->window == p->window &&
           s->urgent == p->urgent && s->ecn == p->ecn && same_opts(p, s);
}

/* Pure ACKs that only advance SND.UNA: the latest stands for all. Never two with the same
 * ack (duplicate ACKs drive fast retransmit, RFC 5681 §3.2), nor one that repeated the
 * ACK before it with a later one; never with SACK blocks or options other than timestamps,
 * never across a window change. */
static int is_pure_ack(const struct ps_rxseg *s)
{
    return !s->pay_len && s->flags == TCP_F_ACK;
}

static int can_merge_ack(const struct ps_rxseg *p, const struct ps_rxseg *s)
{
    /* A known duplicate keeps its place even before an ACK that advances. */
    if (!is_pure_ack(p) || !is_pure_ack(s) || p->dupack)
        return 0;
    if (p->nsack || s->nsack || (p->opts & ~PS_O_TS) || p->opts != s->opts)
        return 0;
    /* The window may differ: the latest ACK's is the one the sender keeps (RFC 9293
     * §3.10.7.4: each advancing ACK updates SND.WND), as processing each would leave it. */
    return s->seq == p->seq && (int32_t)(s->ack - p->ack) > 0 &&
           s->urgent == p->urgent && s->ecn == p->ecn && p->gso_segs < PS_GRO_MAX_SEGS;
}

#define FLOW_SLOTS 1024u /* flows one batch can merge (frame.py GRO_FLOW_SLOTS) */

static inline uint32_t flow_hash(const struct ps_rxseg *s)
{
    uint32_t h = s->src_ip * 0x9e3779b1u ^ s->dst_ip * 0x85ebca6bu ^
                 ((uint32_t)s->src_port << 16 | s->dst_port) * 0xc2b2ae35u;
    return (h ^ (h >> 15)) & (FLOW_SLOTS - 1);
}

static inline int same_flow(const struct ps_rxseg *a, const struct ps_rxseg *b)
{
    return a->src_ip == b->src_ip && a->dst_ip == b->dst_ip && a->src_port == b->src_port &&
           a->dst_port == b->dst_port;
}

uint32_t ps_rx_parse(const uint8_t *area, const struct ps_desc *descs, uint32_t n,
                     struct ps_rxseg *out, struct ps_rxfrag *frags, int coalesce)
{
    uint32_t slot[FLOW_SLOTS]; /* flow -> 1 + index in out of its latest entry */
    uint32_t m = 0;
    if (coalesce)
        memset(slot, 0, sizeof(slot));
    for (uint32_t i = 0; i < n; i++) {
        struct ps_rxseg *s = &out[m];
        uint32_t pay_at = 0;
        memset(s, 0, sizeof(*s));
        s->first = s->last = i;
        s->gso_segs = 1;
        s->meta = (uint16_t)descs[i].flags;
        frags[i].addr = descs[i].addr;
        frags[i].len = 0;
        frags[i].next = NO_FRAG;
        int e = (descs[i].flags & META_CSUM_OK_)
                    ? parse_frame_c(area + descs[i].addr, descs[i].len, s, &pay_at)
                    : PS_E_UNVERIFIED;
        if (e) {
            memset(s, 0, sizeof(*s));
            s->first = s->last = i;
            s->error = (uint8_t)e;
            s->meta = (uint16_t)descs[i].flags;
            m++;
            continue;
        }
        frags[i].addr = descs[i].addr + pay_at;
        frags[i].len = s->pay_len;
        if (descs[i].flags & META_COOKIE_OK_)
            s->syncookie = descs[i].syncookie;
        if (!coalesce) {
            m++;
            continue;
        }
        /* Merge only plain verified frames: a cookie ACK is always seen alone. */
        uint32_t h = flow_hash(s), probe, found = NO_FRAG;
        for (probe = 0; probe < FLOW_SLOTS; probe++) {
            uint32_t k = (h + probe) & (FLOW_SLOTS - 1);
            if (!slot[k])
                break;
            if (same_flow(&out[slot[k] - 1], s)) {
                found = k;
                break;
            }
        }
        if (found != NO_FRAG && s->meta == META_CSUM_OK_) {
            struct ps_rxseg *p = &out[slot[found] - 1];
            if (p->meta == META_CSUM_OK_) {
                if ((coalesce & PS_GRO_DATA) && can_merge_data(p, s, frags)) {
                    if (p->gso_segs == 1)
                        p->gso_size = p->pay_len;
                    p->pay_len += s->pay_len;
                    p->flags = s->flags;
                    p->gso_segs++;
                    frags[p->last].next = i;
                    p->last = i;
                    continue;
                }
                if ((coalesce & PS_GRO_ACKS) && can_merge_ack(p, s)) {
                    uint16_t segs = p->gso_segs + 1;
                    uint32_t first = p->first;
                    *p = *s;
                    p->gso_segs = segs;
                    p->first = first;
                    continue;
                }
            }
        }
        if (found != NO_FRAG) {
            const struct ps_rxseg *p = &out[slot[found] - 1];
            s->dupack = is_pure_ack(p) && is_pure_ack(s) && p->ack == s->ack;
            slot[found] = m + 1;
        }
        else if (probe < FLOW_SLOTS)
            slot[(h + probe) & (FLOW_SLOTS - 1)] = m + 1;
        m++;
    }
    return m;
}

void ps_rx_gather(const uint8_t *area, const struct ps_rxseg *segs, uint32_t m,
                  const struct ps_rxfrag *frags, uint8_t **dst)
{
    for (uint32_t i = 0; i < m; i++) {
        uint8_t *d = dst[i];
        if (!d || segs[i].error || !segs[i].pay_len)
            continue;
        for (uint32_t k = segs[i].first; k != NO_FRAG; k = frags[k].next) {
            memcpy(d, area + frags[k].addr, frags[k].len);
            d += frags[k].len;
        }
    }
}

/* ---- batch building (tx) ----
 * Frames as pystack.wire.frame.build_frame writes them (Ethernet II, IPv4 with DF, id 0,
 * TTL 64, TCP with options in Linux's tcp_options_write order), checksums filled. */

#define TX_TTL 64

/* Options length as pystack.wire.tcp.options_len; -1 if they cannot be emitted. */
static int tx_opts_len(const struct ps_txseg *s)
{
    int n = 0;
    if (s->nsack > 4)
        return -1;
    if (s->opts & PS_O_FASTOPEN && s->fo_len &&
        ((s->fo_len & 1) || s->fo_len < 4 || s->fo_len > 16))
        return -1;
    if (s->opts & PS_O_MSS)
        n += 4;
    if (s->opts & PS_O_TS)
        n += 12;
    else if (s->opts & PS_O_SACK_PERM)
        n += 4;
    if (s->opts & PS_O_WSCALE)
        n += 4;
    if (s->nsack)
        n += 4 + 8 * s->nsack;
    if (s->opts & PS_O_FASTOPEN)
        n += (2 + s->fo_len + 3) & ~3;
    return n > 40 ? -1 : n;
}

static void tx_opts_write(const struct ps_txseg *s, uint8_t *p)
{
    if (s->opts & PS_O_MSS) {
        p[0] = 2; p[1] = 4;
        wr16(p + 2, s->mss);
        p += 4;
    }
    if (s->opts & PS_O_TS) {
        if (s->opts & PS_O_SACK_PERM) {
            p[0] = 4; p[1] = 2;
        } else {
            p[0] = 1; p[1] = 1;
        }
        p[2] = 8; p[3] = 10;
        wr32(p + 4, s->tsval);
        wr32(p + 8, s->tsecr);
        p += 12;
    } else if (s->opts & PS_O_SACK_PERM) {
        p[0] = 1; p[1] = 1; p[2] = 4; p[3] = 2;
        p += 4;
    }
    if (s->opts & PS_O_WSCALE) {
        p[0] = 1; p[1] = 3; p[2] = 3; p[3] = s->wscale;
        p += 4;
    }
    if (s->nsack) {
        p[0] = 1; p[1] = 1; p[2] = 5; p[3] = (uint8_t)(2 + 8 * s->nsack);
        p += 4;
        for (uint32_t k = 0; k < 2u * s->nsack; k++, p += 4)
            wr32(p, s->sack[k]);
    }
    if (s->opts & PS_O_FASTOPEN) {
        uint32_t end = (2u + s->fo_len + 3) & ~3u;
        p[0] = 34; p[1] = (uint8_t)(2 + s->fo_len);
        memcpy(p + 2, s->fo, s->fo_len);
        for (uint32_t k = 2u + s->fo_len; k < end; k++)
            p[k] = 1;
    }
}

uint32_t ps_tx_frames(struct ps_txseg *s, uint32_t frame_size)
{
    int ol = tx_opts_len(s);
    if (ol < 0) {
        s->error = PS_E_BAD_OPTION;
        return 0;
    }
    uint32_t chunk = s->pay_len;
    uint32_t nf = 1;
    if (s->gso_size && s->pay_len > s->gso_size) {
        chunk = s->gso_size;
        nf = (s->pay_len + chunk - 1) / chunk;
    }
    if (ETH_HLEN_ + 20u + 20u + (uint32_t)ol + chunk > frame_size) {
        s->error = PS_E_TOO_BIG;
        return 0;
    }
    s->error = 0;
    return nf;
}

/* Frame k of segment s into f; returns its length. */
static uint32_t tx_build_one(const struct ps_txseg *s, uint32_t k, uint32_t nf,
                             const uint8_t *src_mac, uint8_t *f)
{
    uint32_t chunk = nf > 1 ? s->gso_size : s->pay_len;
    uint32_t off = k * chunk;
    uint32_t plen = s->pay_len - off < chunk ? s->pay_len - off : chunk;
    uint32_t ol = (uint32_t)tx_opts_len(s);
    uint32_t thl = 20 + ol, tcp_len = thl + plen;
    uint8_t flags = s->flags;
    if (k + 1 < nf)
        flags &= (uint8_t)~(TCP_F_PSH | TCP_F_FIN);
    if (k > 0)
        flags &= (uint8_t)~TCP_F_CWR;
    memcpy(f, s->dst_mac, 6);
    memcpy(f + 6, src_mac, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t *ip = f + ETH_HLEN_, *t = ip + 20;
    ip[0] = 0x45;
    ip[1] = s->ecn & 0x03;
    wr16(ip + 2, (uint16_t)(20 + tcp_len));
    wr16(ip + 4, 0);
    wr16(ip + 6, 0x4000); /* DF (RFC 1191) */
    ip[8] = TX_TTL;
    ip[9] = 6;
    ip[10] = ip[11] = 0;
    wr32(ip + 12, s->src_ip);
    wr32(ip + 16, s->dst_ip);
    wr16(t, s->src_port);
    wr16(t + 2, s->dst_port);
    wr32(t + 4, s->seq + off);
    wr32(t + 8, s->ack);
    t[12] = (uint8_t)((thl / 4) << 4);
    t[13] = flags;
    wr16(t + 14, s->window);
    t[16] = t[17] = 0;
    wr16(t + 18, s->urgent);
    tx_opts_write(s, t + 20);
    if (plen)
        memcpy(t + thl, (const uint8_t *)(uintptr_t)s->payload + off, plen);
    uint32_t len = ETH_HLEN_ + 20 + tcp_len;
    ps_csum_fill(f, len);
    return len;
}

uint32_t ps_build_frames(uint8_t *area, uint32_t frame_size, struct ps_txseg *segs, uint32_t n,
                         const uint8_t *src_mac, struct ps_desc *descs, uint32_t ndesc)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct ps_txseg *s = &segs[i];
        s->frames = 0;
        uint32_t nf = ps_tx_frames(s, frame_size);
        if (nf == 0 || k + nf > ndesc)
            continue;
        for (uint32_t j = 0; j < nf; j++, k++)
            descs[k].len = tx_build_one(s, j, nf, src_mac, area + descs[k].addr);
        s->frames = (uint16_t)nf;
    }
    return k;
}

uint32_t ps_tx_segs(struct ps_xsk *x, struct ps_txseg *segs, uint32_t n, const uint8_t *src_mac,
                    uint32_t *out)
{
    uint32_t need = 0, used = 0, refused = 0, i, idx;
    ps_tx_complete(x);
    uint32_t room = xsk_prod_nb_free(&x->tx, x->ring_size);
    if (room > x->free_top)
        room = x->free_top;
    /* The prefix of segments whose frames all fit. */
    for (i = 0; i < n; i++) {
        segs[i].frames = 0;
        uint32_t nf = ps_tx_frames(&segs[i], x->frame_size);
        if (need + nf > room)
            break;
        need += nf;
        refused += nf == 0;
    }
    uint32_t consumed = i;
    out[0] = 0;
    out[1] = refused;
    if (need == 0)
        return consumed;
    if (xsk_ring_prod__reserve(&x->tx, need, &idx) != need)
        return 0; /* cannot happen: room was checked; nothing was taken */
    for (i = 0; i < consumed; i++) {
        struct ps_txseg *s = &segs[i];
        if (s->error)
            continue;
        uint32_t nf = ps_tx_frames(s, x->frame_size);
        for (uint32_t j = 0; j < nf; j++, used++) {
            uint32_t f = x->free_stack[--x->free_top];
            uint64_t addr = (uint64_t)f * x->frame_size;
            struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + used);
            d->addr = addr;
            d->len = tx_build_one(s, j, nf, src_mac, x->area + addr);
            d->options = 0;
            x->state[f] = F_TX;
        }
        s->frames = (uint16_t)nf;
    }
    xsk_ring_prod__submit(&x->tx, used);
    x->n_tx += used;
    kick_tx(x, used);
    out[0] = used;
    return consumed;
}

uint32_t ps_tx_flush(struct ps_xsk *x)
{
    /* Nothing re-sends what a stopped device queue refused: the tx ring is read only on a
     * kick (sendto), so whoever queued frames must kick until they are gone. */
    ps_tx_complete(x);
    if (x->n_tx) {
        kick_tx(x, x->n_tx);
        ps_tx_complete(x);
    }
    return x->n_tx;
}
