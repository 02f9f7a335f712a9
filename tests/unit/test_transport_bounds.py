"""The client's transport bounds that need no server (issue 27: findings 5, 8, 9 and 12): the
bounded decoder, where a redirect may lead (httpx's in-memory MockTransport and a fake name
resolver: nothing leaves the process), the per-source deadline on a fake clock, the escaping of
what a source sends, and the small parsers of hostile answers."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from pipeline.client import Client
from pipeline.client.decoding import Decoder as _Decoder
from pipeline.client.network import (
    BadResponse,
    HostPattern,
    Http,
    RetryPolicy,
    Unreachable,
    address_class,
    source_deadlines,
)
from pipeline.client.printable import printable
from pipeline.client.s3 import parse_listing
from pipeline.client.sources import MirrorSource, version_in_pointer
from pipeline.errors import ConfigError
from tests.unit.test_client_network import Chunks, Clock

URL = "http://mirror.test/m/1.0.0/manifest.json"
PUBLIC = "93.184.216.34"


def decode(body: bytes, coding: str, room: int = 1 << 30, step: int = 1 << 16) -> bytes:
    d = _Decoder(coding, "m", URL)
    out = bytearray()
    for i in range(0, len(body), step):
        for piece in d.feed(body[i : i + step], room - len(out)):
            out += piece
            if len(out) > room:
                return bytes(out)
    d.finish()
    return bytes(out)


# -- finding 5: a bounded decoder, one coding at most ----------------------------------------


def test_the_decoder_never_yields_more_than_the_room_left_plus_one() -> None:
    bomb = gzip.compress(bytes(64 << 20))  # 64 MB of zeros in ~64 kB
    d = _Decoder("gzip", "m", URL)
    pieces = list(d.feed(bomb, 1000))
    assert sum(map(len, pieces)) == 1001  # the caller sees one byte over and refuses
    assert max(map(len, pieces)) <= 1001


@pytest.mark.parametrize(
    "coding, problem",
    [
        ("gzip, gzip", "2 stacked encodings"),
        ("gzip,deflate", "2 stacked encodings"),
        ("br", "'br' is not one this client decodes"),
        ("zstd", "'zstd' is not one this client decodes"),
        ("x-\x1b[31mevil", r"'x-\\x1b[31mevil' is not one"),  # quoted escaped
    ],
)
def test_stacked_and_unknown_encodings_are_refused_before_decoding(coding, problem) -> None:
    with pytest.raises(BadResponse, match=problem.replace("[", r"\[")):
        _Decoder(coding, "m", URL)


def test_the_codings_a_server_may_use_decode() -> None:
    data = b"manifest " * 1000
    assert decode(data, "") == data
    assert decode(data, "identity") == data
    assert decode(gzip.compress(data), "gzip, identity") == data
    assert decode(gzip.compress(data), "X-GZIP") == data
    assert decode(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip") == data  # 2 members
    assert decode(zlib.compress(data), "deflate") == data  # zlib-wrapped, as the RFC says
    raw = zlib.compressobj(wbits=-15)
    assert decode(raw.compress(data) + raw.flush(), "deflate") == data  # raw, as some servers do
    with pytest.raises(BadResponse, match="does not decode"):
        decode(b"not gzip at all", "gzip")
    with pytest.raises(BadResponse, match="ends inside the compressed stream"):
        decode(gzip.compress(data)[:-20], "gzip")


def test_get_bytes_refuses_a_stacked_encoding_and_caps_decoded_bytes() -> None:
    bomb = gzip.compress(bytes(8 << 20))
    answers = {
        "stacked": httpx.Response(
            200, headers={"Content-Encoding": "gzip, gzip"}, stream=Chunks(gzip.compress(bomb))
        ),
        "bomb": httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=Chunks(bomb)),
    }
    http = Http(
        RetryPolicy.for_downloads(max_attempts=1),
        transport=httpx.MockTransport(lambda r: answers[r.url.path.strip("/")]),
        progress=False,
    )
    with pytest.raises(BadResponse, match="2 stacked encodings"):
        http.get_bytes("http://m.test/stacked", what="m")
    with pytest.raises(BadResponse, match=r"more than 1000 bytes once decoded \(gzip\)"):
        http.get_bytes("http://m.test/bomb", what="m", limit=1000)


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    seen: list[int] = []

    class Counted(httpx.SyncByteStream):
        def __iter__(self):
            seen.append(1)
            yield b"1" * 100

    http = Http(
        RetryPolicy.for_downloads(max_attempts=1),
        transport=httpx.MockTransport(
            lambda r: httpx.Response(
                200, headers={"Content-Length": str(1 << 30)}, stream=Counted()
            )
        ),
        progress=False,
    )
    with pytest.raises(BadResponse, match=r"more than 1024 bytes \(1073741824 announced\)"):
        http.get_bytes(URL, what="m", limit=1024)
    assert seen == []


# -- finding 8: where a redirect may lead ------------------------------------------------------


def redirecting(location: str, resolve: dict[str, str], **kw) -> tuple[Http, list[httpx.Request]]:
    """An Http whose origin (mirror.test) redirects to `location`; names resolve as `resolve`
    says (nothing is looked up for real); the target answers 200."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "mirror.test":
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, stream=Chunks(b"{}"))

    def lookup(host: str) -> list[str]:
        if host not in resolve:
            raise OSError(f"no such host {host}")
        return [resolve[host]]

    http = Http(
        RetryPolicy.for_downloads(max_attempts=1),
        transport=httpx.MockTransport(handler),
        resolve=lookup,
        progress=False,
        **kw,
    )
    return http, seen


