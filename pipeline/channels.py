"""`release promote`, `release yank` (and `--undo`), `release reissue`, and the index step of
`release publish`: one change to a model's index, planned on every target, then applied.

The same document goes to every target, byte for byte, so servers reading several sources see
one sequence. The plan reads each target's index (and any document an interrupted run left
there, see `publishers/indexes.py`), keeps those that verify (with the signer's own trust root
when there is a key or certificate), and takes the one with the highest sequence as the base.
The change is applied to the base: when the base already holds it (a re-run, or a run killed
after some targets were written), the base itself is written where it is missing, so a
re-run converges without a new sequence; otherwise the next sequence is issued, signed once,
and written to each target, then read back. A target that fails does not stop the others
(exit 7; run the same command again). Nothing is written by a dry run.

Where a target keeps a `latest` pointer for older clients (local store, S3), it is set to what
the `latest` channel serves (yanked versions skipped), in either direction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline import index as ix
from pipeline.errors import (
    ConfigError,
    IntegrityError,
    PartialPublishError,
    ReleaseError,
    UsageError,
)
from pipeline.index import DEFAULT_CHANNEL, Envelope, Index
from pipeline.publishers.base import PublishResult
from pipeline.publishers.indexes import IndexStore, Stored, store_for

log = logging.getLogger("pipeline.publish")


@dataclass(frozen=True)
class Change:
    """One change to an index.

    kind: "promote" (channel -> version), "yank" (version, reason), "unyank" (version), "add"
    (a published version; the default channel moves to it when it is new and newer), "reissue"
    (the same content under a new sequence and issue time: for servers with a maximum age).
    """

    kind: str
    version: str | None = None
    channel: str | None = None
    reason: str = ""
    expires_in: timedelta | None = None

    def apply(self, base: Index) -> Index:
        if self.kind == "promote":
            assert self.version and self.channel
            out = base.promoted(self.version, self.channel)
        elif self.kind == "yank":
            assert self.version
            out = base.yank(self.version, self.reason)
        elif self.kind == "unyank":
            assert self.version
            out = base.unyank(self.version)
        elif self.kind == "add":
            assert self.version
            out = base.with_version(self.version, move_latest=self.version not in base.versions)
        elif self.kind == "reissue":
            out = base
        else:  # pragma: no cover - the CLI builds only these
            raise UsageError(f"unknown index change {self.kind!r}")
        return out

    def describe(self) -> str:
        return {
            "promote": f"promote {self.version} to channel {self.channel!r}",
            "yank": f"yank {self.version} ({self.reason!r})",
            "unyank": f"undo the yank of {self.version}",
            "add": f"list {self.version} (and move {DEFAULT_CHANNEL!r} to it when it is newer)",
            "reissue": "re-issue the index unchanged (new sequence and issue time)",
        }[self.kind]


@dataclass
class TargetPlan:
    """One target's part of a plan."""

    store: IndexStore
    stored: Stored
    current: Envelope | None = None  # the target's index when it parses and verifies
    problem: str | None = None  # why the stored index is not used (then it is replaced)
    steps: list[str] = field(default_factory=list)
    noop: bool = False
    latest_to: str | None = None  # the `latest` pointer moves to this version


@dataclass
class IndexPlan:
    """What a change would do on every target (read-only)."""

    model: str
    change: Change
    targets: list[TargetPlan]
    base: Envelope | None
    index: Index  # the document every target ends up holding
    envelope: Envelope | None  # the same, sealed (None until signed: a new sequence)

    @property
    def new_sequence(self) -> bool:
        return self.envelope is None

    def summary(self) -> list[str]:
        """The change in words: sequence, channels and yanks before and after."""
        before = self.base.index if self.base is not None else None
        seq_before = before.sequence if before else None
        lines = [
            f"{self.model} index: {self.change.describe()}",
            f"  sequence {seq_before if seq_before is not None else '(none)'} -> {self.index.sequence}"
            + ("" if self.new_sequence else " (already issued: written where it is missing)"),
        ]
        old_ch = dict(before.channels) if before else {}
        for name in sorted(set(old_ch) | set(self.index.channels)):
            a, b = old_ch.get(name), self.index.channels.get(name)
            if a != b:
                lines.append(f"  channel {name}: {a or '(none)'} -> {b or '(none)'}")
        old_y = dict(before.yanked) if before else {}
        for v in sorted(set(old_y) | set(self.index.yanked), key=ix.version_key):
            if v not in old_y:
                lines.append(f"  yank {v}: {self.index.yanked[v]!r}")
            elif v not in self.index.yanked:
                lines.append(f"  unyank {v}")
        if self.index.expires != (before.expires if before else None):
            lines.append(f"  expires {self.index.expires or 'never'}")
        for name in sorted(self.index.channels):
            try:
                pick = self.index.pick(name)
            except ix.YankedOnly as e:
                lines.append(f"  ! {e}")
                continue
            if pick.version != self.index.channels[name]:
                lines.append(
                    f"  channel {name} serves {pick.version} ({self.index.channels[name]} is yanked)"
                )
        return lines


