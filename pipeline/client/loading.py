"""Load a fetched model (the only place the client imports torch and fastai), smoke-test it, and
fall back to the next variant when a step fails."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.client.limits import SMOKE_TEST_SECONDS, InputLimits
from pipeline.client.predict import (
    DEFAULT_THREADS,
    Predictor,
    UnsupportedLearner,
    learner_predict,
    stop_lookup_growth,
    torch_threads,
)
from pipeline.client.release import Fallback, FetchResult, Release, read_verified
from pipeline.client.settings import ClientSettings
from pipeline.environment import current
from pipeline.errors import ReleaseError
from pipeline.manifest import GoldenQuery

log = logging.getLogger("pipeline.client")
_AGREEMENT = 1e-5  # the fast path must match learn.predict this closely, or it is not used


class EnvironmentMismatch(ReleaseError):
    """The installed libraries cannot unpickle the model as it was written."""

    exit_code = 3


@dataclass
class LoadedModel:
    """A loaded, smoke-tested learner, where it came from, and a fast `predict`."""

    learner: Any
    fetched: FetchResult
    smoke_passed: int
    fallback_reasons: list[str] = field(default_factory=list)
    # None: the fast path did not apply; predict() uses fastai. For the onnx variant, the
    # OnnxClassifier (also `learner`: there is no fastai learner at all).
    predictor: Any = None
    load_seconds: float = 0.0
    limits: InputLimits = field(default_factory=InputLimits)  # what predict() accepts
    threads: int = DEFAULT_THREADS  # torch intra-op threads of a pickle variant's predict()

    @property
    def variant(self) -> str:
        return self.fetched.variant

    @property
    def labels(self) -> tuple[str, ...]:
        return self.fetched.manifest.labels

    def predict(self, text: str) -> tuple[str, dict[str, float]]:
        """The label and every label's probability for `text`: `learn.predict` without its
        per-call DataLoader, with the same results (to 1e-5); for a learner that fast path
        does not apply to, `learn.predict` itself, within the same limits. A pickle variant
        runs at `self.threads` torch threads (see `pipeline.client.predict.torch_threads`:
        the count is set for the call and restored after it).

        Raises:
            InputTooLarge: `text` is over `self.limits` (a ValueError; nothing was tokenized,
                or, over the token limit, nothing reached the model).
        """
        self.limits.check(text)
        if self.predictor is not None:
            return self.predictor(text)
        return learner_predict(self.learner, text, self.limits, threads=self.threads)

    def predict_batch(
        self, texts: Sequence[str], *, batch_size: int = 64
    ) -> list[tuple[str, dict[str, float]]]:
        """`predict` of every text, in input order, run in batches of at most `batch_size`
        where the variant can (the pickle's fast path: fastai's padding; onnx: texts of the
        same length together, or one by one on a graph of batch 1), one by one otherwise.

        Raises:
            InputTooLarge: a text is over `self.limits` (every text is checked before any runs).
        """
        texts = list(texts)
        for text in texts:
            self.limits.check(text)
        batch = getattr(self.predictor, "predict_batch", None)
        if batch is not None:
            return batch(texts, batch_size=batch_size)
        return [self.predict(t) for t in texts]


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:2])


def check_environment(recorded: dict[str, str], here: dict[str, str] | None = None) -> list[str]:
    """Compare the manifest's recorded environment with this one, before anything is unpickled.

    torch and fastai must be installed and agree in major.minor (a pickle holds their classes
    by name and their layouts change between minors); numpy must not be older in major (numpy 2
    pickles name `numpy._core`). Any other difference (python, patch versions, fastcore,
    fasttransform, pandas) is returned as a warning.

    Raises:
        EnvironmentMismatch: names the library, the version that wrote the model and the one here.
    """
    here = current() if here is None else here
    notes: list[str] = []
    for lib in ("torch", "fastai"):
        theirs = recorded.get(lib)
        if theirs is None:
            continue
        mine = here.get(lib)
        if mine is None:
            raise EnvironmentMismatch(
                f"environment: the model was pickled with {lib} {theirs}, and {lib} is not installed "
                f"here; install it (pip install '{lib}=={theirs.split('+')[0]}', or the [build] extra "
                "of fastai-release) to load models; fetching needs neither"
            )
        if _major_minor(mine) != _major_minor(theirs):
            raise EnvironmentMismatch(
                f"environment: the model was pickled with {lib} {theirs}, this server has {lib} {mine}; "
                f"install {lib}=={theirs.split('+')[0]}"
            )
    theirs_np, mine_np = recorded.get("numpy"), here.get("numpy")
    if theirs_np and mine_np and int(mine_np.split(".")[0]) < int(theirs_np.split(".")[0]):
        raise EnvironmentMismatch(
            f"environment: the model was pickled with numpy {theirs_np}, this server has numpy {mine_np}, "
            f"which cannot read numpy {theirs_np.split('.')[0]} pickles; install numpy>={theirs_np.split('.')[0]}"
        )
    for lib, theirs in recorded.items():
        if lib in ("platform", "quantized_engine"):
            continue
        mine = here.get(lib)
        if mine is not None and mine.split("+")[0] != theirs.split("+")[0]:
            notes.append(f"{lib} {theirs} wrote the model, {mine} is installed")
    return notes


def _use_quantized_engine(engine: str | None) -> None:
    """Select the quantized engine the model was built for, or refuse before unpickling.

    Raises:
        ReleaseError: this CPU / torch build has no such engine.
    """
    if not engine:
        return
    import torch

    supported = list(torch.backends.quantized.supported_engines)
    if engine not in supported:
        raise ReleaseError(
            f"the quantized model needs the {engine!r} quantized engine; this CPU and torch build "
            f"offer {supported}"
        )
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine


def warn_unverified(fetched: FetchResult) -> None:
    """Say, on every load, that a pickle nobody vouched for is about to run."""
    log.warning(
        "%s %s: loading %s, a pickle that runs code, whose manifest is NOT authenticated "
        "(allow_unverified): whoever controls %s can run code in this process",
        fetched.manifest.model,
        fetched.manifest.version,
        fetched.path.name,
        fetched.manifest_source,
    )


def _load_learner(data: bytes, unverified: bool) -> Any:
    """fastai's load_learner on verified bytes. Its insecure-pickle warning is silenced only
    for a manifest that is authenticated or the operator's own; unverified bytes show it."""
    from fastai.learner import load_learner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantization deprecation notes
        if unverified:
            warnings.filterwarnings("always", message=".*insecure pickle", category=UserWarning)
        return load_learner(io.BytesIO(data))


