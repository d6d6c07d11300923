"""The http app on the simulated link: a pystack client engine talks to the server app."""

from __future__ import annotations

import hashlib
import random

import pytest

from pystack.apps import app_factory, serve
from pystack.apps.http import HttpServer
from pystack.sim import LinkConfig, SimNetwork, StreamApp
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState

A = 0xC6120002  # client
B = 0xC6120001  # server
BIG = 1_500_000


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>\n")
    (root / "big.bin").write_bytes(random.Random(7).randbytes(BIG))
    (tmp_path / "secret.txt").write_text("outside the root")
    return root


def setup(www, link: LinkConfig | None = None):
    net = SimNetwork(seed=3, default=link or LinkConfig(delay=0.002))
    a = TcpEngine(Settings(), secret=b"a" * 16)
    b = TcpEngine(Settings(), secret=b"b" * 16)
    net.add_host(A, a)
    net.add_host(B, b)
    apps: list[HttpServer] = []
    factory = app_factory(f"http:{www}")

    def make(conn):
        app = factory(conn)
        apps.append(app)
        return app

    serve(b.listen(0, 80), make)
    return net, a, apps


def exchange(www, request: bytes, *, shutdown: bool = True, link: LinkConfig | None = None,
             until: float = 60, expect_eof: bool = True):
    net, a, apps = setup(www, link)
    client = StreamApp(a.connect(A, B, 80), request, shutdown=shutdown)
    ended = net.run(until=until, stop=lambda: client.eof or bool(client.error))
    assert ended == expect_eof
    return client, apps


def responses(data: bytes, head_only: tuple[int, ...] = ()) -> list[tuple[int, dict, bytes]]:
    """Split concatenated responses by Content-Length (head_only: indexes of HEADs)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = 0 if len(out) in head_only else int(headers["content-length"])
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def test_pipelined_keep_alive_get_then_close_after_fin(www) -> None:
    req = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    client, apps = exchange(www, req)
    r = responses(bytes(client.received))
    assert [s for s, _, _ in r] == [200, 200, 404]
    assert r[0][2] == b"<p>home</p>\n" and r[0][1]["content-type"].startswith("text/html")
    assert hashlib.sha256(r[1][2]).digest() == hashlib.sha256(
        (www / "big.bin").read_bytes()).digest()
    assert r[1][1]["content-type"] == "application/octet-stream"
    assert all("connection" not in h for _, h, _ in r)  # persistent throughout
    assert len(apps) == 1 and apps[0].requests == 3 and apps[0].done
    assert apps[0].file is None


def test_head_has_length_but_no_body(www) -> None:
    client, _ = exchange(www, b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = responses(bytes(client.received), head_only=(0,))
    assert r[0][0] == 200 and r[0][1]["content-length"] == str(BIG) and r[0][2] == b""
    assert r[1][0] == 200 and r[1][2] == b"<p>home</p>\n"


def test_connection_close_is_honoured_without_the_clients_fin(www) -> None:
    client, apps = exchange(www, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            shutdown=False)
    (status, headers, body), = responses(bytes(client.received))
    assert status == 200 and headers["connection"] == "close" and body
    assert client.conn.state in (TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.CLOSED)


def test_http10_closes_unless_keep_alive(www) -> None:
    client, _ = exchange(www, b"GET / HTTP/1.0\r\n\r\n", shutdown=False)
    assert responses(bytes(client.received))[0][1]["connection"] == "close"
    assert client.eof
    client, _ = exchange(www, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                         shutdown=False, until=2, expect_eof=False)
    assert responses(bytes(client.received))[0][1]["connection"] == "keep-alive"
    assert not client.eof


def test_errors(www) -> None:
    client, _ = exchange(www, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                              b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = responses(bytes(client.received))
    assert [s for s, _, _ in r] == [405, 301, 400]  # 400 closes: the last GET is not read
    assert r[0][1]["allow"] == "GET, HEAD"
    assert r[1][1]["location"] == "/docs/"
    assert r[2][1]["connection"] == "close" and b"secret" not in client.received


def test_request_line_too_long_is_414_and_closes(www) -> None:
    client, _ = exchange(www, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    (status, headers, _), = responses(bytes(client.received))
    assert status == 414 and headers["connection"] == "close"


def test_large_file_over_a_lossy_link(www) -> None:
    link = LinkConfig(delay=0.003, drop=0.02, reorder=0.02)
    client, apps = exchange(www, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", link=link,
                            until=300)
    (status, _, body), = responses(bytes(client.received))
    assert status == 200 and body == (www / "big.bin").read_bytes()


def test_client_reset_mid_transfer_frees_the_file(www) -> None:
    net, a, apps = setup(www)
    c = a.connect(A, B, 80)
    client = StreamApp(c, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", shutdown=False)
    assert net.run(until=10, stop=lambda: len(client.received) > 100_000)
    assert apps[0].file is not None
    c.abort()
    assert net.run(until=20, stop=lambda: apps[0].done)
    assert apps[0].file is None
