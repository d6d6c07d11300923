"""Settings by sysctl name (tcp(7) defaults, kernel-style parsing, one-line errors)."""

import pytest

from pystack.tcp.settings import READ_ONLY, SETTINGS_SPEC, Settings


def test_linux_defaults() -> None:
    s = Settings()
    assert s.tcp_rmem == (4096, 131072, 6291456)
    assert s.tcp_wmem == (4096, 16384, 4194304)
    assert (s.tcp_sack, s.tcp_timestamps, s.tcp_window_scaling) == (1, 1, 1)
    assert (s.tcp_syn_retries, s.tcp_synack_retries, s.tcp_retries1, s.tcp_retries2) == (
        6, 5, 3, 15)
    assert (s.tcp_keepalive_time, s.tcp_keepalive_intvl, s.tcp_keepalive_probes) == (
        7200, 75, 9)
    assert s.tcp_fin_timeout == 60 and s.tcp_rfc1337 == 0 and s.tcp_abort_on_overflow == 0
    assert s.tcp_adv_win_scale == 1 and s.tcp_app_win == 31 and s.tcp_moderate_rcvbuf == 1
    assert s.tcp_congestion_control == "cubic" and s.tcp_ecn == 2 and s.tcp_syncookies == 1
    assert s.tcp_fastopen == 1 and s.tcp_tw_reuse == 2 and s.tcp_stdurg == 0
    assert s.tcp_slow_start_after_idle == 1 and s.tcp_reordering == 3 and s.tcp_frto == 2


def test_set_by_full_or_short_name() -> None:
    s = Settings()
    s.set("net.ipv4.tcp_sack", "0")
    assert s.tcp_sack == 0
    s.set("tcp_sack", "1")
    assert s.get("net.ipv4.tcp_sack") == 1
    s.set("/proc/sys/net/ipv4/tcp_fin_timeout", "30")
    assert s.tcp_fin_timeout == 30
    s.set("net.core.somaxconn", "128")
    assert s.somaxconn == 128
    assert Settings.full_name("tcp_sack") == "net.ipv4.tcp_sack"


def test_kernel_style_values() -> None:
    s = Settings()
    s.set("tcp_fastopen", "0x403")
    assert s.tcp_fastopen == 0x403
    s.set("tcp_rmem", "  8192\t87380   16777216 ")
    assert s.tcp_rmem == (8192, 87380, 16777216)
    assert s.format("tcp_rmem") == "8192\t87380\t16777216"
    s.set("tcp_congestion_control", "reno")
    assert s.tcp_congestion_control == "reno"
    s.set("tcp_fastopen_key", "00112233-44556677-8899AABB-CCDDEEFF")
    assert s.tcp_fastopen_key == "00112233-44556677-8899aabb-ccddeeff"
    s.set("tcp_adv_win_scale", "-2")
    assert s.tcp_adv_win_scale == -2


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("net.ipv4.tcp_nonsense", "1", "unknown setting"),
        ("net.core.tcp_sack", "1", "unknown setting"),
        ("tcp_sack", "yes", "invalid value"),
        ("tcp_sack", "2", "out of range"),
        ("tcp_syn_retries", "0", "out of range"),
        ("tcp_rmem", "1 2", "expected 3 integers"),
        ("tcp_rmem", "3 2 1", "min <= default <= max"),
        ("tcp_congestion_control", "warp", "unknown congestion control"),
        ("tcp_fastopen_key", "zz", "invalid key"),
        ("tcp_timestamps", "1.5", "invalid value"),
    ],
)
def test_bad_names_and_values_raise_one_line_value_error(name, value, fragment) -> None:
    s = Settings()
    with pytest.raises(ValueError) as ei:
        s.set(name, value)
    msg = str(ei.value)
    assert fragment in msg and "\n" not in msg


def test_attribute_assignment_is_validated() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.tcp_ecn = 7
    with pytest.raises(AttributeError):
        s.not_a_setting = 1  # type: ignore[attr-defined]


def test_items_copy_and_repr() -> None:
    s = Settings(tcp_sack=0)
    names = [n for n, _ in s.items()]
    assert len(names) == len(SETTINGS_SPEC) + len(READ_ONLY) and "net.ipv4.tcp_sack" in names
    t = s.copy()
    t.tcp_sack = 1
    assert s.tcp_sack == 0
    assert "tcp_sack=0" in repr(s)


def test_available_congestion_control_is_read_only_and_lists_the_registry() -> None:
    from pystack import cc

    s = Settings()
    assert s.get("net.ipv4.tcp_available_congestion_control") == " ".join(cc.available())
    assert "reno" in s.format("tcp_available_congestion_control").split()
    assert ("net.ipv4.tcp_available_congestion_control", s.get(
        "tcp_available_congestion_control")) in list(s.items())
    with pytest.raises(ValueError, match="read-only"):
        s.set("net.ipv4.tcp_available_congestion_control", "reno")


def test_version_counts_every_change_and_survives_copy() -> None:
    s = Settings()
    v = s.version
    s.set("net.ipv4.tcp_syncookies", "2")
    s.tcp_sack = 0
    assert s.version == v + 2
    assert s.copy().version == s.version
    with pytest.raises(ValueError):
        s.set("tcp_syncookies", "9")
    assert s.version == v + 2  # a refused value changes nothing
