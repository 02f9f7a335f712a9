"""A live model for a long-running server: `Client.watch(model, channel="stable", every=60)`.

The model is loaded once at the start (as `load_model`, so a start fails loudly). Then a
background thread polls, every `every` seconds (+- `jitter` of that, so a fleet does not poll
in step): it asks the first source that answers for the model's index with a conditional
request (an idle poll is one small request answered 304 Not Modified where the host supports
it; a source without an index is polled for its `latest` pointer instead, and a source that can
do neither is resolved in full). When something changed it resolves the channel again, and a
new version is fetched, verified, loaded and smoke-tested (the golden queries) beside the one in
use, then swapped in with one reference assignment: a `predict` that started on the old model
finishes on it, the next one gets the new model, none gets an error.

A refresh that fails keeps the model in use, logs why (WARNING), and leaves the reason in
`last_error` (and `health`), where a health check can read it; the failed manifest is not
loaded again until the channel names something else, and the next polls retry the rest (the
poll's validator is only kept once a refresh succeeded). `version` is always the version in
use. `close()` (or leaving a `with` block) stops the thread.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.client.index_reads import Read, Validator, read_index
from pipeline.errors import ArtifactNotFound, ReleaseError, RemoteError
from pipeline.index import INDEX_NAME

log = logging.getLogger("pipeline.client")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LiveModel:
    """A model that follows a channel (see the module docstring).

    Args:
        client: the `Client` (sources, trust, cache) to fetch with.
        model, channel: what to follow.
        every: seconds between polls; jitter: the share of `every` each wait varies by.
        variants, input_limits: as `Client.load_model`.
        start: start the polling thread (False: poll only when `check_now()` is called).
        rand: a random() for the jitter (tests).

    Raises:
        ReleaseError: the first load failed (as `load_model`).
    """

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        channel: str,
        every: float = 60.0,
        jitter: float = 0.1,
        variants: Sequence[str] | None = None,
        input_limits: Any = None,
        start: bool = True,
        rand: Callable[[], float] = random.random,
    ):
        if not every > 0 or not 0 <= jitter < 1:
            raise ValueError(
                f"watch: every must be > 0 and jitter in [0, 1), found {every}, {jitter}"
            )
        self.client, self.model, self.channel = client, model, channel
        self.every, self.jitter, self._rand = every, jitter, rand
        self._variants = variants
        self._limits = input_limits
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._validators: dict[tuple[str, str], Validator] = {}
        self._failed: dict[tuple[str, bytes], str] = {}  # (version, manifest) -> why
        self.checks = 0
        self.swaps = 0
        self.last_check: str | None = None
        self.last_change: str | None = None
        self.last_error: str | None = None
        self._seed()  # before the first resolve: a change in between is seen by the next poll
        release = client.resolve(model, channel=channel, variants=variants)
        self.current = self._load(release)
        self._release = release
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._run, name=f"release-watch-{model}-{channel}", daemon=True
            )
            self._thread.start()

    # -- what a server uses --------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The version in use."""
        return self.current.fetched.manifest.version

    @property
    def variant(self) -> str:
        return self.current.variant

    @property
    def sequence(self) -> int | None:
        """The sequence of the index the version in use was chosen by (None: no index)."""
        choice = self._release.choice
        return None if choice is None else choice.sequence

    def predict(self, text: str) -> tuple[str, dict[str, float]]:
        """The model in use's `predict` (see LoadedModel.predict)."""
        return self.current.predict(text)

    def predict_batch(self, texts: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
        """The model in use's `predict_batch` (see LoadedModel.predict_batch)."""
        return self.current.predict_batch(texts)

    @property
    def health(self) -> dict[str, Any]:
        """What a health endpoint reports: the version in use and how the last refresh went."""
        return {
            "model": self.model,
            "channel": self.channel,
            "version": self.version,
            "variant": self.variant,
            "sequence": self.sequence,
            "ok": self.last_error is None,
            "last_error": self.last_error,
            "last_check": self.last_check,
            "last_change": self.last_change,
            "checks": self.checks,
            "swaps": self.swaps,
            "polling": self._thread is not None and self._thread.is_alive(),
        }

    # -- polling -------------------------------------------------------------------------------

    def wait_seconds(self) -> float:
        """The next wait: `every`, moved by up to +- `jitter` of it."""
        return self.every * (1 + self.jitter * (2 * self._rand() - 1))

    def _run(self) -> None:
        while not self._stop.wait(self.wait_seconds()):
            try:
                self.check_now()
            except Exception as e:  # the thread never dies: a bug is logged and kept visible
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("%s: the watch's poll failed unexpectedly", self.model)

    def check_now(self) -> bool:
        """Poll once now; True when a new version was swapped in."""
        with self._refreshing:
            self.checks += 1
            self.last_check = _now()
            try:
                changed, reads = self._probe()
                if not changed:
                    return False
                swapped = self._refresh()
            except ReleaseError as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning(
                    "%s (%s): refresh failed, still serving %s: %s",
                    self.model,
                    self.channel,
                    self.version,
                    e,
                )
                return False
            if self.last_error is None:
                self._validators.update(reads)  # unchanged until the next change
            return swapped

    def _seed(self) -> None:
        try:
            _, reads = self._probe()
            self._validators.update(reads)
        except ReleaseError as e:
            log.info(
                "%s: first poll of the sources failed (%s); the next one tries again", self.model, e
            )

    def _probe(self) -> tuple[bool, dict[tuple[str, str], Validator]]:
        """(whether the first source that answers changed since the last poll, its validators)."""
        failures: list[str] = []
        for source in self.client.sources:
            reads: dict[tuple[str, str], Validator] = {}
            changed = False
            try:
                for name in (INDEX_NAME, "latest"):
                    try:
                        r: Read = read_index(
                            source,
                            self.model,
                            self._validators.get((source.name, name)),
                            name=name,
                        )
                    except ArtifactNotFound:
                        if name == "latest":  # neither an index nor a pointer: resolve in full
                            return True, reads
                        continue
                    reads[(source.name, name)] = r.validator
                    changed = r.changed
                    break
            except RemoteError as e:  # Unreachable, BadResponse, ...: the next source
                failures.append(str(e))
                continue
            return changed, reads
        raise RemoteError(
            f"{self.model}: no source answered the poll:\n"
            + "\n".join(f"  - {f}" for f in failures)
        )

    def _refresh(self) -> bool:
        release = self.client.resolve(self.model, channel=self.channel, variants=self._variants)
        notes = [n for n in release.notes if n]
        current = self.current.fetched.manifest
        if release.manifest == current:
            self._release = release
            self.last_error = "; ".join(notes) or None
            return False
        key = (release.version, release.manifest_bytes)
        if key in self._failed:
            self.last_error = self._failed[key]
            return False
        try:
            new = self._load(release)
        except ReleaseError as e:
            why = f"{release.version} could not be loaded, kept {self.version}: {e}"
            self._failed[key] = why
            raise ReleaseError(why) from e
        old = self.version
        self.current, self._release = new, release  # the swap: one reference assignment
        self.swaps += 1
        self.last_change = _now()
        self.last_error = None
        log.info(
            "%s (%s): now serving %s (was %s)%s",
            self.model,
            self.channel,
            new.fetched.manifest.version,
            old,
            f", index sequence {self.sequence}" if self.sequence is not None else "",
        )
        return True

    def _load(self, release: Any) -> Any:
        """`release` loaded and smoke-tested as the client loads (its settings, our limits)."""
        from pipeline.client.loading import load_release

        return load_release(
            release,
            self.client._variants(self._variants),
            smoke_test=True,
            input_limits=self._limits,
            settings=self.client.settings,
        )

    # -- lifetime ------------------------------------------------------------------------------

    def close(self, timeout: float = 60.0) -> None:
        """Stop polling (waits for a refresh in progress, at most `timeout` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LiveModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LiveModel({self.model!r}, channel={self.channel!r}, version={self.version!r})"
