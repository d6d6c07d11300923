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
/* Kick again if frames are still waiting in the tx ring (a kick gave up while the device
 * queue was stopped: copy mode says EAGAIN); returns the frames not yet completed. */
uint32_t ps_tx_flush(struct ps_xsk *x);
/* Wait for rx frames up to timeout_ms; returns >0 if readable, 0 on timeout, -errno. */
int ps_xsk_wait(struct ps_xsk *x, int timeout_ms);
/* Busy-poll: spin on the rx ring (no syscall) for up to usec microseconds; 1 as soon as
 * frames are ready, 0 when the time is up. */
int ps_xsk_spin(struct ps_xsk *x, uint32_t usec);
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

/* ---- Batch parsing and building: Ethernet II / IPv4 / TCP, no Python per frame ---- */

/* Why a frame was not turned into a segment (ps_rxseg.error). PS_E_UNVERIFIED: the XDP
 * program did not mark its checksums verified; the others mirror pystack.wire.errors. */
enum {
    PS_E_OK = 0, PS_E_UNVERIFIED = 1, PS_E_TRUNCATED = 2, PS_E_NOT_IPV4 = 3, PS_E_BAD_IHL = 4,
    PS_E_BAD_TOTAL_LENGTH = 5, PS_E_FRAGMENT = 6, PS_E_NOT_TCP = 7, PS_E_BAD_DOFF = 8,
    PS_E_BAD_OPTION = 9, PS_E_TOO_BIG = 10
};
/* Options present (ps_rxseg.opts, ps_txseg.opts). */
enum { PS_O_MSS = 1, PS_O_WSCALE = 2, PS_O_SACK_PERM = 4, PS_O_TS = 8, PS_O_FASTOPEN = 16 };
/* Merge rules of ps_rx_parse (the coalesce argument), see xsk.c. */
enum { PS_GRO_DATA = 1, PS_GRO_ACKS = 2, PS_GRO_MAX_SEGS = 64 };

/* One received segment: a frame, or several merged ones (gso_segs > 1). No padding: the
 * Python side reads an array of these with struct (pystack.io.batch mirrors the layout). */
struct ps_rxseg {
    uint32_t src_ip, dst_ip, seq, ack, tsval, tsecr;
    uint32_t sack[8];       /* nsack (left, right) pairs */
    uint32_t pay_len;       /* payload bytes, all merged frames */
    uint32_t gso_size;      /* merged: payload bytes of the first frame; else 0 */
    uint32_t syncookie;     /* desc.syncookie with META_COOKIE_OK, else 0 */
    uint32_t first, last;   /* batch index of the first and last frame (frags chain) */
    uint16_t src_port, dst_port, window, urgent, mss, gso_segs, meta;
    uint8_t flags, ecn, opts, wscale, nsack, fo_len;
    uint8_t fo[16];         /* Fast Open cookie (fo_len bytes; PS_O_FASTOPEN, 0 = request) */
    uint8_t eth_src[6];
    uint8_t error;          /* PS_E_*: the frame at `first` was refused, nothing else is set */
    uint8_t dupack;         /* a pure ACK repeating the flow's previous ACK in the batch */
};

/* Where each frame's payload is (filled by ps_rx_parse, one per frame of the batch). */
struct ps_rxfrag {
    uint64_t addr;  /* area offset of the payload */
    uint32_t len;
    uint32_t next;  /* next frame of the same merged segment, or 0xffffffff */
};

/* Parse n frames (area + descs[i].addr) into out (room for n), merging per `coalesce`.
 * Returns how many entries were written. Frames stay where they are. */
uint32_t ps_rx_parse(const uint8_t *area, const struct ps_desc *descs, uint32_t n,
                     struct ps_rxseg *out, struct ps_rxfrag *frags, int coalesce);
/* Copy each entry's payload (all its frames) to dst[i] (pay_len bytes; NULL: skip). */
void ps_rx_gather(const uint8_t *area, const struct ps_rxseg *segs, uint32_t m,
                  const struct ps_rxfrag *frags, uint8_t **dst);

/* One segment to send; gso_size > 0 splits a payload longer than it into frames of
 * gso_size bytes (TSO: seq advanced, PSH/FIN on the last frame only, CWR on the first). */
struct ps_txseg {
    uint64_t payload;       /* address of pay_len bytes */
    uint32_t src_ip, dst_ip, seq, ack, tsval, tsecr;
    uint32_t sack[8];
    uint32_t pay_len;
    uint16_t src_port, dst_port, window, urgent, mss, gso_size;
    uint8_t flags, ecn, opts, wscale, nsack, fo_len;
    uint8_t fo[16];
    uint8_t dst_mac[6];
    uint16_t frames;        /* out: frames built for it */
    uint8_t error;          /* out: PS_E_TOO_BIG / PS_E_BAD_OPTION: not sent */
    uint8_t pad;
};

/* Frames segment s needs (0 if it cannot be built: s->error says why). */
uint32_t ps_tx_frames(struct ps_txseg *s, uint32_t frame_size);
/* Build all frames of n segments into area at descs[k].addr (k counts frames; room for
 * ndesc), lengths into descs[k].len, checksums filled. Returns frames written; segments
 * that do not fit completely are left out (their frames field stays 0). */
uint32_t ps_build_frames(uint8_t *area, uint32_t frame_size, struct ps_txseg *segs, uint32_t n,
                         const uint8_t *src_mac, struct ps_desc *descs, uint32_t ndesc);
/* Build and queue n segments on the socket (frames taken from the free list, checksums,
 * one kick). Returns how many segments were consumed (sent, or refused with error set);
 * the rest found no free frame or tx ring slot. out[0]: frames queued, out[1]: segments
 * refused (error set). */
uint32_t ps_tx_segs(struct ps_xsk *x, struct ps_txseg *segs, uint32_t n, const uint8_t *src_mac,
                    uint32_t *out);

/* XDP attachment helpers (libbpf). */
int ps_xdp_link_create(int prog_fd, int ifindex, uint32_t xdp_flags);
int ps_xdp_pass_prog(void);
int ps_xdp_query_id(int ifindex, uint32_t *prog_id);
/* Run an XDP program once on a frame (BPF_PROG_TEST_RUN). Returns 0 and sets *action, or
 * -errno. out (optional) receives the frame as the program left it, preceded by the
 * metadata it wrote; with meta_len non-NULL *meta_len is set to that metadata's size. */
int ps_xdp_test_run(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t *action,
                    uint8_t *out, uint32_t *out_len, uint32_t *meta_len);