def stores_for(publishers: Sequence[Any]) -> list[IndexStore]:
    return [store_for(p) for p in publishers]


def _check(env: Envelope, signer: Any, where: str) -> None:
    """The target's document was made by this signer (key, certificate), or at least lists its
    own digest (keyless: the identity is a CI job's, not checkable here).

    Raises:
        IntegrityError: it was not.
        ConfigError: it is signed and there is no signer to sign the next one.
    """
    if signer is None:
        if env.signature is not None:
            raise ConfigError(
                f"{where}: the index is signed (sequence {env.index.sequence}); changing it needs "
                "the signer: set RELEASE_SIGNING_KEY (and RELEASE_SIGNING_CERTIFICATE), or run in "
                "CI with RELEASE_SIGNING=sigstore; servers that verify would refuse an unsigned one"
            )
        return
    if signer.method == "sigstore":
        if not ix.signed_digest_unverified(env):
            raise IntegrityError(f"{where}: the bundle does not cover this index document")
        return
    ix.verify(env, signer.trust_root(), where)


def _documents(
    store: IndexStore, stored: Stored, model: str, signer: Any
) -> tuple[Envelope | None, list[Envelope], str | None]:
    """(the current document if usable, every usable document incl. pending, the problem)."""
    where = store.where(model)
    usable: list[Envelope] = []
    current, problem = None, None
    for i, data in enumerate([stored.current, *stored.pending]):
        if data is None:
            continue
        try:
            env = ix.parse(data, where)
            if env.index.model != model:
                raise IntegrityError(f"{where}: the index of {env.index.model}, not {model}")
            _check(env, signer, where)
        except ConfigError:
            raise
        except ReleaseError as e:
            if i == 0:
                problem = str(e)
            log.warning("%s: %s; it will be replaced", store.name, e)
            continue
        usable.append(env)
        if i == 0:
            current = env
    return current, usable, problem


def plan(
    stores: Sequence[IndexStore],
    model: str,
    change: Change,
    signer: Any,
    *,
    now: datetime | None = None,
) -> IndexPlan:
    """Read every target and work out what the change would write (nothing is written).

    Raises:
        UsageError: the version is not published on every target (promote), or unknown (yank).
        ConfigError: a target's index is signed and there is no signer.
        ReleaseError: a target cannot be read (its publisher's error).
    """
    now = now or ix.now_utc()
    targets: list[TargetPlan] = []
    candidates: list[Envelope] = []
    for store in stores:
        stored = store.read(model)
        current, usable, problem = _documents(store, stored, model, signer)
        candidates += usable
        targets.append(TargetPlan(store, stored, current, problem))
    base = max(candidates, key=lambda e: e.index.sequence, default=None)
    if base is not None:
        start = base.index
    else:  # the first index of these targets: the versions every one of them holds, and
        # `latest` where the pointer names it
        start = Index(model)
        held = [set(t.store.versions(model)) for t in targets]
        for v in sorted(set.intersection(*held) if held else set(), key=ix.version_key):
            start = start.with_version(v)
        pointer = next((t.stored.latest for t in targets if t.stored.latest), None)
        if pointer is None and start.versions:
            pointer = start.versions[-1]
        if pointer:
            start = start.with_version(pointer, move_latest=True)
    if change.version is not None and change.kind in ("promote", "yank", "unyank"):
        missing = [t.store.name for t in targets if not t.store.has_version(model, change.version)]
        known = change.version in start.versions
        if change.kind == "promote" and missing:
            raise UsageError(
                f"{model} {change.version} is not published on {', '.join(missing)}: a channel may "
                "only name a version every target holds; publish it there first, or leave those "
                "targets out with --target"
            )
        if change.kind in ("yank", "unyank") and not known and len(missing) == len(targets):
            raise UsageError(
                f"{model} {change.version}: no target has this version and the index does not list it"
            )
    wanted = change.apply(start)
    if change.expires_in is not None:
        wanted = wanted.with_expiry(ix.stamp(now + change.expires_in))
    if base is not None and change.kind != "reissue" and wanted.same_content(base.index):
        index, envelope = base.index, base
    else:
        sequence = (base.index.sequence if base is not None else 0) + 1
        index, envelope = wanted.issue(sequence, now), None
    result = IndexPlan(model, change, targets, base, index, envelope)
    latest = None
    if DEFAULT_CHANNEL in index.channels:
        try:
            latest = index.pick(DEFAULT_CHANNEL).version
        except ix.YankedOnly:
            latest = None
    for t in targets:
        same = envelope is not None and t.stored.current == envelope.to_bytes()
        if not same:
            if t.current is not None:
                was = f"sequence {t.current.index.sequence}"
            else:
                was = "unusable: replaced" if t.problem else "none"
            how = "signed" if signer is not None else "unsigned"
            t.steps.append(f"write {ix.INDEX_NAME} sequence {index.sequence}, {how} (was {was})")
        if t.store.has_latest_pointer and latest and t.stored.latest != latest:
            t.latest_to = latest
            t.steps.append(f"point {model}/latest at {latest} (was {t.stored.latest or 'unset'})")
        t.noop = not t.steps
    return result


