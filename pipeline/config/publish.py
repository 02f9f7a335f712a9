"""[publish] and its targets' tables; the one check that a remote target is set up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pipeline.config.spec import Custom, Matches, Range, SubsetOf, setting, setting_of
from pipeline.errors import ConfigError

PUBLISH_TARGETS = ("local", "github", "huggingface", "s3")
HUB_VARIANTS = ("quantized", "original", "onnx")
# `release init` writes remote repos as "CHANGE-ME/<model>": `publish` refuses them until set.
PLACEHOLDER_OWNER = "CHANGE-ME"
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
_HTTP_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]{0,127}$")


def _tag_pattern(v: str) -> str | None:
    """A tag pattern needs {version}, may use {model}, and must give a valid git tag."""
    expected = 'a tag pattern with "{version}" (and optionally "{model}"), like "v{version}"'
    if "{version}" not in v:
        return expected
    try:
        tag = v.format(version="1.0.0", model="m")
    except (KeyError, IndexError, ValueError):
        return expected
    if not _TAG.fullmatch(tag) or ".." in tag or tag.endswith((".lock", "/", ".")):
        return expected
    return None


def _name_pattern(v: str) -> str | None:
    try:
        v.format(version="1.0.0", model="m")
    except (KeyError, IndexError, ValueError):
        return 'a name with only "{model}" and "{version}" placeholders'
    return None


def _hub_variants(v: tuple[str, ...]) -> str | None:
    if "quantized" not in v or SubsetOf(HUB_VARIANTS)(v):
        return 'a list of "quantized" (required: model.pkl is the quantized learner), "original", "onnx"'
    return None


def _s3_prefix(v: str) -> str | None:
    parts = v.strip("/").split("/")
    if not _S3_PREFIX.match(v) or (v.strip("/") and any(p in ("", ".", "..") for p in parts)):
        return 'a key prefix like "releases" or "team/models" (no empty, "." or ".." parts)'
    return None


def _required_key(target: str, doc: str, *, example: str, check: Matches) -> Any:
    """The `_Remote.required_key` of `target`: unset by default, refused by `publish` to that
    target while unset (`_Remote.require`); `example` is what its messages suggest."""
    return setting(
        None, doc=doc, default_doc=f"unset (required for `{target}`)", example=example, check=check
    )


def _repo_key(target: str, shape: str, rx: re.Pattern[str], *, doc: str) -> Any:
    """The `repo` of `target`, matching `rx`: `shape` ("owner/name") is what its messages
    expect and suggest."""
    check = Matches(rx, f'"{shape}"', lambda v: ".." not in v and "--" not in v.split("/")[-1])
    return _required_key(target, doc, example=shape, check=check)


_TAG_PATTERN = Custom(_tag_pattern, {"pattern": r"\{version\}"})


@dataclass(frozen=True)
class LocalTarget:
    """[publish.local]: a release store in a directory (a server can read it as a source)."""

    root: Path = setting(Path("artifacts/releases"), doc="the local release store")


class _Remote:
    """A remote target: which key it cannot do without, and the one check of that key."""

    name: ClassVar[str]
    required_key: ClassVar[str] = "repo"

    def missing(self, because: str, where: str = "") -> str | None:
        """The problem line when the required key is unset (`because`: who needs it)."""
        if getattr(self, self.required_key):
            return None
        key, example = f"publish.{self.name}.{self.required_key}", self._example()
        return (
            f'{where + ": " if where else ""}{key}: expected "{example}" ({because}), found '
            f'nothing; add [publish.{self.name}] {self.required_key} = "{example}"'
        )

    def require(self, because: str, where: str = "") -> str:
        """The required key's value.

        Raises:
            ConfigError: it is unset, or still the placeholder `release init` wrote.
        """
        if problem := self.missing(because, where):
            raise ConfigError(problem)
        value: str = getattr(self, self.required_key)
        if is_placeholder(value):
            raise ConfigError(
                f"{where + ': ' if where else ''}publish.{self.name}.{self.required_key}: "
                f"{value!r} is the placeholder `release init` wrote; set it to your "
                f"{self._example()} before publishing to {self.name}"
            )
        return value

    def _example(self) -> str:
        return setting_of(type(self), self.required_key).example


def is_placeholder(repo: str | None) -> bool:
    """True for a repo name `release init` left for the user to fill in."""
    return bool(repo) and repo.split("/", 1)[0] == PLACEHOLDER_OWNER


def placeholder_repo(model: str) -> str:
    """The repo `release init` writes for a remote target: refused by `publish` until set."""
    return f"{PLACEHOLDER_OWNER}/{model}"


@dataclass(frozen=True)
class GitHubTarget(_Remote):
    """[publish.github]: a GitHub repository's Releases."""

    name: ClassVar[str] = "github"
    repo: str | None = _repo_key(
        "github", "owner/name", _GITHUB_REPO, doc="owner/name whose Releases get the release"
    )
    tag_pattern: str = setting(
        "v{version}",
        doc="the release's tag; `{version}` required, `{model}` allowed",
        check=_TAG_PATTERN,
    )
    release_name: str = setting(
        "{model} {version}", doc="the release's title", check=Custom(_name_pattern)
    )
    prerelease: bool = setting(False, doc="mark the release as a pre-release")
    pause_between_writes: float = setting(
        1.0,
        doc="seconds between write requests (GitHub asks for >= 1)",
        more="For GitHub's secondary rate limits",
        check=Range(0, 60),
    )

    def tag(self, model: str, version: str) -> str:
        return self.tag_pattern.format(model=model, version=version)