@pytest.mark.parametrize(
    "target, resolved, kind",
    [
        ("http://169.254.169.254/latest/meta-data/", None, "link-local"),  # cloud metadata
        ("http://10.0.0.7/x", None, "private"),
        ("http://127.0.0.1:8080/x", None, "loopback"),
        ("http://[::1]/x", None, "loopback"),
        ("http://[::ffff:127.0.0.1]/x", None, "loopback"),
        ("http://0.0.0.0/x", None, "loopback"),
        ("http://internal.example/x", "192.168.1.5", "private"),
        ("http://shared.example/x", "100.64.0.9", "private"),
        ("http://v6.example/x", "fd00::1", "private"),
    ],
)
def test_a_public_origin_never_redirects_into_another_network(target, resolved, kind) -> None:
    from urllib.parse import urlsplit

    host = urlsplit(target).hostname
    names = {"mirror.test": PUBLIC, **({host: resolved} if resolved else {})}
    # even a host the operator allowed by name
    http, seen = redirecting(
        target, names, allow_redirect_hosts=[f"[{host}]" if ":" in host else host]
    )
    with pytest.raises(BadResponse, match=f"a {kind} address, and the source is public"):
        http.get_bytes(URL, what="m")
    assert [r.url.host for r in seen] == ["mirror.test"]  # the target was never asked


def test_a_private_or_loopback_origin_may_redirect_within_its_class_or_to_public() -> None:
    names = {"mirror.test": "10.1.2.3", "other.internal": "10.9.9.9", "cdn.example": PUBLIC}
    for target in ("http://other.internal/x", "https://cdn.example/x"):
        http, seen = redirecting(target, names, allow_redirect_hosts="other.internal, cdn.example")
        assert http.get_bytes(URL, what="m") == b"{}" and len(seen) == 2
    http, seen = redirecting(
        "http://169.254.169.254/x", names, allow_redirect_hosts=["169.254.169.254"]
    )
    with pytest.raises(BadResponse, match="a link-local address, and the source is private"):
        http.get_bytes(URL, what="m")


@pytest.mark.parametrize(
    "target, problem",
    [
        ("http://cdn.example/x", "another host; not followed.*--allow-redirect-host cdn.example"),
        ("file:///etc/passwd", "not an http"),
        ("http://mirror.test:8080/x", "another host"),  # another port is another origin
    ],
)
def test_a_redirect_leaves_the_origin_only_to_an_allowed_host(target, problem) -> None:
    http, seen = redirecting(target, {"mirror.test": PUBLIC, "cdn.example": PUBLIC})
    with pytest.raises(BadResponse, match=problem):
        http.get_bytes(URL, what="m")
    assert len(seen) == 1


