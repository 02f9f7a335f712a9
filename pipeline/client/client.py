"""`Client`: one object holding a server's sources, trust, cache, HTTP and offline settings.

In the manner of huggingface_hub's `HfApi`: build it once (`Client(...)`, or
`Client.from_env()`, which reads the environment once), then call `fetch` / `load_model` as
often as needed. The module-level `fetch()` and `load_model()` are thin wrappers that build a
Client for one call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.client.cache import Cache, default_cache_dir
from pipeline.client.fetching import resolve
from pipeline.client.network import DEFAULT_SOURCE_DEADLINE, Http, host_patterns, source_deadlines
from pipeline.client.release import FetchResult, Release, default_variants, fetch_release
from pipeline.client.settings import ClientSettings
from pipeline.client.sources import Source, parse_source
from pipeline.client.trust import Trust
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.client.loading import LoadedModel


class Client:
    """Fetch, verify and load releases (see the module docstring).

    Args:
        sources: tried in order: `Source` objects or their command-line forms (`parse_source`).
        public_key: trust root: an ECDSA public key (PEM text, a path, or a key object).
        certificate_chain: trust root: the PEM root(s) of your PKI (text or a path); needs
            `identity`, the signing certificate's SAN (URI, e-mail, DNS name) or subject.
        identity: trust root: a Sigstore identity (certificate SAN; may hold `{version}`), or
            with `certificate_chain` the identity its signing certificate must have.
        issuer: the OIDC issuer of `identity` or of keyless (default GitHub Actions').
        sigstore_trust_root: Sigstore's trusted_root.json (a path or its JSON) for keyless
            verification without network (default: fetched over TUF).
        keyless: trust root: Sigstore, each github: source's release workflow.
        pin: the blake3 of the exact manifest.json to accept.
        allow_unverified: load pickles of unauthenticated remote manifests (a WARNING each time).
        max_age_days: refuse a newest manifest older than this (freeze detection).
        trust: a ready `Trust` instead of the options above.
        cache_dir: default `settings.cache_dir` ($RELEASE_CACHE_DIR), else the platform cache dir.
        http: the HTTP client (timeouts, retries) for the remote sources given as strings;
            None makes one with the defaults.
        allow_redirect_hosts: hosts a source may redirect to beyond its own origin (and the
            download hosts github: and hf: name): `HOST`, `HOST:PORT` or `*.DOMAIN`.
        source_deadline: seconds one fetch (or load) may spend on one source, every request
            and wait included, from its first request; then the next source is tried
            (default 3600; math.inf: none).
        offline: use only the cache; None: `settings.offline` ($RELEASE_OFFLINE).
        variants: default order of variants (default: by what is installed).
        lock_timeout: seconds to wait for another process downloading the same file.
        channel: the channel `latest` resolves through (the model index; default "latest").
        index_identity: with a Sigstore trust root, the identity that signs model indexes.
        settings: what the environment gives (`ClientSettings`); None reads it now, once. A
            Client takes from it the defaults above (cache dir, offline), the tokens and
            endpoints of the sources given as strings, and what a loaded model uses (input
            limits, thread counts); `Client.from_env()` takes every setting from it.

    Raises:
        ConfigError: an empty key, pin or identity, two trust roots, an unreadable key, a
            certificate chain without an identity, an unusable Sigstore trust root, a
            redirect host not of its forms, a source deadline that is not a positive number.
    """

    def __init__(
        self,
        sources: Sequence[Source | str] = (),
        *,
        public_key: Any = None,
        certificate_chain: Any = None,
        identity: str | None = None,
        issuer: str | None = None,
        sigstore_trust_root: Any = None,
        keyless: bool = False,
        pin: str | None = None,
        allow_unverified: bool = False,
        max_age_days: float | None = None,
        trust: Trust | None = None,
        cache_dir: Path | str | None = None,
        http: Http | None = None,
        offline: bool | None = None,
        variants: Sequence[str] | None = None,
        lock_timeout: float | None = None,
        allow_redirect_hosts: Sequence[str] | str | None = None,
        source_deadline: float | None = None,
        channel: str | None = None,
        index_identity: str | None = None,
        settings: ClientSettings | None = None,
    ):
        from pipeline.index import DEFAULT_CHANNEL, check_channel

        self.settings = ClientSettings.from_env() if settings is None else settings

        self.channel = check_channel(channel) if channel is not None else DEFAULT_CHANNEL
        self.index_identity = index_identity
        hosts = host_patterns(allow_redirect_hosts)
        if http is None:
            http = Http()
        http.allow_redirect_hosts = tuple(dict.fromkeys((*http.allow_redirect_hosts, *hosts)))
        self.http = http
        deadline = DEFAULT_SOURCE_DEADLINE if source_deadline is None else source_deadline
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0:
            raise ConfigError(
                f"source deadline: expected a number of seconds > 0, found {source_deadline!r}"
            )
        self.source_deadline = float(deadline)
        self.sources: list[Source] = [
            parse_source(s, http=http, settings=self.settings) if isinstance(s, str) else s
            for s in sources
        ]
        self.trust = trust or Trust.from_options(
            public_key,
            pin,
            certificate_chain=certificate_chain,
            identity=identity,
            issuer=issuer,
            keyless=keyless,
            allow_unverified=allow_unverified,
            max_age=None if max_age_days is None else max_age_days * 86400,
            sigstore_trust_root=sigstore_trust_root,
        )
        self.cache = Cache(
            default_cache_dir(self.settings) if cache_dir is None else Path(cache_dir),
            **({"lock_timeout": lock_timeout} if lock_timeout else {}),
        )
        self.offline = bool(self.settings.offline) if offline is None else offline
        self.variants = tuple(variants) if variants else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Client:
        """A Client from the environment (read once, here), then `overrides` on top: every
        setting of `pipeline.client.settings.SETTINGS` (RELEASE_SOURCES, RELEASE_PUBLIC_KEY,
        RELEASE_OFFLINE, RELEASE_RETRIES... and the hosts' tokens), the same variables
        `release fetch` reads.

        Raises:
            ConfigError: a variable that is set but empty or blank, or not of its form.
        """
        return cls.from_settings(ClientSettings.from_env(environ), **overrides)

    @classmethod
    def from_settings(cls, settings: ClientSettings, **overrides: Any) -> Client:
        """A Client with every setting of `settings` (sources, trust, channel, transport:
        `CLIENT_OPTIONS`, and an Http of its retries and timeout), then `overrides` (those
        not None) on top.

        Raises:
            ConfigError: as `Client`.
        """
        options: dict[str, Any] = settings.client_options()
        options.update({k: v for k, v in overrides.items() if v is not None})
        if "http" not in options:
            options["http"] = Http(settings.retry_policy())
        return cls(**options, settings=settings)

    # -- the work ---------------------------------------------------------------------------

    def _variants(self, variants: Sequence[str] | None) -> tuple[str, ...]:
        return tuple(variants) if variants else self.variants or default_variants()

    def _channel(self, version: str, channel: str | None) -> str:
        from pipeline.errors import UsageError
        from pipeline.index import check_channel

        if channel is None:
            return self.channel
        if version != "latest":
            raise UsageError(
                f"version {version} and channel {channel!r}: give an exact version or a channel"
            )
        return check_channel(channel)

    def resolve(
        self,
        model: str,
        version: str = "latest",
        *,
        variants: Sequence[str] | None = None,
        channel: str | None = None,
    ) -> Release:
        """The trusted manifest of `model` `version`, or of what `channel` names (default: the
        client's channel) when `version` is "latest" (see fetching.resolve)."""
        with source_deadlines(self.source_deadline):
            return resolve(
                model,
                version,
                sources=self.sources,
                trust=self.trust,
                cache=self.cache,
                offline=self.offline,
                variants=self._variants(variants),
                channel=self._channel(version, channel),
                index_identity=self.index_identity,
            )

    def watch(
        self,
        model: str,
        *,
        channel: str | None = None,
        every: float = 60.0,
        jitter: float = 0.1,
        variants: Sequence[str] | None = None,
        input_limits: Any = None,
        start: bool = True,
    ) -> Any:
        """A live model that follows `channel`: loaded now (as `load_model`), then polled every
        `every` seconds (+- `jitter` of it) in a background thread; a new version is fetched,
        verified and smoke-tested before it replaces the one in use (see client/watch.py).

        Raises:
            As load_model, for the first load.
        """
        from pipeline.client.watch import LiveModel

        return LiveModel(
            self,
            model,
            channel=self._channel("latest", channel),
            every=every,
            jitter=jitter,
            variants=variants,
            input_limits=input_limits,
            start=start,
        )

    def fetch(
        self,
        model: str,
        version: str = "latest",
        *,
        variants: Sequence[str] | None = None,
        channel: str | None = None,
    ) -> FetchResult:
        """Bring the first variant that can be had into the cache, verified; load nothing.

        For an image baked at build time: call it once per variant to have each in the cache.

        Raises:
            Untrusted: only pickle variants of an unauthenticated remote manifest (exit 5).
            IntegrityError: only corrupt or untrusted copies could be found (exit 5).
            ArtifactNotFound: no source has the release or the variants; offline, nothing cached.
            Unreachable: no source could be reached and nothing usable is cached (exit 6).
            DiskFull: the cache has no room (nothing cached is changed).
        """
        chosen = self._variants(variants)
        with source_deadlines(self.source_deadline):  # one budget per source for the fetch
            return fetch_release(
                self.resolve(model, version, variants=chosen, channel=channel), chosen
            )

    def load_model(
        self,
        model: str,
        version: str = "latest",
        *,
        variants: Sequence[str] | None = None,
        smoke_test: bool = True,
        input_limits: Any = None,
        channel: str | None = None,
    ) -> LoadedModel:
        """Fetch, verify, load and smoke-test a model: what a server calls on start.

        The manifest is resolved and trusted first, the recorded environment compared with
        this one, and then each variant in order is fetched, read once, checked and loaded
        from those bytes, and asked the manifest's golden queries; the first that passes is
        returned. A pickle variant of an unauthenticated remote manifest is skipped (onnx
        executes nothing), unless `allow_unverified` (then a WARNING on every load).
        `smoke_test=False` predicts nothing at start. `input_limits` (an `InputLimits`) bounds
        what `predict()` accepts (default: the settings', $RELEASE_MAX_INPUT_*).

        Raises:
            EnvironmentMismatch: torch/fastai/numpy here cannot unpickle the model (exit 3).
            IntegrityError: only corrupt or untrusted copies could be found (exit 5).
            ReleaseError: no variant could be fetched, loaded and smoke-tested; lists each reason.
        """
        from pipeline.client.loading import load_release

        start = time.perf_counter()
        chosen = self._variants(variants)
        with source_deadlines(self.source_deadline):  # one budget per source for the load
            release = self.resolve(model, version, variants=chosen, channel=channel)
            return load_release(
                release,
                chosen,
                smoke_test=smoke_test,
                start=start,
                input_limits=input_limits,
                settings=self.settings,
            )


def fetch(
    model: str,
    version: str = "latest",
    *,
    variants: Sequence[str] | None = None,
    channel: str | None = None,
    **client_options: Any,
) -> FetchResult:
    """`Client(**client_options).fetch(model, version, variants=..., channel=...)`; see `Client`."""
    return Client(**client_options).fetch(model, version, variants=variants, channel=channel)


def load_model(
    model: str,
    version: str = "latest",
    *,
    variants: Sequence[str] | None = None,
    smoke_test: bool = True,
    input_limits: Any = None,
    channel: str | None = None,
    **client_options: Any,
) -> LoadedModel:
    """`Client(**client_options).load_model(...)`: what a server calls on start; see `Client`."""
    return Client(**client_options).load_model(
        model,
        version,
        variants=variants,
        smoke_test=smoke_test,
        input_limits=input_limits,
        channel=channel,
    )
