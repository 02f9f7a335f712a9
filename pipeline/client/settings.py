"""The client's settings from the environment: one table, one parser per variable, read once.

Every environment variable the client reads is a row of `SETTINGS`: its name, the
`ClientSettings` field it fills, the one function that parses it, and what it means. The library
(`Client.from_env()`, and the defaults of `Client()`, `Cache()`, `parse_source()`,
`load_model()`) and the command line (`release fetch`, `list`, `status`, `verify`, `cache`) read
the same names through this table: `ClientSettings.from_env()` is the only place in
`pipeline.client` that looks at `os.environ`. The other modules take a `ClientSettings` (or the
values in it) from their caller.

Rules every row keeps:

- a `RELEASE_*` variable that is set but empty or blank is an error, never "unset": an empty
  trust setting must not turn a check off (`RELEASE_PUBLIC_KEY="$(cat missing.pub)"`);
- a value that does not parse is an error naming the variable, the expected form and the value
  found (`RELEASE_OFFLINE=ture` is refused, not read as "online"); every problem is reported at
  once, one line each (`BadSetting`, exit 3);
- the variables of other tools (`HF_TOKEN`, `GITHUB_TOKEN`, `GH_TOKEN`, `HF_ENDPOINT`,
  `GITHUB_SERVER_URL`, `GITHUB_API_URL`) keep those tools' convention: empty means unset;
- nothing here is read at import.

`docs/serving.md` lists the table for users (`settings_markdown()` writes it; a test keeps the
page in step).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.client.deadlines import SOURCE_DEADLINE_ENV
from pipeline.client.limits import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_RUN,
    DEFAULT_MAX_TOKENS,
    MAX_CHARS_ENV,
    MAX_RUN_ENV,
    MAX_TOKENS_ENV,
    InputLimits,
)
from pipeline.client.redirects import REDIRECT_HOSTS_ENV
from pipeline.errors import ConfigError, InputError

log = logging.getLogger("pipeline.client")

DEFAULT_RETRIES = 5  # retries of a request (6 attempts), RetryPolicy.for_downloads' own
DEFAULT_TIMEOUT = 900.0  # seconds one file may take, retries and waits included
DEFAULT_THREADS = 1
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_UNSET: Any = object()  # a variable not set (or not of its form): the field keeps its default


class BadSetting(ConfigError, InputError):
    """One or more environment variables are not of their form (exit 3; a ValueError). An
    InputError too: the input limits and thread counts raised that before they were settings."""


# -- the parsers: (raw value) -> value, or ValueError with the expected form -------------------


def _text(raw: str) -> str:
    return raw.strip()


def _flag(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _words(raw: str) -> tuple[str, ...]:
    return tuple(raw.replace(",", " ").split())


def _path(raw: str) -> Path:
    return Path(raw.strip())


def _positive(unit: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of {unit} > 0") from None
        if not value > 0 or value != value:  # NaN is not a number of anything
            raise ValueError(f"expected a number of {unit} > 0")
        return value

    return parse


def _timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds >= 1") from None
    if not value >= 1:
        raise ValueError("expected a number of seconds >= 1")
    return value


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        v = raw.strip()
        if not v.isdigit() or int(v) < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return int(v)

    return parse


def _limit(raw: str) -> int | None:
    v = raw.strip()
    if v.lower() == "none":
        return None
    if v.isdigit() and int(v) >= 1:
        return int(v)
    raise ValueError("expected a whole number >= 1, or 'none' for no limit")


def _channel(raw: str) -> str:
    from pipeline.index import is_channel_name

    v = raw.strip()
    if not is_channel_name(v):
        raise ValueError(
            "expected a channel name: lower-case letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return v


def _hosts(raw: str) -> tuple[str, ...]:
    from pipeline.client.redirects import host_patterns

    hosts = _words(raw)
    try:
        host_patterns(list(hosts))
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return hosts


@dataclass(frozen=True)
class Setting:
    """One row of the table: the variable(s), the field, the parser, what it means, who reads it.

    `env` holds more than one name where a tool has two (the first one set wins).
    """

    env: tuple[str, ...]
    field: str
    parse: Callable[[str], Any]
    form: str  # the accepted values, as the docs say them
    meaning: str
    used_by: str

    @property
    def name(self) -> str:
        return self.env[0]

    @property
    def strict(self) -> bool:
        """This project's own variable: set but blank is an error (others: unset)."""
        return self.name.startswith("RELEASE_")