def run_smoke_test(
    label_of: Callable[[str], str],
    golden: Sequence[GoldenQuery],
    *,
    budget: float = SMOKE_TEST_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Ask the golden queries in order until `budget` seconds have passed; how many passed.

    Every query asked must give its expected label; the first always is asked. Past the budget
    the rest are skipped with a warning: a manifest cannot make a start last longer than that.

    Raises:
        ReleaseError: a query gave another label (names the query, both labels).
    """
    start = clock()
    passed = 0
    for q in golden:
        if passed and clock() - start > budget:
            log.warning(
                "smoke test: stopped after %d of %d golden queries (%.0f s, the smoke test's "
                "budget); the other %d were not asked",
                passed,
                len(golden),
                budget,
                len(golden) - passed,
            )
            break
        got = label_of(q.text)
        if got != q.expected:
            raise ReleaseError(
                f"smoke test: {q.text[:200]!r} gave {got!r}, the manifest expects {q.expected!r}"
            )
        passed += 1
    return passed


def _load_and_smoke(
    fetched: FetchResult, smoke_test: bool, limits: InputLimits, threads: int
) -> tuple[Any, Predictor | None, int]:
    entry = fetched.manifest.variant(fetched.variant)
    # One read: these bytes are checked and these bytes are unpickled (the file is not reopened).
    data = read_verified(fetched.path, entry)
    if fetched.variant == "quantized":
        _use_quantized_engine(fetched.manifest.environment.get("quantized_engine"))
    if fetched.unverified:
        warn_unverified(fetched)
    learn = _load_learner(data, fetched.unverified)
    del data
    stop_lookup_growth(learn)  # before anything predicts: learn.predict too, Predictor or not
    predictor: Predictor | None
    try:
        predictor = Predictor(learn, limits=limits, threads=threads)
    except UnsupportedLearner as e:
        log.info("fast predict does not apply (%s); predict() uses learn.predict", e)
        predictor = None
    golden = fetched.manifest.golden_queries
    if smoke_test and predictor is not None and golden:
        # Part of the smoke test: one comparison with fastai's own path guards the fast path
        # against library changes (without the smoke test nothing is predicted at start).
        predictor.encode(golden[0].text)  # within the limits, before fastai's path runs on it
        with learn.no_bar(), torch_threads(threads):
            _, _, expected = learn.predict(golden[0].text)
        got = predictor.probabilities(golden[0].text)
        diff = float((expected - got).abs().max())
        if diff > _AGREEMENT:
            log.warning(
                "fast predict differs from learn.predict by %.2g on a golden query; using learn.predict",
                diff,
            )
            predictor = None
    passed = 0
    if smoke_test:
        model = LoadedModel(learn, fetched, 0, predictor=predictor, limits=limits, threads=threads)
        passed = run_smoke_test(lambda text: model.predict(text)[0], golden)
    return learn, predictor, passed


def _load_onnx_and_smoke(
    fetched: FetchResult, smoke_test: bool, limits: InputLimits, threads: int
) -> tuple[Any, Any, int]:
    from pipeline.client.onnx_model import load_verified

    clf = load_verified(fetched, threads=threads)
    clf.tokenizer.limits = limits
    passed = 0
    if smoke_test:
        passed = run_smoke_test(
            lambda text: clf.predict(text).label, fetched.manifest.golden_queries
        )
    return clf, clf, passed


def load_release(
    release: Release,
    variants: Sequence[str],
    *,
    smoke_test: bool = True,
    start: float | None = None,
    input_limits: InputLimits | None = None,
    settings: ClientSettings | None = None,
) -> LoadedModel:
    """Load the first of `variants` of a trusted release that loads and passes the smoke test;
    `input_limits` bounds what `predict()` accepts (default: `settings.input_limits`,
    $RELEASE_MAX_INPUT_*); a pickle variant predicts at `settings.torch_threads` torch threads
    ($RELEASE_TORCH_THREADS, default 1), an onnx one at `settings.onnx_threads`. No settings:
    the environment's.

    Raises:
        EnvironmentMismatch: torch/fastai/numpy here cannot unpickle the model (exit 3).
        IntegrityError: only corrupt or untrusted copies could be found (exit 5).
        ReleaseError: no variant could be fetched, loaded and smoke-tested; lists each reason.
    """
    start = time.perf_counter() if start is None else start
    settings = ClientSettings.from_env() if settings is None else settings
    limits = settings.input_limits if input_limits is None else input_limits
    threads = settings.torch_threads if any(v != "onnx" for v in variants) else DEFAULT_THREADS
    env_error = _environment_error(release, variants)
    tried = Fallback(release)
    for variant in variants:
        if variant != "onnx" and env_error is not None:
            tried.failed(variant, env_error, str(env_error), "skipped")
            continue
        # held from the fetch until the bytes are read: `cache prune` cannot remove the file
        # in between (it waits, bounded, for this block to end)
        with release.cache.in_use():
            fetched = tried.file(variant, why="not available: ", said="not available, falling back")
            if fetched is None:
                continue
            try:
                if variant == "onnx":
                    learn, predictor, passed = _load_onnx_and_smoke(
                        fetched, smoke_test, limits, settings.onnx_threads
                    )
                else:
                    learn, predictor, passed = _load_and_smoke(fetched, smoke_test, limits, threads)
            except ReleaseError as e:
                tried.failed(variant, e, str(e), "rejected, falling back")
                continue
            except Exception as e:  # e.g. a pickle this torch cannot read: fall back, say why
                kind = f"{type(e).__name__}: {e}"
                said = "failed to load, falling back"
                tried.failed(variant, ReleaseError(str(e)), f"failed to load: {kind}", said, kind)
                continue
        fetched = dataclasses.replace(fetched, skipped=tuple(tried.reasons))
        elapsed = time.perf_counter() - start
        log.info(
            "loaded %s %s, %s variant (%s) from %s%s; smoke test %d/%d golden queries; %.2f s",
            release.model,
            release.version,
            variant,
            fetched.path.name,
            fetched.source,
            " (offline)" if release.offline else "",
            passed,
            len(release.manifest.golden_queries) if smoke_test else 0,
            elapsed,
        )
        return LoadedModel(
            learn, fetched, passed, tried.reasons, predictor, elapsed, limits, threads
        )
    raise tried.error("loaded")


def _environment_error(release: Release, variants: Sequence[str]) -> EnvironmentMismatch | None:
    """Why the pickle variants cannot load here (None: they may), checked before anything is
    fetched; the differences that do not matter are logged.

    Raises:
        EnvironmentMismatch: they cannot, and the onnx variant is not among `variants`.
    """
    if not any(v != "onnx" for v in variants):
        return None
    try:
        for note in check_environment(release.manifest.environment):
            log.warning("environment: %s", note)
    except EnvironmentMismatch as e:
        if "onnx" not in variants:
            raise
        return e  # the pickle variants cannot load here; the onnx one still may
    return None