def results_of(p: IndexPlan, state: str = "planned") -> list[PublishResult]:
    out = []
    for t in p.targets:
        r = PublishResult(
            t.store.name,
            "skipped" if t.noop else state,
            t.store.where(p.model),
            message="index identical" if t.noop else "",
            actions=list(t.steps),
        )
        out.append(r)
    return out


def describe(p: IndexPlan) -> list[str]:
    """The dry-run printout: the change, then each target's steps."""
    lines = p.summary()
    for r in results_of(p):
        lines.append(r.line())
        lines += [f"  - {s}" for s in r.actions]
    return lines


def apply(p: IndexPlan, signer: Any) -> list[PublishResult]:
    """Write the plan's document to every target that lacks it, read it back.

    Raises:
        PartialPublishError: some targets were written and others failed (exit 7).
        ReleaseError: the only target, or every target, failed.
    """
    if p.envelope is None:
        p.envelope = ix.seal(p.index, signer)
        log.info(
            "%s index sequence %d %s",
            p.model,
            p.index.sequence,
            f"signed ({signer.describe()})" if signer is not None else "unsigned",
        )
    data = p.envelope.to_bytes()
    results: list[PublishResult] = []
    errors: list[ReleaseError] = []
    for t in p.targets:
        r = PublishResult(t.store.name, "skipped" if t.noop else "done", t.store.where(p.model))
        r.actions = list(t.steps)
        if t.noop:
            r.message = f"index identical (sequence {p.index.sequence})"
            results.append(r)
            continue
        try:
            if t.stored.current != data:
                t.store.write(p.model, data)
                back = t.store.read(p.model).current
                if back != data:
                    raise IntegrityError(
                        f"{t.store.where(p.model)}: reads back other bytes than were written; "
                        "run the same command again"
                    )
            if t.latest_to is not None:
                t.store.set_latest(p.model, t.latest_to)
            r.message = f"index sequence {p.index.sequence}"
        except ReleaseError as e:
            errors.append(e)
            r = PublishResult(t.store.name, "failed", r.location, message=str(e).splitlines()[0])
        results.append(r)
    if not errors:
        return results
    states = "\n".join(f"  {r.line()}" for r in results)
    if len(errors) < len(p.targets):
        raise PartialPublishError(
            f"{len(errors)} of {len(p.targets)} targets failed; run the same command again to "
            f"finish them (the same index document is written; finished targets are skipped):\n{states}"
        )
    if len(p.targets) > 1:
        errors[0].args = (f"{errors[0]}\nevery target failed:\n{states}",)
    raise errors[0]


def change_index(
    publishers: Sequence[Any],
    model: str,
    change: Change,
    signer: Any,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> tuple[IndexPlan, list[PublishResult]]:
    """Plan `change` on every publisher's target and (unless a dry run) apply it."""
    p = plan(stores_for(publishers), model, change, signer, now=now)
    if dry_run:
        return p, results_of(p)
    return p, apply(p, signer)


def index_after_publish(
    publishers: Sequence[Any], model: str, version: str, signer: Any, *, dry_run: bool = False
) -> list[PublishResult]:
    """The index step of `release publish`: list the version on every target's index and move
    the default channel to it when it is new there and newer than what the channel names (a
    re-run of a publish never moves a channel an operator rolled back).

    Raises:
        PartialPublishError, ReleaseError: as `apply`.
    """
    try:
        p, results = change_index(
            publishers, model, Change("add", version), signer, dry_run=dry_run
        )
    except ConfigError as e:  # a signed index and no signer: the release itself is published
        log.warning("%s index not updated: %s", model, e)
        return []
    except ReleaseError as e:
        if not dry_run:
            raise
        log.warning("%s index: a real publish would update it; reading it failed: %s", model, e)
        return []
    for line in describe(p) if dry_run else p.summary():
        log.info("%s", line)
    return results
