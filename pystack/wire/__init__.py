"""pystack.wire: packet views, parsers and builders (no I/O)."""

from pystack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum, tcp_checksum
from pystack.wire.errors import REASONS, WireError
from pystack.wire.ethernet import (
    ETH_HLEN,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    EthernetFrame,
    emit_ethernet,
)
from pystack.wire.frame import ParsedFrame, build_frame, frame_len, parse_frame
from pystack.wire.ipv4 import IPPROTO_TCP, Ipv4Packet, emit_ipv4
from pystack.wire.segment import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    FourTuple,
    TcpOptions,
    TcpSegment,
)
from pystack.wire.tcp import (
    TCP_MAX_OPTIONS,
    TcpHeader,
    emit_options,
    emit_tcp_header,
    encode_options,
    options_len,
    parse_options,
)

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "ETH_HLEN",
    "ETH_P_ARP",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "FIN",
    "IPPROTO_TCP",
    "PSH",
    "REASONS",
    "RST",
    "SYN",
    "TCP_MAX_OPTIONS",
    "URG",
    "EthernetFrame",
    "FourTuple",
    "Ipv4Packet",
    "ParsedFrame",
    "TcpHeader",
    "TcpOptions",
    "TcpSegment",
    "WireError",
    "build_frame",
    "emit_ethernet",
    "emit_ipv4",
    "emit_options",
    "emit_tcp_header",
    "encode_options",
    "frame_len",
    "internet_checksum",
    "ones_sum",
    "options_len",
    "parse_frame",
    "parse_options",
    "pseudo_header_sum",
    "tcp_checksum",
]