def _row(
    env: str | tuple[str, ...],
    name: str,
    parse: Callable[[str], Any],
    form: str,
    meaning: str,
    used_by: str,
) -> Setting:
    return Setting((env,) if isinstance(env, str) else env, name, parse, form, meaning, used_by)


SETTINGS: tuple[Setting, ...] = (
    # where from, where to
    _row("RELEASE_SOURCES", "sources", _words, "sources, separated by spaces or commas",
         "the sources, tried in order (`--source`)", "Client.from_env; fetch, list, status"),
    _row("RELEASE_CACHE_DIR", "cache_dir", _path, "a directory",
         "the cache (default: the platform cache dir)", "Cache, Client, resolve; fetch, cache"),
    _row("RELEASE_OFFLINE", "offline", _flag, "1/0, true/false, yes/no, on/off",
         "use only the cache", "Client, resolve; fetch"),
    # trust
    _row("RELEASE_PUBLIC_KEY", "public_key", _text, "PEM text or a file",
         "trust root: the key that signs releases", "Client.from_env; fetch, verify, status"),
    _row("RELEASE_CERTIFICATE_CHAIN", "certificate_chain", _text, "PEM text or a file",
         "trust root: your PKI's root certificate(s)", "Client.from_env; fetch, verify, status"),
    _row("RELEASE_IDENTITY", "identity", _text, "a certificate identity",
         "the signer's identity (Sigstore, or with the chain)",
         "Client.from_env; fetch, verify, status"),
    _row("RELEASE_IDENTITY_ISSUER", "issuer", _text, "a URL",
         "the OIDC issuer of the identity (default: GitHub Actions')",
         "Client.from_env; fetch, verify, status"),
    _row("RELEASE_SIGSTORE_TRUST_ROOT", "sigstore_trust_root", _text, "a file",
         "Sigstore's trusted_root.json, to verify without network",
         "Client.from_env; fetch, verify, status"),
    _row("RELEASE_KEYLESS", "keyless", _flag, "1/0, true/false, yes/no, on/off",
         "trust root: each github: source's release workflow (Sigstore)",
         "Client.from_env; fetch"),
    _row("RELEASE_PIN", "pin", _text, "64 hex digits", "accept only this manifest.json's blake3",
         "Client.from_env; fetch"),
    _row("RELEASE_ALLOW_UNVERIFIED", "allow_unverified", _flag, "1/0, true/false, yes/no, on/off",
         "load pickles of unauthenticated remote manifests", "Client.from_env; fetch"),
    _row("RELEASE_MAX_AGE_DAYS", "max_age_days", _positive("days"), "a number of days > 0",
         "refuse a newest manifest (or index) older than this", "Client.from_env; fetch, status"),
    _row("RELEASE_CHANNEL", "channel", _channel, "a channel name",
         "the channel `latest` follows (default: latest)", "Client.from_env; fetch"),
    _row("RELEASE_INDEX_IDENTITY", "index_identity", _text, "a certificate identity",
         "with Sigstore: the identity that signs the model index",
         "Client.from_env; fetch, status"),
    # transport
    _row("RELEASE_RETRIES", "retries", _whole(0), "a whole number >= 0",
         f"retries of a failed request (default {DEFAULT_RETRIES})", "Client.from_env; fetch, list"),
    _row("RELEASE_TIMEOUT", "timeout", _timeout, "a number of seconds >= 1",
         f"seconds one file may take, retries included (default {DEFAULT_TIMEOUT:g})",
         "Client.from_env; fetch, list"),
    _row(SOURCE_DEADLINE_ENV, "source_deadline", _positive("seconds"),
         "a number of seconds > 0", "seconds one fetch may spend on one source (default 3600)",
         "Client.from_env; fetch, list"),
    _row(REDIRECT_HOSTS_ENV, "allow_redirect_hosts", _hosts,
         "HOST, HOST:PORT or *.DOMAIN, separated by spaces or commas",
         "hosts a source may redirect to beyond its own", "Client.from_env; fetch, list"),
    # what a loaded model does
    _row(MAX_CHARS_ENV, "max_input_chars", _limit, "a whole number >= 1, or none",
         f"characters a text to classify may hold (default {DEFAULT_MAX_CHARS:,})",
         "load_model, Client.load_model"),
    _row(MAX_RUN_ENV, "max_input_run", _limit, "a whole number >= 1, or none",
         f"its longest run without whitespace (default {DEFAULT_MAX_RUN:,})",
         "load_model, Client.load_model"),
    _row(MAX_TOKENS_ENV, "max_input_tokens", _limit, "a whole number >= 1, or none",
         f"tokens the model reads per text (default {DEFAULT_MAX_TOKENS})",
         "load_model, Client.load_model"),
    _row("RELEASE_TORCH_THREADS", "torch_threads", _whole(1), "a whole number >= 1",
         "torch threads per predict of a pickle variant (default 1)",
         "load_model, Client.load_model"),
    _row("RELEASE_ONNX_THREADS", "onnx_threads", _whole(1), "a whole number >= 1",
         "onnxruntime threads per session (default 1)", "load_model, Client.load_model"),
    # the hosts' own variables (empty means unset, as for their tools)
    _row("HF_TOKEN", "hf_token", _text, "a token",
         "hf: sources (private repositories); else huggingface_hub's login",
         "parse_source, HfSource; fetch, list, status"),
    _row("HF_ENDPOINT", "hf_endpoint", _text, "a URL", "hf: sources' endpoint",
         "parse_source; fetch, list, status"),
    _row(("GITHUB_TOKEN", "GH_TOKEN"), "github_token", _text, "a token",
         "github: sources (private repositories)", "parse_source; fetch, list, status"),
    _row("GITHUB_SERVER_URL", "github_server_url", _text, "a URL",
         "github: sources' web host (GitHub Enterprise)", "parse_source; fetch, list, status"),
    _row("GITHUB_API_URL", "github_api_url", _text, "a URL",
         "github: sources' API (GitHub Enterprise)", "parse_source; fetch, list, status"),
)  # fmt: skip
BY_FIELD: dict[str, Setting] = {s.field: s for s in SETTINGS}
# What Client.from_env passes to Client (the rest are defaults every Client takes from here).
CLIENT_OPTIONS = (
    "sources",
    "public_key",
    "certificate_chain",
    "identity",
    "issuer",
    "sigstore_trust_root",
    "keyless",
    "pin",
    "allow_unverified",
    "max_age_days",
    "channel",
    "index_identity",
    "source_deadline",
    "allow_redirect_hosts",
)


