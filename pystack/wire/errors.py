"""The one exception the wire layer raises for malformed input."""

from __future__ import annotations

from typing import Literal, get_args

Reason = Literal[
    "truncated",
    "bad_ihl",
    "bad_total_length",
    "bad_doff",
    "bad_option",
    "bad_checksum",
    "fragment",
    "not_ipv4",
    "not_tcp",
]

REASONS: tuple[Reason, ...] = get_args(Reason)


class WireError(ValueError):
    """A frame that cannot be parsed. `reason` is a short fixed string (see REASONS),
    suitable as a metrics label; `detail` is free text for logs."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail
