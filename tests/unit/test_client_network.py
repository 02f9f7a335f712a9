"""The client's retry policy, through httpx's in-memory MockTransport: no sockets, no sleeping."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipeline.client.network import Http, RetryPolicy, Unreachable, parse_retry_after
from pipeline.errors import ArtifactNotFound, IntegrityError, RemoteError

URL = "http://mirror.test/m/1.0.0/manifest.json"


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


class Chunks(httpx.SyncByteStream):
    """A body that arrives as a stream (httpx reads a Response built from bytes at once, and the
    client reads the raw stream itself, to bound what it decodes)."""

    def __init__(self, data: bytes, size: int = 1 << 16):
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]

    def __iter__(self):
        yield from self.pieces


def streamed(answer: httpx.Response) -> httpx.Response:
    if isinstance(answer.stream, Chunks):  # a raw body already (e.g. gzip bytes as sent)
        return answer
    return httpx.Response(answer.status_code, headers=answer.headers, stream=Chunks(answer.content))


def http_with(answers: list, policy: RetryPolicy | None = None) -> tuple[Http, Clock, list]:
    """An Http whose requests get `answers` in order (a Response, or an exception to raise)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return streamed(answer)

    clock = Clock()
    http = Http(
        policy or RetryPolicy.for_downloads(max_attempts=4, base_delay=1.0, max_total=60),
        sleep=clock.sleep,
        clock=clock,
        rand=lambda: 0.0,
        transport=httpx.MockTransport(handler),
        progress=False,
    )
    return http, clock, seen


def test_5xx_is_retried_with_doubling_jittered_backoff() -> None:
    http, clock, seen = http_with(
        [httpx.Response(500), httpx.Response(503), httpx.Response(200, content=b"{}")]
    )
    assert http.get_bytes(URL, what="m") == b"{}"
    assert len(seen) == 3
    # rand() = 0 gives the low end of the jitter range: backoff * 2**(n-1) * 0.5
    assert clock.waits == [0.5, 1.0]
    p = RetryPolicy.for_downloads(base_delay=1.0, max_delay=5.0, rand=lambda: 0.999)
    assert p.backoff(1) == pytest.approx(0.9995)
    p = RetryPolicy.for_downloads(base_delay=1.0, max_delay=5.0, rand=lambda: 0.0)
    assert p.backoff(10) == 2.5  # capped at max_delay, then jittered


def test_429_retry_after_is_honoured() -> None:
    http, clock, _ = http_with(
        [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, content=b"ok")]
    )
    assert http.get_bytes(URL, what="m") == b"ok"
    assert clock.waits == [7.0]


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    http, clock, seen = http_with([httpx.Response(429, headers={"Retry-After": "3600"})])
    with pytest.raises(Unreachable, match="asks to wait 3600 s, beyond the 60 s"):
        http.get_bytes(URL, what="m")
    assert clock.waits == [] and len(seen) == 1


def test_persistent_failure_stops_after_the_attempts() -> None:
    http, clock, seen = http_with([httpx.Response(502)])
    with pytest.raises(Unreachable, match="HTTP 502.*gave up after 4 attempts"):
        http.get_bytes(URL, what="m")
    assert len(seen) == 4 and clock.waits == [0.5, 1.0, 2.0]


def test_total_time_is_bounded() -> None:
    policy = RetryPolicy.for_downloads(
        max_attempts=100, base_delay=10.0, max_delay=10.0, max_total=30
    )
    http, clock, seen = http_with([httpx.Response(503)], policy)
    with pytest.raises(Unreachable, match="beyond the 30 s this operation may take|within 30 s"):
        http.get_bytes(URL, what="m")
    assert sum(clock.waits) <= 30 and len(seen) == len(clock.waits) + 1


def test_connection_errors_and_timeouts_are_retried() -> None:
    http, clock, seen = http_with(
        [
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("reset"),
            httpx.Response(200, content=b"x"),
        ]
    )
    assert http.get_bytes(URL, what="m") == b"x" and len(seen) == 4


def test_404_and_403_are_final() -> None:
    http, _, seen = http_with([httpx.Response(404)])
    with pytest.raises(ArtifactNotFound, match="HTTP 404"):
        http.get_bytes(URL, what="m")
    assert len(seen) == 1
    http, _, seen = http_with([httpx.Response(403)])
    with pytest.raises(RemoteError, match="HTTP 403; check the token") as e:
        http.get_bytes(URL + "?token=secret", what="m")
    assert "secret" not in str(e.value) and len(seen) == 1


