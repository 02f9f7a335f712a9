"""S3-compatible object storage (AWS S3, Cloudflare R2, MinIO, Backblaze B2, GCS interop): the
release-store layout under a prefix, `<prefix>/<model>/<version>/<file>` and
`<prefix>/<model>/latest`, so the bucket (or a CDN in front of it) is also a static mirror.

1. Plan (reads only): list the version's keys, HEAD each (size and the `blake3` metadata written
   with it), read `latest`. A version is published once its `manifest.json` is there. Identical
   objects are skipped; a published version whose manifest differs is refused unless `force`;
   objects of an unpublished version (a killed run's leftovers) are overwritten or deleted, and
   its unfinished multipart uploads aborted.
2. Apply: upload the missing files (multipart above 8 MiB, SHA-256 checksums on every part and
   request, `blake3` metadata, `Cache-Control: public, max-age=31536000, immutable`), read every
   one back and check its blake3, then the signature and `manifest.json` (which publishes the
   version), read back too, and `latest` last (`Cache-Control: public, max-age=60`), never moved
   to an older version.

Every object write is atomic in S3 (an object, or a completed multipart upload, appears whole),
so a run killed anywhere leaves objects that the next run's plan recognises by size and blake3.
Credentials come from boto3's standard chain (environment, shared files, SSO, instance role);
release.toml holds none. Requests go through our one RetryPolicy (botocore's retries are off).
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass, field
from typing import Any

from pipeline.checksums import Blake3Stream
from pipeline.config import S3Target
from pipeline.errors import ConfigError, RemoteError, first_line
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from pipeline.publishers.base import LocalFile, Plan
from pipeline.publishers.remote import RETRY_STATUS, RemotePublisher, _chain, host_wait
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import Retry, RetryPolicy
from pipeline.versions import LATEST, newer

log = logging.getLogger("pipeline.publish")
IMMUTABLE = "public, max-age=31536000, immutable"  # a version's files never change
LATEST_CACHE = "public, max-age=60"  # a CDN picks up a new release within a minute
MULTIPART = 8 << 20
CHUNK = 1 << 20
_RETRY_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)


def classify_s3(exc: BaseException) -> Retry | None:
    """Retry 5xx, 429, SlowDown/RequestTimeout and network errors (also when boto3's transfer
    manager wrapped them)."""
    from botocore import exceptions as bx

    for e in _chain(exc):
        if isinstance(e, bx.ClientError):
            meta = e.response.get("ResponseMetadata") or {}
            status = meta.get("HTTPStatusCode")
            code = (e.response.get("Error") or {}).get("Code", "")
            if status in RETRY_STATUS or code in _RETRY_CODES:
                return Retry(f"HTTP {status} {code}".strip(), host_wait(meta.get("HTTPHeaders")))
            return None
        if isinstance(
            e,
            bx.ConnectionError
            | bx.HTTPClientError
            | bx.ResponseStreamingError
            | bx.IncompleteReadError
            | ConnectionError
            | TimeoutError,
        ):
            return Retry(f"connection failed ({type(e).__name__})")
    return None


def describe_s3(exc: BaseException) -> str:
    """One line about a boto3/botocore error."""
    from botocore import exceptions as bx

    for e in _chain(exc):
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error") or {}
            status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return f"HTTP {status} {err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {first_line(exc)}"


def s3_client(target: S3Target, timeout: float) -> Any:
    """A boto3 S3 client for the target: the standard credential chain, our timeouts, no
    botocore retries (our policy decides), path-style addressing for custom endpoints."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            s3={"addressing_style": "path" if target.endpoint_url else "auto"},
        ),
    )


@dataclass
class _S3State:
    """What a plan read from the bucket, for apply."""

    files: list[LocalFile]
    upload: list[LocalFile]
    delete: list[str]
    unfinished: list[tuple[str, str]]  # (key, upload id) of multipart uploads never completed
    unpublish: bool  # delete manifest.json first (a forced replacement of a published version)
    move_latest: bool
    objects: dict[str, int] = field(default_factory=dict)


