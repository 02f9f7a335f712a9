"""A static release mirror on 127.0.0.1 with fault injection, for the client's tests.

It serves a directory with the release-store layout over HTTP/1.1 (keep-alive, HEAD, Range),
counts every request, and applies faults per URL path, each consumed by one request in order:

    server.fail("/m/1.0.0/export.pkl", Fault.status(500), Fault.status(429, retry_after="3"))
    server.fail(path, Fault.truncate(1000))      # Content-Length says all, the body stops early
    server.fail(path, Fault.reset(1000))         # TCP reset after 1000 body bytes
    server.fail(path, Fault.hang(5))             # no answer for 5 s (the client's timeout fires)
    server.always(path, Fault.corrupt())         # every answer has one byte flipped
    server.always(path, Fault.slow(200_000))     # at most 200 kB/s
    server.always(path, Fault.trickle(0.2))      # one byte of the body every 0.2 s
    server.always(path, Fault.trickle_headers(0.2))  # the status line and headers, byte by byte
    server.always(path, Fault.redirect_loop())   # 302 to itself, forever
    server.always(path, Fault.bad_encoding())    # Content-Encoding: gzip on a body that is not
    server.always(path, Fault.body(b"..."))      # these bytes instead of the file
    server.always(path, Fault.encoded(raw, "gzip, gzip"))  # raw bytes, this Content-Encoding
    server.always(path, Fault.redirect(url))     # 302 to any URL (another host, 169.254...)
    server.always(path, Fault.endless(100 << 20))  # Content-Length 100 MB, "1"s until the
                                                 # client stops reading (size 0: no length)

`server.require_auth(user, password)` answers 401 to requests without that Basic Authorization;
`server.require_query(query)` answers 403 to requests whose query string is not that one. Each
`Hit` records the Authorization header it carried, every request header, the query string and
the body bytes sent.

Conditional requests, as a web server or CDN answers them: every 200 carries an `ETag` (a digest
of the body) and a `Last-Modified` (the file's mtime); a GET or HEAD without Range whose
`If-None-Match` names the current ETag, or (without If-None-Match) whose `If-Modified-Since` is
not older than the file, is answered `304 Not Modified` with no body. `server.conditional = False`
turns that off (a host that ignores them: always 200).

`on_body(path, sent)` is called after each chunk of a body, from the server's thread (tests use
it to kill a client mid-download or fill a disk). Start it with `with MirrorServer(root) as s:`.
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.emulators.base import QuietServer

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str
    status_code: int = 500
    retry_after: str | None = None
    after: int = 0
    seconds: float = 0.0
    rate: int = 0
    data: bytes = b""

    @classmethod
    def status(cls, code: int, retry_after: str | None = None) -> Fault:
        return cls("status", status_code=code, retry_after=retry_after)

    @classmethod
    def truncate(cls, after: int) -> Fault:
        return cls("truncate", after=after)

    @classmethod
    def reset(cls, after: int) -> Fault:
        return cls("reset", after=after)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        return cls("hang", seconds=seconds)

    @classmethod
    def corrupt(cls, at: int = 0) -> Fault:
        return cls("corrupt", after=at)

    @classmethod
    def slow(cls, rate: int) -> Fault:
        return cls("slow", rate=rate)

    @classmethod
    def ignore_range(cls) -> Fault:
        return cls("ignore_range")

    @classmethod
    def trickle(cls, interval: float) -> Fault:
        return cls("trickle", seconds=interval)

    @classmethod
    def trickle_headers(cls, interval: float) -> Fault:
        return cls("trickle_headers", seconds=interval)

    @classmethod
    def redirect_loop(cls) -> Fault:
        return cls("redirect_loop")

    @classmethod
    def bad_encoding(cls) -> Fault:
        return cls("bad_encoding")

    @classmethod
    def body(cls, data: bytes) -> Fault:
        return cls("body", data=data)

    @classmethod
    def encoded(cls, raw: bytes, encoding: str) -> Fault:
        """`raw` as the body, sent as is, with `Content-Encoding: encoding`."""
        return cls("encoded", data=raw, retry_after=encoding)

    @classmethod
    def redirect(cls, location: str, code: int = 302) -> Fault:
        return cls("redirect", status_code=code, data=location.encode())

    @classmethod
    def endless(cls, size: int = 0, fill: bytes = b"1") -> Fault:
        """A body of `size` bytes of `fill` (Content-Length says so), or with no length and no
        end when `size` is 0, sent until the client stops reading or the server stops."""
        return cls("endless", after=size, data=fill)


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    authorization: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # every request header, in order
    query: str = ""
    sent: int = 0  # body bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class MirrorServer:
    """See the module docstring."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits: list[Hit] = []
        self._queued: dict[str, list[Fault]] = {}
        self._sticky: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.on_body: Callable[[str, int], None] | None = None
        self._auth: str | None = None
        self._query: str | None = None
        self.conditional = True  # answer If-None-Match / If-Modified-Since with 304
        self._server = QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, path: str, *faults: Fault) -> None:
        with self._lock:
            self._queued.setdefault(path, []).extend(faults)

    def always(self, path: str, *faults: Fault) -> None:
        with self._lock:
            self._sticky[path] = list(faults)

    def require_auth(self, user: str, password: str) -> None:
        import base64

        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def require_query(self, query: str) -> None:
        self._query = query

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self._sticky.clear()

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path and h.method == method)

    def requests(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def _faults(self, path: str) -> list[Fault]:
        with self._lock:
            queued = self._queued.get(path)
            first = [queued.pop(0)] if queued else []
            return first + list(self._sticky.get(path, []))

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def start(self) -> MirrorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                query = urlsplit(self.path).query
                rng = self.headers.get("Range")
                auth = self.headers.get("Authorization")
                faults = server._faults(path)
                kinds = {f.kind: f for f in faults}
                sent_headers = tuple(self.headers.items())

                def hit(status: int, auth: str | None = None, sent: int = 0) -> Hit:
                    return Hit(self.command, path, rng, status, auth, sent_headers, query, sent)

                if server._auth is not None and auth != server._auth:
                    server._record(hit(401, auth))
                    self._reply(401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="m"'})
                    return
                if server._query is not None and query != server._query:
                    server._record(hit(403, auth))
                    self._reply(403, b"forbidden\n")
                    return
                if "redirect" in kinds:
                    f = kinds["redirect"]
                    server._record(hit(f.status_code, auth))
                    self._reply(f.status_code, b"", {"Location": f.data.decode()})
                    return
                if "endless" in kinds:
                    self._endless(kinds["endless"], hit(200, auth))
                    return
                if "trickle_headers" in kinds:
                    server._record(hit(200, auth))
                    head_bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"a" * 4000
                    try:
                        for i in range(len(head_bytes)):
                            if server._stop.is_set():
                                break
                            self.wfile.write(head_bytes[i : i + 1])
                            self.wfile.flush()
                            server._stop.wait(kinds["trickle_headers"].seconds)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if "redirect_loop" in kinds:
                    server._record(hit(302, auth))
                    self._reply(302, b"", {"Location": self.path})
                    return
                if "hang" in kinds:
                    server._record(hit(0, auth))
                    server._stop.wait(kinds["hang"].seconds)
                    self.close_connection = True
                    return
                if "status" in kinds:
                    f = kinds["status"]
                    server._record(hit(f.status_code))
                    headers = {"Retry-After": f.retry_after} if f.retry_after else {}
                    self._reply(f.status_code, b"failure injected\n", headers)
                    return
                file = (server.root / path.lstrip("/")).resolve()
                if "body" in kinds or "encoded" in kinds:
                    data = (kinds.get("body") or kinds["encoded"]).data
                elif server.root.resolve() not in file.parents or not file.is_file():
                    server._record(hit(404, auth))
                    self._reply(404, b"not found\n")
                    return
                else:
                    data = file.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                mtime = file.stat().st_mtime if file.is_file() else time.time()
                modified = formatdate(mtime, usegmt=True)
                if server.conditional and rng is None and _not_modified(self.headers, etag, mtime):
                    server._record(hit(304, auth))
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", modified)
                    self.end_headers()
                    return
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and "ignore_range" not in kinds:
                    start = int(m.group(1))
                    if start >= len(data):
                        server._record(hit(416, auth))
                        self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                    status = 206
                body = bytearray(data[start:])
                if "corrupt" in kinds and body:
                    i = min(kinds["corrupt"].after, len(body) - 1)
                    body[i] ^= 0xFF
                server._record(hit(status, auth, 0 if head else len(body)))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if server.conditional:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", modified)
                if "bad_encoding" in kinds:
                    self.send_header("Content-Encoding", "gzip")
                if "encoded" in kinds:
                    self.send_header("Content-Encoding", kinds["encoded"].retry_after or "")
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                limit = len(body)
                cut = kinds.get("truncate") or kinds.get("reset")
                if cut is not None:
                    limit = min(limit, cut.after)
                rate = kinds["slow"].rate if "slow" in kinds else 0
                chunk = min(CHUNK, rate // 10) if rate else CHUNK
                trickle = kinds["trickle"].seconds if "trickle" in kinds else 0.0
                if trickle:
                    chunk = 1
                sent = 0
                try:
                    while sent < limit and not server._stop.is_set():
                        piece = bytes(body[sent : min(limit, sent + chunk)])
                        self.wfile.write(piece)
                        self.wfile.flush()
                        sent += len(piece)
                        if server.on_body is not None:
                            server.on_body(path, start + sent)
                        if rate:
                            time.sleep(len(piece) / rate)
                        if trickle:
                            server._stop.wait(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                if cut is not None and cut.kind == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                elif cut is not None:
                    self.close_connection = True  # the client sees the body end early

            def _endless(self, fault: Fault, hit: Hit) -> None:
                server._record(hit)
                self.send_response(200)
                if fault.after:
                    self.send_header("Content-Length", str(fault.after))
                else:
                    self.close_connection = True
                self.end_headers()
                block = (fault.data or b"1") * (CHUNK // max(1, len(fault.data or b"1")))
                sent = 0
                try:
                    while not server._stop.is_set() and (not fault.after or sent < fault.after):
                        piece = block if not fault.after else block[: fault.after - sent]
                        self.wfile.write(piece)
                        sent += len(piece)
                except OSError:  # the client stopped reading: what it should do
                    pass
                self.close_connection = True

        return Handler


def _not_modified(headers: object, etag: str, mtime: float) -> bool:
    """RFC 9110 13.1: If-None-Match first; If-Modified-Since only without it."""
    match = headers.get("If-None-Match")  # type: ignore[attr-defined]
    if match is not None:
        return match.strip() == "*" or etag in [t.strip() for t in match.split(",")]
    since = headers.get("If-Modified-Since")  # type: ignore[attr-defined]
    if since is None:
        return False
    try:
        return int(mtime) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
