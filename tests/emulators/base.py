"""What both emulators share: a threaded HTTP/1.1 server on 127.0.0.1, a request log, faults, hooks.

An emulator is a context manager: `with GitHubEmulator() as gh:` starts it on an ephemeral port
of 127.0.0.1 and stops it on exit. Routes return a `Reply`; the server writes it. Every request
is logged (`log`, `count()`, `writes()`) after it is answered, faults are consumed in the order
they were added (their patterns are searched in the raw path, query included), and a test may
install `hook(method, path, stage)` to act ("before" a route runs, "after" it changed state but
before the reply is sent), e.g. to SIGKILL the client; a hook that raises `Aborted` drops the
connection there (before: the request never reached the route; after: the reply is lost).
A route that crashes is answered 500 and its traceback kept in `errors` (fixtures assert it
stays empty, so an emulator bug cannot pass for a transient failure).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

READ_METHODS = ("GET", "HEAD")


@dataclass
class Reply:
    """An HTTP response a route returns."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )


@dataclass
class Logged:
    """One answered (or aborted) request."""

    method: str
    path: str
    status: int  # 0 = the connection was dropped without a reply
    received: int  # request body bytes read
    sent: int = 0  # response body bytes the reply carries
    raw_path: str = ""  # the path as sent, query included


@dataclass
class Fault:
    """An injected failure: the next `times` requests matching method and path pattern get it."""

    method: str
    pattern: re.Pattern[str]
    times: int
    reply: Reply | None = None  # answer this instead of running the route
    reset_after: int | None = None  # read this many body bytes, then reset the connection
    delay: float = 0.0  # answer normally, this many seconds late

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and method == self.method and bool(self.pattern.search(path))


class Aborted(Exception):
    """Raised inside a route to drop the connection without a reply."""


