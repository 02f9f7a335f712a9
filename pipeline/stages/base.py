"""The stage contract, the build context the stages share, and the runner."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import ReleaseConfig
from pipeline.errors import GateFailed, ReleaseError

log = logging.getLogger("pipeline.build")


@dataclass
class BuildContext:
    """What the stages read and write. Learners are held in memory between stages."""

    config: ReleaseConfig
    build_dir: Path
    force: bool = False
    learner: Any = None  # the original (as trained or loaded) fastai Learner
    stripped: Any = None  # float model without training-only wrappers (a Learner)
    quantized: Any = None  # the INT8 Learner
    train_key: str = ""
    build_key: str = ""  # fingerprint of everything that decides the build (see pipeline.build)
    train_data: Any = None  # LabelledTexts | None (None when loading an export.pkl without a CSV)
    eval_data: Any = None  # LabelledTexts
    challenge_data: Any = None  # LabelledTexts | None: [data] challenge_csv, when configured
    engine: str = ""  # the quantized engine in use
    results: dict[str, Any] = field(default_factory=dict)  # every measured number, by stage
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage name -> reason
    gates_passed: bool | None = None
    onnx_checked: bool = False
    onnx_unsupported: str | None = None  # why the onnx export cannot reproduce the learner
    trained_learner_kept: bool = False  # training ran and its learner + train.key are written
    baseline_model: Any = None  # the TF-IDF baseline, fitted once on the training rows

    def onnx_unsupported_reason(self) -> str | None:
        """Why this learner has no onnx variant (None: it can have one); computed once."""
        if not self.onnx_checked:
            from pipeline.onnx_export import unsupported_reason

            self.onnx_unsupported = unsupported_reason(self.original_learner())
            self.onnx_checked = True
        return self.onnx_unsupported

    def original_learner(self) -> Any:
        """The original learner, loaded from the build directory when training was skipped."""
        if self.learner is None:
            from pipeline.learner_file import load_exported

            self.learner = load_exported(self.original_path)
        return self.learner

    @property
    def original_path(self) -> Path:
        from pipeline.manifest import ORIGINAL_FILE

        return self.build_dir / ORIGINAL_FILE

    @property
    def quantized_path(self) -> Path:
        from pipeline.manifest import QUANTIZED_FILE

        return self.build_dir / QUANTIZED_FILE


class Stage(Protocol):
    """One step of `release build`. `name` reads in a log ("quantizing")."""

    name: str

    def skip_reason(self, ctx: BuildContext) -> str | None:
        """A sentence saying why this stage need not run, or None to run it."""

    def run(self, ctx: BuildContext) -> None: ...


class StageError(ReleaseError):
    """An unexpected failure inside a stage, prefixed with the stage's name."""


@contextmanager
def working_on(what: str) -> Iterator[None]:
    """An unexpected error inside names `what` (the input: a variant, a file, how many texts);
    the runner then puts the stage's name in front."""
    try:
        yield
    except (ReleaseError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise StageError(f"{what}: {type(e).__name__}: {e}") from e


def _kept_note(ctx: BuildContext) -> str:
    if not ctx.trained_learner_kept:
        return ""
    return (
        f"; the trained learner is kept ({ctx.original_path}): run `release build` again and it "
        "is reused, training skipped while the data and [train] are unchanged"
    )


def run_stages(stages: list[Stage], ctx: BuildContext) -> None:
    """Run `stages` in order, logging each with its time; a skip is logged with its reason.

    Raises:
        ReleaseError: a stage failed; the message starts with the stage name and the exit code
            of the original error is kept.
    """
    total = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i}/{len(stages)}] {stage.name}"
        reason = stage.skip_reason(ctx)
        if reason:
            log.info("%s: skipped, %s", prefix, reason)
            ctx.skipped[stage.name] = reason
            continue
        log.info("%s ...", prefix)
        start = time.perf_counter()
        try:
            stage.run(ctx)
        except GateFailed as e:  # the verdict, with its own advice
            e.args = (f"{stage.name}: {e.args[0] if e.args else e}", *e.args[1:])
            raise
        except ReleaseError as e:
            e.args = (f"{stage.name}: {e.args[0] if e.args else e}{_kept_note(ctx)}", *e.args[1:])
            raise
        except KeyboardInterrupt:
            raise
        except Exception as e:  # an unexpected failure still names its stage
            raise StageError(f"{stage.name}: {type(e).__name__}: {e}{_kept_note(ctx)}") from e
        finally:
            ctx.stage_seconds[stage.name] = round(time.perf_counter() - start, 3)
        log.info("%s: done in %.1fs", prefix, ctx.stage_seconds[stage.name])
    log.info("build finished in %.1fs", time.perf_counter() - total)