@dataclass(frozen=True)
class ClientSettings:
    """Every client setting the environment can give (see `SETTINGS`); None: not set.

    Build it with `ClientSettings.from_env()` (the environment, read once) or directly; change it
    with `with_values(...)` (what a command line gives wins over the environment).
    """

    sources: tuple[str, ...] | None = None
    cache_dir: Path | None = None
    offline: bool | None = None
    public_key: str | None = None
    certificate_chain: str | None = None
    identity: str | None = None
    issuer: str | None = None
    sigstore_trust_root: str | None = None
    keyless: bool | None = None
    pin: str | None = None
    allow_unverified: bool | None = None
    max_age_days: float | None = None
    channel: str | None = None
    index_identity: str | None = None
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    source_deadline: float | None = None
    allow_redirect_hosts: tuple[str, ...] | None = None
    max_input_chars: int | None = DEFAULT_MAX_CHARS
    max_input_run: int | None = DEFAULT_MAX_RUN
    max_input_tokens: int | None = DEFAULT_MAX_TOKENS
    torch_threads: int = DEFAULT_THREADS
    onnx_threads: int = DEFAULT_THREADS
    hf_token: str | None = field(default=None, repr=False)
    hf_endpoint: str | None = None
    github_token: str | None = field(default=None, repr=False)
    github_server_url: str | None = None
    github_api_url: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        renamed: Mapping[str, str] | None = None,
    ) -> ClientSettings:
        """The settings the environment gives (`os.environ` unless `environ`), read once, here.

        Args:
            renamed: old variable name -> the name in `SETTINGS`, still read (with a warning
                saying the new name) for a deprecation period: the command line's own names
                of earlier releases (`RELEASE_FETCH_PUBLIC_KEY`...).

        Raises:
            BadSetting: every variable that is set but empty (`RELEASE_*`), or not of its form,
                one line each; an old name and its new one set to different values.
        """
        env = os.environ if environ is None else environ
        old_names: dict[str, list[str]] = {}
        for old, new in (renamed or {}).items():
            old_names.setdefault(new, []).append(old)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for s in SETTINGS:
            found = _read(s, env, old_names.get(s.name, ()), problems)
            if found is not _UNSET:
                values[s.field] = found
        if problems:
            if len(problems) == 1:
                raise BadSetting(problems[0])
            raise BadSetting("environment: some variables are not of their form:", problems)
        return cls(**values)

    def with_values(self, **values: Any) -> ClientSettings:
        """A copy with `values` in place of these (None and empty tuples are "not given")."""
        given = {k: v for k, v in values.items() if v is not None and v != ()}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"ClientSettings has no {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **given)

    @property
    def input_limits(self) -> InputLimits:
        """What `predict()` accepts (RELEASE_MAX_INPUT_*)."""
        return InputLimits(self.max_input_chars, self.max_input_run, self.max_input_tokens)

    def client_options(self) -> dict[str, Any]:
        """The `Client(...)` keyword arguments these settings give (those set)."""
        options = {k: getattr(self, k) for k in CLIENT_OPTIONS if getattr(self, k) is not None}
        if "sources" in options:
            options["sources"] = list(options["sources"])
        return options

    def retry_policy(self) -> Any:
        """The download policy of `retries` and `timeout` (RetryPolicy.for_downloads)."""
        from pipeline.retry import RetryPolicy

        return RetryPolicy.for_downloads(max_attempts=self.retries + 1, max_total=self.timeout)


