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

    struct xsk_umem_config ucfg = {
        .fill_size = ring_size,
        .comp_size = ring_size,
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
    uint32_t n = xsk_ring_cons__peek(&x->comp, x->ring_size, &idx);
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
    uint32_t w;
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
