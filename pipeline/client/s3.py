"""A private S3-compatible bucket as a release source: `s3://BUCKET/PREFIX` (boto3, the `[s3]`
extra; not in the base install, and imported only when the source is first used).

The bucket holds the release-store layout (`<prefix>/<model>/<version>/<file>`,
`<prefix>/<model>/latest`), as `release publish --target s3` writes it. A public bucket, or a CDN
in front of one, needs no boto3 at all: it is an `https://` mirror (`MirrorSource`).

boto3 does what only it knows: the credentials (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, an instance
role), the endpoint (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for R2, MinIO, B2..., `AWS_REGION`)
and the request signature. It signs each request as a pre-signed URL (no network), and the bytes
come through this client's `Http`: the same bounds as every other source (a small file capped
once decoded, a download stopped at the manifest's size, `--timeout` and `--retries`, the
per-source deadline, redirects kept on the endpoint, no error body echoed), and a download resumes
what the partial file already holds with a Range request. A bucket in another region than the one
configured answers with its region (`x-amz-bucket-region`): the request is signed again for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from pipeline.client.errors import BadResponse, HttpStatus
from pipeline.client.network import POINTER_LIMIT, Http
from pipeline.errors import ArtifactNotFound, ConfigError, RemoteError

_EXPIRES_MIN = 900  # seconds a pre-signed URL stays valid, at least


class S3Source:
    """Releases in an S3 bucket under a prefix (see the module docstring).

    Args:
        bucket, prefix: where the release store is.
        endpoint_url, region: boto3's, when not from its environment and config.
        client: a boto3 S3 client to sign with (tests); None makes one on first use.
        http: the HTTP client (timeouts, retries, redirect hosts); None makes a default one.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        http: Http | None = None,
    ):
        if not bucket or "/" in bucket:
            raise ConfigError(f"s3 source: expected s3://BUCKET[/PREFIX], found bucket {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.http = http or Http()
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
                config=Config(signature_version="s3v4"),
            )
        return self._client

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def presign(self, operation: str, what: str, **params: Any) -> str:
        """A pre-signed URL of `operation` on the bucket (signed here; nothing is sent).

        Raises:
            RemoteError: no credentials (with where to set them).
        """
        from botocore import exceptions as bx

        expires = max(_EXPIRES_MIN, int(self.http.policy.max_total) + 60)
        try:
            return self.client.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, **params},
                ExpiresIn=min(expires, 7 * 86400),
            )
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as e:
            raise RemoteError(
                f"{what}: {e}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
                "(a public bucket reads as an https:// mirror without credentials)"
            ) from None
        except bx.BotoCoreError as e:
            raise RemoteError(f"{what}: cannot sign the request: {type(e).__name__}: {e}") from None

    def with_region(self, what: str, fn: Any) -> Any:
        """`fn()`; again once, signed for the bucket's region, when S3 names another one."""
        try:
            return fn()
        except HttpStatus as e:
            region = e.headers.get("x-amz-bucket-region")
            current = self.client.meta.region_name
            if region and region != current and self.endpoint_url is None:
                self.region, self._client = region, None
                return fn()
            if e.status in (401, 403):
                raise HttpStatus(
                    f"{e}; check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the "
                    "bucket's policy",
                    e.status,
                    e.headers,
                ) from None
            raise

    def get(self, key: str, what: str, limit: int | None = None) -> bytes:
        """A small object (at most `limit` bytes, default the client's small-file limit)."""
        extra = {} if limit is None else {"limit": limit}
        return self.with_region(
            what,
            lambda: self.http.get_bytes(
                self.presign("get_object", what, Key=key),
                what=what,
                source=self.name,
                **extra,
            ),
        )

    def latest(self, model: str) -> str:
        from pipeline.client.sources import version_in_pointer

        key = self.key(model, "latest")
        what = f"{self.name}: {model}/latest"
        try:
            body = self.get(key, what, limit=POINTER_LIMIT)
        except ArtifactNotFound:
            raise ArtifactNotFound(f"{self.name}: no release of {model!r} (no {key})") from None
        return version_in_pointer(body, what)

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        what = f"{self.name}: {model}/{version}/{filename}"
        return self.get(self.key(model, version, filename), what)

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        """Bring `part` to `size` bytes, resuming what it holds with a Range request; never past
        `size` (see Http.download)."""
        what = f"{self.name}: {model}/{version}/{filename}"
        key = self.key(model, version, filename)
        self.with_region(
            what,
            lambda: self.http.download(
                self.presign("get_object", what, Key=key),
                part,
                size=size,
                what=what,
                source=self.name,
            ),
        )

    def list_page(self, prefix: str, token: str | None, what: str) -> tuple[list[str], str | None]:
        """One page of ListObjectsV2 under `prefix`: its keys, and the token of the next page
        (None: the last one). The answer is bounded as every small file.

        Raises:
            BadResponse: not a listing (or an XML document with a DTD, which S3 never sends).
        """
        params: dict[str, Any] = {"Prefix": prefix}
        if token:
            params["ContinuationToken"] = token
        body = self.with_region(
            what,
            lambda: self.http.get_bytes(
                self.presign("list_objects_v2", what, **params),
                what=what,
                source=self.name,
            ),
        )
        return parse_listing(body, what)


def parse_listing(body: bytes, what: str) -> tuple[list[str], str | None]:
    """The keys of a ListObjectsV2 answer and its next continuation token (None: the last page).

    Raises:
        BadResponse: not well-formed, has a DTD or entities (never in S3's answers; refused so
            that no entity is ever expanded), or is not a ListBucketResult.
    """
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise BadResponse(f"{what}: the listing carries a DTD; refused")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise BadResponse(f"{what}: not an S3 listing: {e}") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    if local(root.tag) != "ListBucketResult":
        raise BadResponse(f"{what}: not an S3 listing (<{local(root.tag)[:40]}>)")
    keys: list[str] = []
    truncated, token = False, None
    for child in root:
        name = local(child.tag)
        if name == "Contents":
            for item in child:
                if local(item.tag) == "Key" and item.text:
                    keys.append(item.text)
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = (child.text or "").strip() or None
    return keys, token if truncated else None
