"""A private S3-compatible bucket as a release source: `s3://BUCKET/PREFIX` (boto3, the `[s3]`
extra; not in the base install, and imported only when the source is first used).

The bucket holds the release-store layout (`<prefix>/<model>/<version>/<file>`,
`<prefix>/<model>/latest`), as `release publish --target s3` writes it. A public bucket, or a CDN
in front of one, needs no boto3 at all: it is an `https://` mirror (`MirrorSource`).

Credentials and endpoint come from boto3's standard chain and variables (`AWS_ACCESS_KEY_ID`,
`AWS_PROFILE`, an instance role; `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for R2, MinIO, B2...,
`AWS_REGION`). botocore's standard retry mode retries throttling (503 SlowDown), 5xx and
connection errors with backoff; a download resumes what the partial file already holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.client.network import Unreachable
from pipeline.errors import ArtifactNotFound, ConfigError, RemoteError

CHUNK = 1 << 20
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class S3Source:
    """Releases in an S3 bucket under a prefix (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        attempts: int = 5,
        timeout: float = 60.0,
    ):
        if not bucket or "/" in bucket:
            raise ConfigError(f"s3 source: expected s3://BUCKET[/PREFIX], found bucket {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.attempts = attempts
        self.timeout = timeout
        self._client = client
        self.name = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Source:
        """`s3://BUCKET[/PREFIX]`."""
        if not url.startswith("s3://"):
            raise ValueError(f"{url}: expected s3://BUCKET[/PREFIX]")
        bucket, _, prefix = url[5:].partition("/")
        return cls(bucket, prefix, **kwargs)

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ConfigError(
                    f"{self.name}: the s3:// source needs boto3, which is not installed: "
                    "pip install 'fastai-release[s3]' (or read a public bucket or CDN as an "
                    "https:// mirror)"
                ) from None
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    retries={"mode": "standard", "max_attempts": self.attempts},
                    connect_timeout=min(self.timeout, 10.0),
                    read_timeout=self.timeout,
                ),
            )
        return self._client

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _get(self, key: str, what: str, **kwargs: Any) -> Any:
        from botocore import exceptions as bx

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)
        except bx.ClientError as e:
            err = e.response.get("Error") or {}
            status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            code = err.get("Code", "")
            if code in _MISSING or status == 404:
                raise ArtifactNotFound(f"{what}: not found ({code or status})") from None
            if status is not None and (status >= 500 or status == 429):
                raise Unreachable(f"{what}: HTTP {status} {code}") from None
            raise RemoteError(f"{what}: HTTP {status} {code}: {err.get('Message', '')}") from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as e:
            raise RemoteError(
                f"{what}: {e}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
                "(a public bucket reads as an https:// mirror without credentials)"
            ) from None
        except (bx.BotoCoreError, ConnectionError, TimeoutError) as e:
            raise Unreachable(f"{what}: {type(e).__name__}: {e}") from None

    def latest(self, model: str) -> str:
        key = self.key(model, "latest")
        try:
            body = self._get(key, f"{self.name}: {model}/latest")["Body"].read()
        except ArtifactNotFound:
            raise ArtifactNotFound(f"{self.name}: no release of {model!r} (no {key})") from None
        return body.decode("utf-8", "replace").strip()

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        what = f"{self.name}: {model}/{version}/{filename}"
        return self._get(self.key(model, version, filename), what)["Body"].read()

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        """Bring `part` to `size` bytes, resuming what it holds with a Range request (also after
        a connection lost mid-body, up to `attempts` times)."""
        from botocore import exceptions as bx

        what = f"{self.name}: {model}/{version}/{filename}"
        for attempt in range(1, self.attempts + 1):
            have = part.stat().st_size if part.exists() else 0
            if have > size:
                have = 0
            if have == size:
                return
            extra = {"Range": f"bytes={have}-"} if have else {}
            body = self._get(self.key(model, version, filename), what, **extra)["Body"]
            try:
                with atomic.open_nofollow(part, "r+b" if have else "wb") as f:
                    f.seek(have)
                    f.truncate()
                    for chunk in body.iter_chunks(CHUNK):
                        f.write(chunk)
                return
            except (bx.BotoCoreError, ConnectionError, TimeoutError) as e:
                if attempt == self.attempts:
                    raise Unreachable(
                        f"{what}: download interrupted {attempt} times ({type(e).__name__}): {e}"
                    ) from None
