"""pystackctl refuses bad arguments with one line and exit status 2, before touching
anything (no root needed for these)."""

from __future__ import annotations

import pytest

from ctl.main import main, parse_ports


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("port", ["0", "65536", "x", "80,", "-1", ""])
def test_bad_port(capsys, port: str) -> None:
    rc, err = run(capsys, "attach", "lo", "--port", port)
    assert rc == 2 and err.count("\n") == 1 and "--port" in err


@pytest.mark.parametrize("app,word", [
    ("telnet", "expected echo, discard, http:DIR or proxy:HOST:PORT"),
    ("http:/nonexistent/dir", "no such directory"),
    ("http:", "expected echo"),
    ("proxy:127.0.0.1", "expected proxy:HOST:PORT"),
    ("proxy:127.0.0.1:0", "expected proxy:HOST:PORT"),
    ("proxy:127.0.0.1:99999", "expected proxy:HOST:PORT"),
])
def test_bad_app(capsys, app: str, word: str) -> None:
    rc, err = run(capsys, "attach", "lo", "--port", "80", "--app", app)
    assert rc == 2 and err.count("\n") == 1 and word in err, err


@pytest.mark.parametrize("sysctl,word", [
    ("net.ipv4.tcp_bogus=1", "unknown setting"),
    ("net.ipv4.tcp_sack=7", "tcp_sack"),
    ("tcp_sack", "NAME=VALUE"),
])
def test_bad_sysctl(capsys, sysctl: str, word: str) -> None:
    rc, err = run(capsys, "attach", "lo", "--port", "80", "--sysctl", sysctl)
    assert rc == 2 and err.count("\n") == 1 and word in err, err


@pytest.mark.parametrize("n", ["0", "65", "two", "-1"])
def test_bad_queue_count(capsys, n: str) -> None:
    rc, err = run(capsys, "attach", "lo", "--port", "80", "--queues", n)
    assert rc == 2 and err.count("\n") == 1 and "--queues" in err and "1..64" in err, err


def test_bad_metrics_address(capsys) -> None:
    rc, err = run(capsys, "attach", "lo", "--port", "80", "--metrics", "nohostport")
    assert rc == 2 and err.count("\n") == 1 and "--metrics" in err


@pytest.mark.parametrize("argv", [
    ["attach", "lo"],  # no --port
    ["attach", "lo", "--port", "80", "--mode", "turbo"],
    ["frobnicate"],
    [],
    ["ss", "--bogus"],
])
def test_argparse_errors_are_one_line(capsys, argv: list[str]) -> None:
    rc, err = run(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("pystackctl: ")


def test_parse_ports() -> None:
    assert parse_ports("80") == [80]
    assert parse_ports("7, 9,65535") == [7, 9, 65535]