class S3Publisher(RemotePublisher):
    """Publishes a release directory into an S3 bucket (see the module docstring)."""

    name = "s3"
    plan_reads_bytes = False  # the plan compares the blake3 stored with each object

    def __init__(
        self,
        target: S3Target,
        settings: PublishSettings | None = None,
        *,
        policy: RetryPolicy | None = None,
        client: Any = None,
        config_name: str = "release.toml",
    ):
        super().__init__(target, settings, policy=policy, config_name=config_name)
        self.bucket = self.repo
        self.prefix = target.prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.target, self.policy.timeout)
        return self._client

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _classify(self, exc: BaseException) -> Retry | None:
        return classify_s3(exc)

    def _describe(self, exc: BaseException) -> str:
        return self.redact(describe_s3(exc))

    # --- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        """Credentials found by boto3's chain, the bucket reachable with them.

        Raises:
            ConfigError: boto3 is not installed.
            RemoteError: no credentials, or the bucket is missing or refuses them.
        """
        try:
            import boto3
        except ImportError:
            raise ConfigError(
                "--target s3 needs boto3, which is not installed: pip install 'fastai-release[s3]'"
            ) from None
        from botocore.exceptions import ClientError

        if boto3.session.Session().get_credentials() is None:
            raise RemoteError(
                f"{self.where}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or run where an instance/task role applies); boto3's standard "
                "chain is used, release.toml never holds them"
            )

        def head() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
                if status == 404:
                    raise RemoteError(
                        f"{self.where}: no bucket {self.bucket!r} at "
                        f"{self.target.endpoint_url or 'AWS'}; create it, or fix [publish.s3] bucket"
                    ) from None
                if status == 403:
                    raise RemoteError(
                        f"{self.where}: access to bucket {self.bucket!r} denied for these "
                        "credentials; they need s3:ListBucket, s3:GetObject, s3:PutObject, "
                        "s3:DeleteObject and s3:AbortMultipartUpload on it"
                    ) from None
                raise

        self._call("read the bucket", head)
        self._checked = True

    # --- remote state -------------------------------------------------------------------------

    def _list(self, prefix: str) -> dict[str, int]:
        """{key: size} of every object under `prefix`."""

        def run() -> dict[str, int]:
            out: dict[str, int] = {}
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                out.update({o["Key"]: o["Size"] for o in page.get("Contents") or []})
            return out

        return self._call(f"list {prefix}", run)

    def _blake3_meta(self, key: str) -> str | None:
        head = self._call(
            f"read {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
        )
        return (head.get("Metadata") or {}).get("blake3")

    def _digest(self, key: str) -> str:
        """blake3 of an object as a GET returns it (streamed)."""

        def run() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            h = Blake3Stream()
            for chunk in body.iter_chunks(CHUNK):
                h.update(chunk)
            return h.hexdigest()

        return self._call(f"download {key}", run)

    def latest(self, model: str) -> str | None:
        """The version `<prefix>/<model>/latest` names, or None."""
        from botocore.exceptions import ClientError

        key = self.key(model, LATEST)

        def run() -> str | None:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as e:
                if (e.response.get("Error") or {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return body.decode("utf-8", "replace").strip() or None

        return self._call(f"read {key}", run)

    def _unfinished(self, prefix: str) -> list[tuple[str, str]]:
        def run() -> list[tuple[str, str]]:
            page = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
            return [(u["Key"], u["UploadId"]) for u in page.get("Uploads") or []]

        return self._call(f"list unfinished uploads under {prefix}", run)

    # --- plan and apply -----------------------------------------------------------------------

    def _base(self, manifest: Manifest) -> str:
        """The version's key prefix, ending in "/"."""
        return self.key(manifest.model, manifest.version) + "/"

    def _location(self, manifest: Manifest) -> str:
        return f"s3://{self.bucket}/{self._base(manifest)}"

    def _read(self, plan: Plan, files: list[LocalFile]) -> None:
        manifest = plan.manifest
        base = self._base(manifest)
        objects = {k[len(base) :]: size for k, size in self._list(base).items()}
        same, differ = [], []
        for f in files:
            if objects.get(f.name) == f.size and self._blake3_meta(base + f.name) == f.blake3:
                same.append(f.name)
            else:
                differ.append(f.name)
        extra = sorted(set(objects) - {f.name for f in files})
        unfinished = self._unfinished(base)
        plan.published = MANIFEST_NAME in objects
        plan.skipped = same
        current = self.latest(manifest.model)
        move_latest = newer(manifest.version, current)
        # A published manifest that is this build's own: missing or damaged files are repaired.
        conflict = plan.published and MANIFEST_NAME in differ
        if conflict:
            plan.refused = sorted(differ + extra)
            if not plan.force:
                return
        upload = [f for f in files if f.name in differ]
        plan.state = _S3State(
            files, upload, extra, unfinished, conflict, move_latest, objects=objects
        )
        if not upload and not extra and not unfinished and not move_latest:
            plan.noop = True
            plan.message = "identical version already published"
            return
        plan.steps += self._steps(plan, upload, extra, unfinished, conflict, current)
        plan.upload = [f.name for f in upload]

    def _steps(
        self,
        plan: Plan,
        upload: list[LocalFile],
        extra: list[str],
        unfinished: list[tuple[str, str]],
        conflict: bool,
        current: str | None,
    ) -> list[str]:
        """What `apply` will do, one line each, in order."""
        manifest, base = plan.manifest, self._base(plan.manifest)
        steps = []
        if conflict:
            steps.append(
                f"delete {base}{MANIFEST_NAME} first: the version is unpublished while replaced (--force)"
            )
        if unfinished:
            steps.append(
                f"abort {len(unfinished)} unfinished multipart upload(s) left by an interrupted run"
            )
        if extra:
            steps.append(
                f"delete {len(extra)} object(s) the build does not have ({', '.join(extra)})"
                + (" (--force)" if conflict else ": left by an interrupted publish")
            )
        data = [f for f in upload if f.name not in (MANIFEST_NAME, SIGNATURE_NAME)]
        if data:
            big = sum(1 for f in data if f.size > MULTIPART)
            steps.append(
                f"upload {len(data)} file(s) with SHA-256 checksums"
                + (f" ({big} multipart)" if big else "")
                + f", Cache-Control {IMMUTABLE!r}"
            )
        steps.append(
            f"read back every file of the version and check its blake3 ({len(plan.sizes)} files)"
        )
        if any(f.name in (MANIFEST_NAME, SIGNATURE_NAME) for f in upload):
            steps.append(f"upload {MANIFEST_NAME} last (the version is published once it is there)")
        if newer(manifest.version, current):
            steps.append(
                f"point {self.key(manifest.model, LATEST)} at {manifest.version} "
                f"(was {current or 'unset'}), Cache-Control {LATEST_CACHE!r}"
            )
        return steps

    def _carry_out(self, plan: Plan) -> None:
        """Clean up, upload the data files, read them back, then the signature and
        manifest.json (which publish the version), read back too, then `latest`. An object
        that reads back wrong is deleted (IntegrityError): the version stays unpublished."""
        st: _S3State = plan.state
        m = plan.manifest
        base = self._base(m)
        if st.unpublish:
            self._call(
                f"delete {base}{MANIFEST_NAME}",
                lambda: self.client.delete_object(Bucket=self.bucket, Key=base + MANIFEST_NAME),
            )
        for key, upload_id in st.unfinished:
            self._call(
                f"abort the unfinished upload of {key}",
                lambda key=key, upload_id=upload_id: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )
        for name in st.delete:
            self._call(
                f"delete {base}{name}",
                lambda name=name: self.client.delete_object(Bucket=self.bucket, Key=base + name),
            )
        last = (SIGNATURE_NAME, MANIFEST_NAME)
        data = [f for f in st.upload if f.name not in last]
        for f in data:
            self._upload(base, f)
        self._check_all(base, [f for f in st.files if f.name not in last])
        finals = sorted((f for f in st.upload if f.name in last), key=lambda f: last.index(f.name))
        for f in finals:
            self._upload(base, f)
        self._check_all(base, [f for f in st.files if f.name in last])
        if st.move_latest:
            self._move_latest(m)
        log.info("%s: %s %s published (%d files)", self.where, m.model, m.version, len(st.files))

    def _upload(self, base: str, f: LocalFile) -> None:
        from boto3.s3.transfer import TransferConfig

        extra = {
            "Metadata": {"blake3": f.blake3},
            "CacheControl": IMMUTABLE,
            "ContentType": mimetypes.guess_type(f.name)[0] or "application/octet-stream",
            "ChecksumAlgorithm": "SHA256",
        }
        config = TransferConfig(
            multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, max_concurrency=4
        )
        self._call(
            f"upload {base}{f.name}",
            lambda: self.client.upload_file(
                str(f.path), self.bucket, base + f.name, ExtraArgs=extra, Config=config
            ),
        )
        log.info("%s: uploaded %s%s (%.2f MB)", self.where, base, f.name, f.size / 1e6)

    def _check_all(self, base: str, files: list[LocalFile]) -> None:
        self._read_back(
            files,
            lambda f: self._digest(base + f.name),
            lambda f: self._call(
                f"delete {base}{f.name}",
                lambda: self.client.delete_object(Bucket=self.bucket, Key=base + f.name),
            ),
            label=lambda f: base + f.name,
            outcome="deleted that object (the version stays unpublished until it verifies): run "
            "the same command again",
        )

    def _move_latest(self, m: Manifest) -> None:
        key = self.key(m.model, LATEST)
        current = self.latest(m.model)  # again: another publish may have moved it meanwhile
        if not newer(m.version, current):
            return
        self._call(
            f"write {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=(m.version + "\n").encode(),
                CacheControl=LATEST_CACHE,
                ContentType="text/plain; charset=utf-8",
                ChecksumAlgorithm="SHA256",
            ),
        )

    # --- verify -------------------------------------------------------------------------------

    def verify(self, manifest: Manifest) -> None:
        """Read every object of the version back and check it against `manifest`.

        Raises:
            IntegrityError: an object is missing or differs, or the manifest differs.
            RemoteError: the bucket failed, after retries.
        """
        base = self._base(manifest)
        self._compare_published(
            manifest,
            {k[len(base) :] for k in self._list(base)},
            lambda name: self._digest(base + name),
            lambda name: self._call(
                f"download {base}{name}",
                lambda: self.client.get_object(Bucket=self.bucket, Key=base + name)["Body"].read(),
            ),
            label=base,
            advice="delete the objects listed and publish again: a published version's missing "
            "files are uploaded again",
        )
