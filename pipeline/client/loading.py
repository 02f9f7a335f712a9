"""Load a fetched model (the only place the client imports fastai), smoke-test it, fall back."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.fetching import DEFAULT_VARIANTS, FetchResult, fetch
from pipeline.client.sources import Source
from pipeline.environment import current
from pipeline.errors import IntegrityError, ReleaseError
from pipeline.manifest import check_file

log = logging.getLogger("pipeline.client")
# A difference in these breaks unpickling or changes the model's code; others only warn.
_BREAKING = ("torch", "fastai")


@dataclass
class LoadedModel:
    """A loaded, smoke-tested learner and where it came from."""

    learner: Any
    fetched: FetchResult
    smoke_passed: int
    fallback_reasons: list[str]


def check_environment(recorded: dict[str, str]) -> list[str]:
    """Compare the manifest's environment with this one; return warnings.

    Raises:
        ReleaseError: torch or fastai differ in major.minor (pickles would not load reliably).
    """
    here = current()
    warnings_: list[str] = []
    for lib, theirs in recorded.items():
        if lib in ("platform", "quantized_engine") or lib not in here and lib != "python":
            continue
        mine = here.get(lib)
        if mine is None or mine == theirs:
            continue
        if lib in _BREAKING and mine.split(".")[:2] != theirs.split(".")[:2]:
            raise ReleaseError(
                f"environment: the model was pickled with {lib} {theirs}, this server has {lib} {mine}; install {lib}=={theirs.split('+')[0]}"
            )
        warnings_.append(f"{lib} {theirs} wrote the model, {mine} is installed")
    return warnings_


def _load_and_smoke(fetched: FetchResult) -> tuple[Any, int]:
    entry = fetched.manifest.variant(fetched.variant)
    problem = check_file(fetched.path, entry)  # again, right before unpickling (cheap: blake3)
    if problem:
        raise IntegrityError(f"{fetched.path}: {problem}; refusing to unpickle")
    from fastai.learner import load_learner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(fetched.path)
    passed = 0
    with learn.no_bar():
        for q in fetched.manifest.golden_queries:
            got = str(learn.predict(q.text)[0])
            if got != q.expected:
                raise ReleaseError(f"smoke test: {q.text!r} gave {got!r}, expected {q.expected!r}")
            passed += 1
    return learn, passed


def load_model(
    model: str,
    version: str = "latest",
    *,
    sources: Sequence[Source],
    variants: Sequence[str] = DEFAULT_VARIANTS,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Fetch, verify, load and smoke-test a model; fall back to the next variant on any failure.

    Raises:
        ReleaseError: no variant could be fetched, loaded and smoke-tested.
    """
    reasons: list[str] = []
    fetched_all = fetch(model, version, sources=sources, variants=variants, cache_dir=cache_dir)
    for warning in check_environment(fetched_all[0].manifest.environment):
        log.warning("environment: %s", warning)
    for fetched in fetched_all:
        try:
            learn, passed = _load_and_smoke(fetched)
        except ReleaseError as e:
            reasons.append(f"{fetched.variant}: {e}")
            log.warning("%s variant rejected, falling back: %s", fetched.variant, e)
            continue
        except Exception as e:  # e.g. no quantized engine on this CPU: unpickling fails
            reasons.append(f"{fetched.variant}: {type(e).__name__}: {e}")
            log.warning(
                "%s variant failed to load, falling back: %s: %s",
                fetched.variant,
                type(e).__name__,
                e,
            )
            continue
        log.info(
            "loaded %s %s, %s variant from %s; smoke test %d/%d",
            fetched.manifest.model,
            fetched.manifest.version,
            fetched.variant,
            fetched.source,
            passed,
            len(fetched.manifest.golden_queries),
        )
        return LoadedModel(learn, fetched, passed, reasons)
    raise ReleaseError(
        f"{model} {version}: no variant could be loaded:\n" + "\n".join(f"  - {r}" for r in reasons)
    )