@dataclass(frozen=True)
class HubTarget(_Remote):
    """[publish.huggingface]: a Hugging Face Hub model repository."""

    name: ClassVar[str] = "huggingface"
    repo: str | None = _repo_key(
        "huggingface",
        "org/name",
        _HF_REPO,
        doc="org/name of the model repo; created on first publish",
    )
    private: bool = setting(False, doc="visibility of a repo this tool creates")
    tag_pattern: str = setting(
        "v{version}", doc="the tag of the release's commit", check=_TAG_PATTERN
    )
    tags: tuple[str, ...] = setting((), doc="extra model-card tags")
    license: str = setting("", doc="the model card's `license` (none when empty)")
    variants: tuple[str, ...] = setting(
        ("quantized", "onnx"),
        doc="the variants put on the Hub (`quantized` required: `model.pkl` is it)",
        more="Add `original` for the 6x larger learner as trained, which every "
        "`from_pretrained_fastai` call would then download",
        check=Custom(_hub_variants, SubsetOf(HUB_VARIANTS).schema),
    )

    def tag(self, model: str, version: str) -> str:
        return self.tag_pattern.format(model=model, version=version)


@dataclass(frozen=True)
class S3Target(_Remote):
    """[publish.s3]: a bucket (AWS S3 or any S3-compatible store) holding the release-store
    layout under `prefix`. Credentials come from boto3's standard chain, never from here."""

    name: ClassVar[str] = "s3"
    required_key: ClassVar[str] = "bucket"
    bucket: str | None = _required_key(
        "s3",
        "the bucket (AWS S3, Cloudflare R2, MinIO, Backblaze B2, GCS interoperability)",
        example="bucket-name",
        check=Matches(_BUCKET, "an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"),
    )
    prefix: str = setting(
        "",
        doc="key prefix: files go to `<prefix>/<model>/<version>/`, plus `<prefix>/<model>/latest`",
        check=Custom(_s3_prefix, {"pattern": _S3_PREFIX.pattern}),
    )
    endpoint_url: str | None = setting(
        None,
        doc="an S3-compatible endpoint, e.g. `https://<account>.r2.cloudflarestorage.com`",
        default_doc="unset (AWS, or `$AWS_ENDPOINT_URL`)",
        example="https://s3.example.com",
        check=Matches(_HTTP_URL, "an http(s):// URL"),
    )
    region: str | None = setting(
        None,
        doc="the bucket's region",
        default_doc="unset (boto3's default)",
        example="us-east-1",
    )

    @property
    def repo(self) -> str | None:  # the target's required key, under the name the others use
        return self.bucket


@dataclass(frozen=True)
class PublishConfig:
    """Where `release publish` puts a release."""

    targets: tuple[str, ...] = setting(
        ("local",),
        doc="default targets of `release publish`",
        more=f"Any of {', '.join(f'`{t}`' for t in PUBLISH_TARGETS)}; a remote one needs its "
        "`[publish.<target>]` repo (s3: bucket)",
        check=SubsetOf(PUBLISH_TARGETS),
    )
    local: LocalTarget = LocalTarget()
    github: GitHubTarget = GitHubTarget()
    huggingface: HubTarget = HubTarget()
    s3: S3Target = S3Target()

    @property
    def local_root(self) -> Path:
        """[publish.local] root."""
        return self.local.root

    def remote(self, target: str) -> GitHubTarget | HubTarget | S3Target:
        """The [publish.<target>] table of a remote target."""
        return {"github": self.github, "huggingface": self.huggingface, "s3": self.s3}[target]
