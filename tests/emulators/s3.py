"""An S3-compatible server for the tests: moto's ThreadedMotoServer behind a small proxy that
logs every request and injects faults (tests.emulators.base: N x any status, resets, late
replies, a per-request hook), so real boto3 and plain HTTP clients run over the wire.

    with S3Emulator() as s3:
        s3.create_bucket("releases")
        boto3.client("s3", endpoint_url=s3.url, ...)       # through the proxy
        s3.public_url("releases", "prefix")                  # what a mirror source reads
        s3.slow_down("PUT", r"/export\\.pkl", times=2)        # 503 SlowDown, as S3 throttles
        s3.objects("releases")                               # {key: bytes}, read past the proxy

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
from typing import Any

from tests.emulators.base import Emulator, Fault, Reply, Request

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "expect"}
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class S3Emulator(Emulator):
    name = "s3"

    def __init__(self) -> None:
        super().__init__()
        self._moto: Any = None
        self._local = threading.local()

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

    # --- routing: forward to moto -------------------------------------------------------------

    def route(self, req: Request) -> Reply:
        body = req.body()
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP}
        if body or req.method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        status, out_headers, data = self._request_backend(req.method, req.raw_path, body, headers)
        # Content-Length passes through: a HEAD's is the object's size
        drop = HOP - {"content-length"}
        return Reply(status, data, {k: v for k, v in out_headers if k.lower() not in drop})