class Request:
    """The parsed request a route sees."""

    def __init__(self, handler: _Handler, method: str):
        self.handler = handler
        self.method = method
        self.raw_path = handler.path  # still URL-encoded: routes split on "/" before unquoting
        parts = urlsplit(handler.path)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = handler.headers
        self._body: bytes | None = None
        self.received = 0

    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        kind, _, value = auth.partition(" ")
        return value.strip() if kind.lower() in ("token", "bearer") and value.strip() else None

    def body(self, limit: int | None = None, partial: bool = False) -> bytes:
        """The request body (Content-Length or chunked). With `limit`, read at most that much,
        then reset the connection and raise Aborted (a fault). A body cut short because the
        client went away raises Aborted too (no state changes), unless `partial` (the route
        handles it, as GitHub's upload does)."""
        if self._body is not None:
            return self._body
        rfile = self.handler.rfile
        chunks: list[bytes] = []
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size_line = rfile.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    rfile.readline()
                    if limit is not None:
                        self.handler.reset()
                    break
                chunks.append(rfile.read(size))
                rfile.readline()
                self.received = sum(map(len, chunks))
                if limit is not None and self.received >= limit:
                    self.handler.reset()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            want = length if limit is None else min(length, limit)
            while self.received < want:
                chunk = rfile.read(min(1 << 16, want - self.received))
                if not chunk:
                    break
                chunks.append(chunk)
                self.received += len(chunk)
            if limit is not None:  # a short body is cut too: the fault always fires
                self.handler.reset()
        self._body = b"".join(chunks)
        if not partial and not self.complete():
            raise Aborted
        return self._body

    def complete(self) -> bool:
        """Whether the whole declared body arrived (False when the client died mid-upload)."""
        length = self.headers.get("Content-Length")
        return length is None or self.received >= int(length)

    def json(self) -> Any:
        data = self.body()
        return json.loads(data) if data else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the emulator keeps its own log

    def reset(self) -> None:
        """Drop the connection with a TCP reset, as a crashed proxy would."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        raise Aborted

    def _dispatch(self) -> None:
        emu = self.server.emulator
        req = Request(self, self.command)
        status = 0
        try:
            fault = emu._take_fault(req.method, req.raw_path)
            if fault is not None and fault.reset_after is not None:
                req.body(limit=fault.reset_after)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            emu._run_hook(req.method, req.path, "before")
            if fault is not None and fault.reply is not None:
                req.body()
                reply = fault.reply
            else:
                reply = emu.route(req)
                req.body()  # drain what the route did not read, keeping the connection usable
            emu._run_hook(req.method, req.path, "after")
            status = reply.status
            # Logged before the reply goes out, so a client that has its answer sees it logged.
            sent = 0 if req.method == "HEAD" else len(reply.body)
            emu._record(Logged(req.method, req.path, status, req.received, sent, req.raw_path))
            self._write(reply, head=req.method == "HEAD")
        except Aborted:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:  # an emulator bug: answer 500 and keep it for the test to fail on
            emu.errors.append(traceback.format_exc())
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._write(Reply.json({"message": "emulator error"}, 500), head=False)
        finally:
            if status == 0:
                emu._record(Logged(req.method, req.path, 0, req.received, 0, req.raw_path))

    def _write(self, reply: Reply, head: bool) -> None:
        self.send_response(reply.status)
        headers = {**reply.headers}
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(reply.body))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and reply.body:
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client goes away mid-request (the kill
    tests do that on purpose, a probe may close early): socketserver would print a traceback to
    stderr, which a CliRunner in the same process captures into the command's output."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Server(QuietServer):
    emulator: Emulator


class Emulator:
    """Base class: subclasses implement `route(req) -> Reply`."""

    name = "emulator"

    def __init__(self) -> None:
        self.log: list[Logged] = []
        self.errors: list[str] = []  # tracebacks of routes that crashed (answered 500)
        self.faults: list[Fault] = []
        self.hook: Callable[[str, str, str], None] | None = None
        self.lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash)."""
        assert self._server is not None, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- faults and log -----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        pattern: str,
        status: int = 503,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """The next `times` matching requests are answered `status` (JSON `body`), not routed."""
        reply = Reply.json(body if body is not None else {"message": "injected failure"}, status)
        reply.headers.update(headers or {})
        with self.lock:
            self.faults.append(Fault(method, re.compile(pattern), times, reply=reply))

    def reset_connection(
        self, method: str, pattern: str, after_bytes: int = 0, times: int = 1
    ) -> None:
        """The next `times` matching requests have their connection reset after `after_bytes`
        bytes of the request body (the route never runs)."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(pattern), times, reset_after=after_bytes))

    def slow(self, method: str, pattern: str, seconds: float, times: int = 1) -> None:
        """The next `times` matching requests are answered normally but `seconds` late."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(pattern), times, delay=seconds))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.matches(method, path):
                    f.times -= 1
                    return f
        return None

    def _run_hook(self, method: str, path: str, stage: str) -> None:
        if self.hook is not None:
            self.hook(method, path, stage)

    def _record(self, entry: Logged) -> None:
        with self.lock:
            self.log.append(entry)

    def count(
        self, method: str | None = None, pattern: str | None = None, *, query: bool = False
    ) -> int:
        """How many logged requests match `method` and the path regex `pattern` (searched in
        the path with its query string when `query`)."""
        rx = re.compile(pattern) if pattern else None
        with self.lock:
            return sum(
                1
                for e in self.log
                if (method is None or e.method == method)
                and (rx is None or rx.search(e.raw_path if query else e.path))
            )

    def writes(self) -> list[Logged]:
        """Every logged request that could change state (not GET or HEAD)."""
        with self.lock:
            return [e for e in self.log if e.method not in READ_METHODS]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def route(self, req: Request) -> Reply:  # pragma: no cover - subclasses
        raise NotImplementedError

    def iter_log(self) -> Iterator[Logged]:
        with self.lock:
            yield from list(self.log)