def test_download_resumes_with_range_and_refuses_extra_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    part = tmp_path / "f.part"
    part.write_bytes(data[:100])
    http, _, seen = http_with(
        [
            httpx.Response(
                206,
                content=data[100:],
                headers={"Content-Range": f"bytes 100-{len(data) - 1}/{len(data)}"},
            )
        ]
    )
    http.download(URL, part, size=len(data), what="m")
    assert part.read_bytes() == data
    assert seen[0].headers["Range"] == "bytes=100-"
    assert seen[0].headers["Accept-Encoding"] == "identity"
    # a server that ignores Range sends everything: the file starts over
    part.write_bytes(data[:100])
    http, _, _ = http_with([httpx.Response(200, content=data)])
    http.download(URL, part, size=len(data), what="m")
    assert part.read_bytes() == data
    # more bytes than the manifest says is not a download, it is a different file
    part.unlink()
    http, _, _ = http_with([httpx.Response(200, content=data + b"extra")])
    with pytest.raises(IntegrityError, match="more than the 1024 bytes"):
        http.download(URL, part, size=len(data), what="m")


def test_short_body_is_resumed(tmp_path: Path) -> None:
    data = b"0123456789" * 10
    part = tmp_path / "f.part"
    http, clock, seen = http_with(
        [
            httpx.Response(200, content=data[:30]),
            httpx.Response(206, content=data[30:], headers={"Content-Range": "bytes 30-99/100"}),
        ]
    )
    http.download(URL, part, size=len(data), what="m")
    assert part.read_bytes() == data and seen[1].headers["Range"] == "bytes=30-"


def test_progress_never_writes_to_stdout(tmp_path: Path, capsys) -> None:
    data = b"x" * 5000
    for progress in (False, True):
        http, _, _ = http_with([httpx.Response(200, content=data)])
        http.progress = progress
        http.download(URL, tmp_path / f"{progress}.part", size=len(data), what="m")
        out, err = capsys.readouterr()
        assert out == ""
        assert ("100.0%" in err) is progress


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_rate_limited_403_is_retried_like_the_publishers_do() -> None:
    # one reading of HTTP failures (pipeline.retry.classify_status) for publishers and client
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000030"}
    http, clock, seen = http_with(
        [httpx.Response(403, headers=reset), httpx.Response(200, content=b"ok")]
    )
    http.policy.wall = lambda: 1_000_000.0
    assert http.get_bytes(URL, what="m") == b"ok"
    assert clock.waits == [31.0] and len(seen) == 2
    http, _, seen = http_with([httpx.Response(501)])
    with pytest.raises(RemoteError, match="HTTP 501"):
        http.get_bytes(URL, what="m")
    assert len(seen) == 1  # Not Implemented will say the same on every attempt


def test_credentials_leave_the_url_for_the_authorization_header() -> None:
    from pipeline.client.network import split_credentials

    assert split_credentials("https://u%40x:p%3Aw@host:8443/a?b=1") == (
        "https://host:8443/a?b=1",
        ("u@x", "p:w"),
    )
    assert split_credentials("http://host/a") == ("http://host/a", None)
    http, _, seen = http_with([httpx.Response(200, content=b"ok")])
    http.get_bytes("http://user:tok3n@mirror.test/m/latest", what="m")
    assert seen[0].url == "http://mirror.test/m/latest"
    assert seen[0].headers["Authorization"] == "Basic dXNlcjp0b2szbg=="


def test_httpx_request_log_lines_carry_no_query_string_or_user_info(caplog) -> None:
    import logging

    from pipeline.redaction import redacted as _redacted

    signed = "https://objects.test/blob?X-Amz-Signature=SIGNED123&X-Amz-Credential=KEY456"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.test":
            return httpx.Response(302, headers={"Location": signed})
        return streamed(httpx.Response(200, content=b"{}"))

    http = Http(
        RetryPolicy.for_downloads(max_attempts=1),
        allow_redirect_hosts=["objects.test"],  # another host: only when allowed
        resolve=lambda host: ["93.184.216.34"],  # both are public addresses
        transport=httpx.MockTransport(handler),
        progress=False,
    )
    with caplog.at_level(logging.INFO, logger="httpx"):
        assert http.get_json(URL + "?token=TOKEN789", what="manifest") == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(lines) == 2, lines  # the request and the redirected one were logged ...
    assert "http://mirror.test/m/1.0.0/manifest.json?<redacted>" in lines[0]
    assert "https://objects.test/blob?<redacted>" in lines[1]
    for secret in ("TOKEN789", "SIGNED123", "KEY456"):  # ... without their secrets
        assert secret not in caplog.text
    assert _redacted("https://u:pw@host.test:8443/a/b") == "https://host.test:8443/a/b"
    assert _redacted("https://host.test/a/b") == "https://host.test/a/b"  # nothing to hide
    assert _redacted(42) == 42


