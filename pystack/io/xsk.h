/* pystack AF_XDP I/O: the C half of pystack.io, bound with cffi in API mode (_build.py).
 * Python calls these once per batch, never once per byte. Plain C types only: this file is
 * also fed to cffi's cdef, so no macros, no includes. */

/* One frame handed between C and Python. addr is the UMEM offset of the packet data. */
struct ps_desc {
    uint64_t addr;
    uint32_t len;
    uint32_t flags;  /* rx: the XDP program's pystack_meta flags (META_CSUM_OK ...) */
    uint32_t syncookie;  /* rx: pystack_meta.syncookie, the SYN-cookie options of a
                          * META_COOKIE_OK frame (pystack.xdp.abi.decode_cookie_info), else 0 */
};

/* Frame accounting: every frame of the UMEM is in exactly one of these places. */
struct ps_xsk_stats {
    uint32_t frames;     /* total frames in the UMEM */
    uint32_t free;       /* on the free list */
    uint32_t fill;       /* given to the kernel via the fill ring */
    uint32_t app;        /* handed to the application (rx batches, tx allocations) */
    uint32_t tx;         /* in the tx ring or being sent, not yet completed */
    uint64_t rx_frames;  /* frames received */
    uint64_t tx_frames;  /* frames completed */
    uint64_t bad_release;  /* releases of frames the application did not hold (ignored) */
    uint64_t kicks;        /* sendto() wakeups */
    uint64_t rx_dropped;   /* kernel XDP_STATISTICS: dropped for lack of rx ring space etc. */
    uint64_t rx_ring_full;
    uint64_t fill_ring_empty;
    uint64_t tx_ring_empty;
};

struct ps_xsk;

/* mode: 0 = let the kernel choose, 1 = copy, 2 = zero-copy. Returns NULL and fills err. */
struct ps_xsk *ps_xsk_open(const char *ifname, uint32_t queue, uint32_t nframes,
                           uint32_t frame_size, uint32_t ring_size, int mode,
                           char *err, size_t errlen);
void ps_xsk_close(struct ps_xsk *x);
int ps_xsk_fd(struct ps_xsk *x);
uint8_t *ps_xsk_area(struct ps_xsk *x);
uint32_t ps_xsk_frame_size(struct ps_xsk *x);

/* Receive up to max frames; they belong to the application until released. */
uint32_t ps_rx_burst(struct ps_xsk *x, struct ps_desc *out, uint32_t max);
/* Give frames back (rx or unused tx allocations). Unknown or not-held frames are ignored
 * and counted (bad_release): a frame is never queued twice. Returns frames accepted. */
uint32_t ps_release(struct ps_xsk *x, const struct ps_desc *descs, uint32_t n);
/* Allocate up to n free frames for transmit; writes their addrs to descs[i].addr. */
uint32_t ps_tx_alloc(struct ps_xsk *x, struct ps_desc *descs, uint32_t n);
/* Queue frames for transmit (frames must be held by the application). With csum != 0,
 * IPv4 and TCP checksums are computed first. Returns how many were queued; the rest
 * stay with the application. Kicks the kernel as needed. */
uint32_t ps_tx_submit(struct ps_xsk *x, const struct ps_desc *descs, uint32_t n, int csum);
/* Reap the completion ring; returns frames freed. */
uint32_t ps_tx_complete(struct ps_xsk *x);
/* Wait for rx frames up to timeout_ms; returns >0 if readable, 0 on timeout, -errno. */
int ps_xsk_wait(struct ps_xsk *x, int timeout_ms);
void ps_xsk_get_stats(struct ps_xsk *x, struct ps_xsk_stats *st);
/* Walk the per-frame state table and check it against the counters: 0 if consistent. */
int ps_xsk_check(struct ps_xsk *x);

/* Copy a frame template into n allocated tx frames and set their lengths (generators). */
void ps_tx_fill(struct ps_xsk *x, struct ps_desc *descs, uint32_t n, const uint8_t *tmpl,
                uint32_t len);

/* Echo a batch in place: swap MAC, IP and port of each TCP frame (benchmarks, tests). */
void ps_reflect(struct ps_xsk *x, struct ps_desc *descs, uint32_t n);

/* Checksums over a whole Ethernet/IPv4/TCP frame (RFC 1071, RFC 9293 §3.1). */
int ps_csum_fill(uint8_t *frame, uint32_t len);
int ps_csum_verify(const uint8_t *frame, uint32_t len);

/* XDP attachment helpers (libbpf). */
int ps_xdp_link_create(int prog_fd, int ifindex, uint32_t xdp_flags);
int ps_xdp_pass_prog(void);
int ps_xdp_query_id(int ifindex, uint32_t *prog_id);
/* Run an XDP program once on a frame (BPF_PROG_TEST_RUN). Returns 0 and sets *action, or
 * -errno. out (optional) receives the frame as the program left it, preceded by the
 * metadata it wrote; with meta_len non-NULL *meta_len is set to that metadata's size. */
int ps_xdp_test_run(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t *action,
                    uint8_t *out, uint32_t *out_len, uint32_t *meta_len);