def test_https_is_never_downgraded_to_http_by_a_redirect() -> None:
    http, seen = redirecting("http://mirror.test/x", {"mirror.test": PUBLIC})
    with pytest.raises(BadResponse, match="from https to plain http"):
        http.get_bytes("https://mirror.test/m/latest", what="m")
    assert len(seen) == 1


def test_no_credential_of_any_kind_crosses_origins() -> None:
    http, seen = redirecting(
        "https://cdn.example/blob",
        {"mirror.test": PUBLIC, "cdn.example": PUBLIC},
        allow_redirect_hosts=["*.example"],
    )
    headers = {
        "X-Api-Key": "k3y",
        "Authorization": "Bearer t0k",
        "Cookie": "s=1",
        "Range": "bytes=0-",
    }
    assert http.get_bytes("https://u:pw@mirror.test/m", what="m", headers=headers) == b"{}"
    home, away = seen
    assert home.headers["X-Api-Key"] == "k3y" and home.headers["Cookie"] == "s=1"
    assert home.headers["Authorization"] == "Basic dTpwdw=="  # the URL's user info wins
    for name in ("X-Api-Key", "Authorization", "Cookie"):
        assert name not in away.headers, name
    assert away.headers["Range"] == "bytes=0-"  # what the download needs goes on


def test_redirect_host_patterns() -> None:
    assert HostPattern.parse("*.hf.co").matches("cas-bridge.xethub.hf.co", 443)
    assert not HostPattern.parse("*.hf.co").matches("hf.co", 443)
    assert not HostPattern.parse("*.hf.co").matches("evilhf.co", 443)
    assert HostPattern.parse("Mirror.Internal:8443").matches("mirror.internal", 8443)
    assert not HostPattern.parse("mirror.internal:8443").matches("mirror.internal", 443)
    assert HostPattern.parse("[::1]").matches("::1", 80)
    for bad in ("http://x/", "x/y", "user@x", "a.*.b", ":80", "x:port"):
        with pytest.raises(ConfigError, match="expected HOST, HOST:PORT or"):
            HostPattern.parse(bad)
    assert address_class("8.8.8.8") == "public" and address_class("fe80::1%eth0") == "link-local"


# -- the deadline is per source and per fetch, not per request ---------------------------------


def test_the_source_deadline_spans_every_request_of_a_source_in_one_fetch() -> None:
    clock = Clock()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += 40  # each answer takes 40 s of the fake clock
        return httpx.Response(200, stream=Chunks(b"x"))

    http = Http(
        RetryPolicy.for_downloads(max_attempts=1, max_total=60),
        sleep=clock.sleep,
        clock=clock,
        transport=httpx.MockTransport(slow),
        progress=False,
    )
    for _ in range(3):  # no scope: each request has its own 60 s
        assert http.get_bytes(URL, what="m", source="mirror:a") == b"x"
    with source_deadlines(100):
        assert http.get_bytes(URL, what="m", source="mirror:a") == b"x"  # 40 of a's 100 s
        assert http.get_bytes(URL, what="m", source="mirror:b") == b"x"  # b has its own
        late = "the 100 s one fetch may spend on mirror:a ran out"
        with pytest.raises(Unreachable, match=late):  # starts at 80 s, would end at 120 s
            http.get_bytes(URL, what="m", source="mirror:a")
        asked = clock.now
        with pytest.raises(Unreachable, match=late):  # spent: not even asked
            http.get_bytes(URL, what="m", source="mirror:a")
        assert clock.now == asked
        inner = pytest.raises(Unreachable, match=late)
        with source_deadlines(1000), inner:  # inside a fetch: the fetch's budget, not a new one
            http.get_bytes(URL, what="m", source="mirror:a")
    assert http.get_bytes(URL, what="m", source="mirror:a") == b"x"  # a new fetch, a new budget


