"""An S3-compatible server for the tests: moto's ThreadedMotoServer behind a small proxy that
logs every request and injects faults (tests.emulators.base: N x any status, resets, late
replies, a per-request hook), so real boto3 and plain HTTP clients run over the wire.

    with S3Emulator() as s3:
        s3.create_bucket("releases")
        boto3.client("s3", endpoint_url=s3.url, ...)       # through the proxy
        s3.public_url("releases", "prefix")                  # what a mirror source reads
        s3.slow_down("PUT", r"/export\\.pkl", times=2)        # 503 SlowDown, as S3 throttles
        s3.objects("releases")                               # {key: bytes}, read past the proxy

Hostile answers, for the client's bounds (each for the next `times` matching requests, default
every one): `huge(method, pattern, size)` answers 200 with Content-Length `size` and streams "1"s
until the client stops reading; `trickle(method, pattern, interval, size=1 MB)` sends the
headers, then one byte of the body every `interval` seconds; `endless_listing(bucket)` answers every
ListObjectsV2 with one more page to come (a new continuation token each time).

moto keeps its state per process; `start()` resets it, so each emulator starts empty. Moto does
not check signatures, but it answers an anonymous GET 403 unless the bucket policy allows it:
`make_public(bucket)` sets the public-read policy a bucket behind a CDN would have.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from tests.emulators.base import Aborted, Emulator, Fault, Reply, Request

# What a process talking to the emulator puts in its environment: credentials boto3 signs with
# (the emulator checks none) and no instance-metadata lookup (a request to 169.254.169.254).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "expect"}
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Hostile:
    """A hostile answer to the next `times` requests matching method and path (query included)."""

    method: str
    pattern: re.Pattern[str]
    times: int
    kind: str  # "huge" | "trickle" | "listing"
    size: int = 0
    interval: float = 0.0


class S3Emulator(Emulator):
    name = "s3"

    def __init__(self) -> None:
        super().__init__()
        self._moto: Any = None
        self._local = threading.local()
        self._hostile: list[Hostile] = []
        self._stopping = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> S3Emulator:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.backend = (host, port)
        self._request_backend("POST", "/moto-api/reset")
        super().start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # hostile answers still streaming end now
        super().stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> S3Emulator:
        return self.start()

    # --- helpers ------------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.backend, timeout=60)
            self._local.conn = conn
        return conn

    def _request_backend(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):  # a kept-alive connection moto closed: one fresh retry
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                r = conn.getresponse()
                return r.status, r.getheaders(), r.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def client(self, **kw: Any) -> Any:
        """A boto3 client that talks to moto directly (test setup and inspection)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.backend[0]}:{self.backend[1]}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            **kw,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def make_public(self, bucket: str) -> None:
        """Allow anonymous s3:GetObject on every object (a public bucket's policy)."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`, read past the proxy (no log, no faults)."""
        c = self.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents") or []:
                out[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return self.client().head_object(Bucket=bucket, Key=key)

    def unfinished_uploads(self, bucket: str) -> list[str]:
        return [
            u["Key"]
            for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []
        ]

    def public_url(self, bucket: str, prefix: str = "") -> str:
        """The path-style URL of `bucket/prefix` through the proxy (a public bucket's URL)."""
        return f"{self.url}/{bucket}" + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")

    def slow_down(self, method: str, pattern: str, times: int = 1) -> None:
        """The next `times` matching requests get S3's throttling reply: 503 SlowDown."""
        reply = Reply(503, SLOW_DOWN, {"Content-Type": "application/xml"})
        with self.lock:
            self.faults.append(Fault(method, re.compile(pattern), times, reply=reply))

    # --- hostile answers --------------------------------------------------------------------------

    def huge(self, method: str, pattern: str, size: int, times: int = 1 << 30) -> None:
        """200, Content-Length `size`, then "1"s until the client stops reading."""
        with self.lock:
            self._hostile.append(Hostile(method, re.compile(pattern), times, "huge", size=size))

    def trickle(
        self, method: str, pattern: str, interval: float, size: int = 1 << 20, times: int = 1 << 30
    ) -> None:
        """200, Content-Length `size`, then one byte every `interval` seconds."""
        with self.lock:
            self._hostile.append(
                Hostile(method, re.compile(pattern), times, "trickle", size=size, interval=interval)
            )

    def endless_listing(self, bucket: str, times: int = 1 << 30) -> None:
        """Every ListObjectsV2 of `bucket` says another page follows, with a new token."""
        pattern = re.compile(rf"^/{re.escape(bucket)}/?\?(.*&)?list-type=2")
        with self.lock:
            self._hostile.append(Hostile("GET", pattern, times, "listing"))

    def _take_hostile(self, req: Request) -> Hostile | None:
        with self.lock:
            for h in self._hostile:
                if h.times > 0 and h.method == req.method and h.pattern.search(req.raw_path):
                    h.times -= 1
                    return h
        return None

    def _endless_page(self, req: Request) -> Reply:
        n = int(req.query.get("continuation-token", "t0")[1:] or 0) + 1
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated>'
            f"<Contents><Key>k{n}</Key><Size>1</Size></Contents>"
            f"<NextContinuationToken>t{n}</NextContinuationToken></ListBucketResult>"
        )
        return Reply(200, body.encode(), {"Content-Type": "application/xml"})

    def _answer_hostile(self, req: Request, h: Hostile) -> None:
        out = req.handler.wfile
        size = h.size
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n"
        sent = 0
        try:
            out.write(head.encode())
            out.flush()
            block = b"1" * (1 << 16)
            while sent < size and not self._stopping.is_set():
                if h.kind == "trickle":
                    out.write(b"1")
                    out.flush()
                    sent += 1
                    self._stopping.wait(h.interval)
                else:
                    piece = block[: size - sent]
                    out.write(piece)
                    sent += len(piece)
        except OSError:  # the client stopped reading: what it should do
            pass
        req.handler.close_connection = True
        raise Aborted  # answered here; nothing more to write

    # --- routing: forward to moto -------------------------------------------------------------

    def route(self, req: Request) -> Reply:
        hostile = self._take_hostile(req)
        if hostile is not None and hostile.kind == "listing":
            return self._endless_page(req)
        if hostile is not None:
            self._answer_hostile(req, hostile)
        body = req.body()
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP}
        if body or req.method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        status, out_headers, data = self._request_backend(req.method, req.raw_path, body, headers)
        # Content-Length passes through: a HEAD's is the object's size
        drop = HOP - {"content-length"}
        return Reply(status, data, {k: v for k, v in out_headers if k.lower() not in drop})