def test_urllib3_debug_request_lines_carry_no_query_string(caplog) -> None:
    """PyGithub (requests) and boto3 log through urllib3: at DEBUG the request line has the path
    with its query, e.g. the signed storage URL a GitHub asset download is redirected to."""
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import urllib3

    from pipeline.redaction import redact_request_logs

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/start"):  # a redirect to a signed URL, as GitHub's
                self.send_response(302)
                port = self.server.server_address[1]
                self.send_header(
                    "Location", f"http://127.0.0.1:{port}/asset/7?X-Amz-Signature=SIGNED123"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        redact_request_logs()
        with caplog.at_level(logging.DEBUG, logger="urllib3"):
            pool = urllib3.PoolManager()
            url = f"http://127.0.0.1:{server.server_port}/start?token=TOK456"
            assert pool.request("GET", url).data == b"ok"  # urllib3 follows the redirect
            pool.clear()
    finally:
        server.shutdown()
        server.server_close()
    lines = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert any('"GET /start?<redacted> HTTP/1.1" 302' in line for line in lines), lines
    assert any('"GET /asset/7?<redacted> HTTP/1.1" 200' in line for line in lines), lines
    redirects = [r.getMessage() for r in caplog.records if r.name == "urllib3.poolmanager"]
    assert any("/asset/7?<redacted>" in line for line in redirects), redirects
    for secret in ("SIGNED123", "TOK456"):
        assert secret not in caplog.text


def test_importing_the_client_changes_no_logger_and_an_http_installs_the_redaction() -> None:
    """No import-time side effects (issue 28): the URL redaction is installed on httpx's and
    urllib3's loggers when an Http is made (once however many are), not when the client is
    imported."""
    import json

    from tests.helpers import installed_python

    code = (
        "import json, logging\n"
        "import pipeline.client, pipeline.client.network, pipeline.publishers.github\n"
        "def state():\n"
        "    names = sorted(logging.Logger.manager.loggerDict)\n"
        "    loggers = [logging.getLogger(n) for n in names]\n"
        "    return [n for n, lg in zip(names, loggers) if lg.filters or lg.handlers]\n"
        "after_import = state()\n"
        "from pipeline.client import Http\n"
        "Http(); Http()\n"
        "from pipeline.redaction import REQUEST_LOGGERS\n"
        "counts = [len(logging.getLogger(n).filters) for n in REQUEST_LOGGERS]\n"
        "print(json.dumps([after_import, counts]))\n"
    )
    after_import, counts = json.loads(installed_python(code))
    assert after_import == []
    assert counts == [1, 1, 1, 1]


def test_a_conditional_read_is_bounded_decoded_and_counted_like_any_small_file() -> None:
    """The index poll's read (get_if_changed): 304 keeps the validator; a body is decoded and
    bounded as get_bytes' is; the request counts against its source's budget."""
    import gzip

    from pipeline.client.network import BadResponse, source_deadlines

    body = b'{"sequence": 1}'
    http, clock, seen = http_with(
        [
            httpx.Response(
                200,
                stream=Chunks(gzip.compress(body)),
                headers={"Content-Encoding": "gzip", "ETag": '"v1"'},
            ),
            httpx.Response(304),
        ]
    )
    assert http.get_if_changed(URL, what="index") == (body, '"v1"', None)
    assert http.get_if_changed(URL, what="index", etag='"v1"') == (None, '"v1"', None)
    assert seen[1].headers["If-None-Match"] == '"v1"'
    bomb = Chunks(gzip.compress(b"x" * 5000))
    http, clock, _ = http_with(
        [httpx.Response(200, stream=bomb, headers={"Content-Encoding": "gzip"})]
    )
    with pytest.raises(BadResponse, match="more than 100 bytes once decoded"):
        http.get_if_changed(URL, what="index", limit=100, headers={})
    http, clock, _ = http_with([httpx.Response(503)])
    with source_deadlines(2), pytest.raises(Unreachable, match="after 3 attempts in 2 s"):
        http.get_if_changed(URL, what="index", source="s")