def test_no_retry_wait_is_taken_past_the_source_deadline() -> None:
    clock = Clock()
    http = Http(
        RetryPolicy.for_downloads(max_attempts=10, base_delay=8.0, max_total=900),
        sleep=clock.sleep,
        clock=clock,
        rand=lambda: 0.999,
        transport=httpx.MockTransport(lambda r: httpx.Response(503)),
        progress=False,
    )
    with source_deadlines(10), pytest.raises(Unreachable, match="would end after the deadline"):
        http.get_bytes(URL, what="m", source="mirror:a")
    assert sum(clock.waits) < 10


def test_the_client_reads_the_transport_settings_once_from_the_environment() -> None:
    env = {
        "RELEASE_SOURCE_DEADLINE": "42",
        "RELEASE_ALLOW_REDIRECT_HOSTS": "a.example, *.b.example",
    }
    client = Client.from_env(env)
    assert client.source_deadline == 42.0
    assert [p.host for p in client.http.allow_redirect_hosts] == ["a.example", "*.b.example"]
    assert Client().source_deadline == 3600.0
    for bad, problem in (
        ({"RELEASE_SOURCE_DEADLINE": "soon"}, "expected a number of seconds"),
        ({"RELEASE_SOURCE_DEADLINE": "-1"}, "expected a number of seconds > 0"),
        ({"RELEASE_ALLOW_REDIRECT_HOSTS": "http://x/"}, "expected HOST, HOST:PORT or"),
        ({"RELEASE_SOURCE_DEADLINE": " "}, "set but empty"),
    ):
        with pytest.raises(ConfigError, match=problem):
            Client.from_env(bad)


# -- finding 12: a base URL with a query string ------------------------------------------------


def test_a_mirror_base_url_keeps_its_query_on_every_path() -> None:
    m = MirrorSource("https://cdn.example/base/?token=s3cr3t&v=1#frag")
    assert m._url("m", "1.0.0", "manifest.json") == (
        "https://cdn.example/base/m/1.0.0/manifest.json?token=s3cr3t&v=1"
    )
    assert m.name == "mirror:https://cdn.example/base" and "s3cr3t" not in m.name


# -- finding 9 and what a source sends: bounded, escaped ---------------------------------------


def test_printable_escapes_what_a_terminal_would_act_on_and_caps_the_length() -> None:
    assert printable("v1.0\x1b[2J\x07") == "v1.0\\x1b[2J\\x07"
    assert printable("a\u202eb\u200bc\x9bd") == "a\\u202eb\\u200bc\\x9bd"  # bidi, zero width, CSI
    assert printable("C:\\x1b") == "C:\\\\x1b"  # a backslash is doubled: no forged escape
    assert printable("1" * 10_000, 50) == "1" * 50 + "…(9950 more characters)"
    assert printable(b"\xff\x1bok") == "\ufffd\\x1bok"
    assert printable("tab\tnewline\n") == "tab\\x09newline\\x0a"


def test_a_latest_pointer_is_a_version_name_or_refused_with_a_short_excerpt() -> None:
    assert version_in_pointer(b"1.2.0\n", "m/latest") == "1.2.0"
    with pytest.raises(BadResponse, match="more than 1024 bytes"):
        version_in_pointer(b"1" * 2000, "m/latest")
    with pytest.raises(BadResponse, match="a version name of 500 characters") as e:
        version_in_pointer(b"\x1b[31m" + b"9" * 495, "m/latest")
    assert len(str(e.value)) < 250 and "\x1b" not in str(e.value)
    with pytest.raises(BadResponse, match="not UTF-8"):
        version_in_pointer(b"\xff\xfe1.0", "m/latest")


def test_an_s3_listing_is_parsed_without_ever_expanding_an_entity() -> None:
    page = (
        b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>true</IsTruncated><Contents><Key>p/m/1.0.0/manifest.json</Key></Contents>"
        b"<NextContinuationToken>abc</NextContinuationToken></ListBucketResult>"
    )
    assert parse_listing(page, "l") == (["p/m/1.0.0/manifest.json"], "abc")
    assert parse_listing(page.replace(b">true<", b">false<"), "l")[1] is None
    laughs = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult/>'
    with pytest.raises(BadResponse, match="DTD"):
        parse_listing(laughs, "l")
    with pytest.raises(BadResponse, match="not an S3 listing"):
        parse_listing(b"<Error><Code>AccessDenied</Code></Error>", "l")