def _read(s: Setting, env: Mapping[str, str], old: Any, problems: list[str]) -> Any:
    """The parsed value of `s` (`_UNSET`: not set, or not of its form); a problem appended for
    each bad value."""
    value, name = _UNSET, None
    for n in s.env:
        raw = env.get(n)
        if raw is not None and (raw.strip() or s.strict):
            value, name = _parse(s, n, raw, problems), n
            break
    for o in old:
        raw = env.get(o)
        if raw is None:
            continue
        log.warning("$%s is deprecated and read for this release only: rename it $%s", o, s.name)
        earlier = _parse(s, o, raw, problems)
        if name is None:
            value, name = earlier, o
        elif earlier is not _UNSET and value is not _UNSET and earlier != value:
            problems.append(
                f"${o} and ${name}: both set, to different values; keep ${name} (the name "
                f"{s.field.replace('_', ' ')} has now) and unset ${o}"
            )
    return value


def _parse(s: Setting, name: str, raw: str, problems: list[str]) -> Any:
    if not raw.strip():
        problems.append(
            f"${name}: set but empty; an empty value never turns a check off: give a value or "
            "unset the variable"
        )
        return _UNSET
    try:
        return s.parse(raw)
    except ValueError as e:
        shown = raw if len(raw) <= 80 else raw[:80] + "…"
        problems.append(f"${name}: {e}, found {shown!r}")
        return _UNSET


def settings_markdown() -> str:
    """The table of SETTINGS as Markdown (docs/serving.md holds it)."""
    lines = ["| variable | value | what it sets | read by |", "|---|---|---|---|"]
    for s in SETTINGS:
        names = " or ".join(f"`{n}`" for n in s.env)
        lines.append(f"| {names} | {s.form} | {s.meaning} | {s.used_by} |")
    return "\n".join(lines) + "\n"
