"""The CLI's exit codes and messages (no training here; see tests/integration for builds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.publishers.local import LocalStore

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_commands_and_env_vars() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for word in ("build", "publish", "verify", "info", "fetch", "RELEASE_CONFIG"):
        assert word in r.output
    r = run("publish", "--help")
    assert "--dry-run" in r.output and "RELEASE_PUBLISH_DRY_RUN" in r.output


def test_bad_config_exits_3_without_traceback(tmp_path: Path) -> None:
    p = tmp_path / "release.toml"
    p.write_text("schema_version = 1\n[model]\nname = 'm'\nversion = 'x'\n[trian]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(p), "build"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "trian: unknown key (did you mean train?)" in proc.stderr
    assert "model.version: expected a version" in proc.stderr
    assert "data.eval_csv: expected a path string, found nothing" in proc.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--debug",
            "--config",
            str(tmp_path / "none.toml"),
            "build",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3 and "Traceback" in proc.stderr


def test_usage_error_exits_2() -> None:
    assert run("build", "--no-such-flag").exit_code == 2
    assert run("fetch", "m", "--variant", "fp16").exit_code == 2


def test_verify_ok_and_tampered(release_dir) -> None:
    d, m = release_dir
    r = run("verify", str(d))
    assert r.exit_code == 0 and "ok: 3 files of m 1.0.0" in r.output
    (d / mf.ORIGINAL_FILE).write_bytes(b"tampered")
    r = run("verify", str(d))
    assert r.exit_code == 5 and "export.pkl" in r.output


def test_verify_without_manifest_exits_3(tmp_path: Path) -> None:
    r = run("verify", str(tmp_path))
    assert r.exit_code == 3 and "no manifest" in r.output


def test_info_summarises_the_manifest(release_dir) -> None:
    d, m = release_dir
    r = run("info", str(d))
    assert r.exit_code == 0
    assert (
        "m 1.0.0" in r.output
        and "export_quantized.pkl" in r.output
        and "golden queries: 1" in r.output
    )
    r = run("info", "--json", str(d))
    assert '"model": "m"' in r.output


def test_fetch_prints_verified_path(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    LocalStore(tmp_path / "store").publish(d, m)
    r = run(
        "fetch", "m", "--source", str(tmp_path / "store"), "--cache-dir", str(tmp_path / "cache")
    )
    assert r.exit_code == 0
    assert r.output.strip().endswith(str(Path("m") / "1.0.0" / mf.QUANTIZED_FILE))


def test_fetch_unsupported_source_is_usage_error(tmp_path: Path) -> None:
    r = run("fetch", "m", "--source", "ftp://bucket/x", "--cache-dir", str(tmp_path))
    assert r.exit_code == 2 and "not a source" in r.output


def test_fetch_nothing_found_exits_3(tmp_path: Path) -> None:
    r = run("fetch", "m", "--source", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 3 and "no source could provide" in r.output


TINY = (ROOT / "tests" / "fixtures" / "tiny.toml").read_text()


def bad_input_project(tmp_path: Path, train: bytes | None, eval_: bytes | None = None) -> Path:
    ok_eval = b"text,label\nwhere is the order release logic,a\nshow the page,b\n"
    (tmp_path / "train.csv").write_bytes(train if train is not None else b"")
    (tmp_path / "eval.csv").write_bytes(eval_ if eval_ is not None else ok_eval)
    text = TINY.replace('"bundled:train.csv"', '"train.csv"').replace(
        '"bundled:eval.csv"', '"eval.csv"'
    )
    (tmp_path / "release.toml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("train", "eval_", "message"),
    [
        (b"", None, "the file is empty"),
        (b"query,intent\nx,a\n", None, "missing columns 'text', 'label'"),
        (b"text,label\nx,a\ny,a\n", None, "only 1 label"),
        (b"text,label\nx,a\ny,b\n", b"text,label\nz,c\n", "label 'c' never occur"),
        (b"text,label\nx,a\ncaf\xe9,b\n", None, "not UTF-8"),
    ],
)
def test_bad_csv_exits_3_and_publishes_nothing(tmp_path: Path, train, eval_, message) -> None:
    work = bad_input_project(tmp_path, train, eval_)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "publish"], cwd=work, capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr
    assert message in proc.stderr and "checking inputs:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "artifacts" / "releases").exists()
    assert not (work / "artifacts" / "build" / "0.0.1" / "manifest.json").exists()


def test_missing_csv_is_a_config_error(tmp_path: Path) -> None:
    work = bad_input_project(tmp_path, b"text,label\nx,a\ny,b\n")
    (work / "eval.csv").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "build"], cwd=work, capture_output=True, text=True
    )
    assert proc.returncode == 3 and "data.eval_csv: expected an existing CSV file" in proc.stderr


def test_publish_dry_run_without_a_build_prints_the_plan_and_touches_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "release.toml").write_text(TINY)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "publish", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "local: planned · tiny-intent 0.0.1 · would build first" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.toml"]


def test_init_drop_overlap_lists_the_dropped_rows(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(
        "text,label\n" + "".join(f"train text {i},{'ab'[i % 2]}\n" for i in range(12))
    )
    (tmp_path / "test.csv").write_text("text,label\nTrain text 3!,b\nnew text,a\n")
    r = run(
        "--config", str(tmp_path / "r.toml"), "init", "--csv", str(tmp_path / "train.csv"),
        "--eval-csv", str(tmp_path / "test.csv"), "--drop-overlap",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "dropped 1 training row(s) whose text is also in" in r.output
    assert "dropped: 'train text 3'" in r.output
    assert (tmp_path / "train-no-overlap.csv").read_text().count("\n") == 12  # header + 11
