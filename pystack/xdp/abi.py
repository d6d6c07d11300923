"""Values shared with the XDP program; mirrors bpf/pystack_xdp.h (a unit test checks)."""

from __future__ import annotations

MAX_QUEUES = 64

ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")  # index = ACT_* value

# Drop reasons, index = DROP_* value. Label values of pystack_xdp_drops_total{reason}.
DROP_REASONS = (
    "truncated",
    "bad_version",
    "bad_ihl",
    "bad_total_length",
    "bad_doff",
    "ip_checksum",
    "tcp_checksum",
    "fragment",
    "no_xsk",
)

META_MAGIC = 0x5053
META_CSUM_OK = 0x0001
META_SIZE = 8
