"""The GitHub Actions workflows: linted, audited, least-privilege, pinned, and the tag check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_TAG = ROOT / ".github" / "scripts" / "check_tag.py"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` provides it")
    return path


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "release.yml"]


def test_actionlint_reports_nothing() -> None:
    proc = subprocess.run(
        [tool("actionlint"), *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_zizmor_offline_reports_nothing() -> None:
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", str(ROOT / ".github" / "workflows")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pinned_actions_timeouts_and_no_interpolation_in_scripts(path: Path) -> None:
    wf = load(path)
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), (
            f"{path.name}: job {name} has no timeout"
        )
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
                if step["uses"].startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False
            if "run" in step:
                assert "${{" not in step["run"], (
                    f"{path.name}: {step.get('name')}: expression inside run:"
                )


def test_release_permissions_are_least_privilege() -> None:
    wf = load(ROOT / ".github" / "workflows" / "release.yml")
    assert wf["permissions"] == {}
    assert wf["jobs"]["build"]["permissions"] == {"contents": "read"}
    # keyless signing: an OIDC token only where the release is signed and published
    assert wf["jobs"]["publish"]["permissions"] == {"contents": "write", "id-token": "write"}
    assert all(
        "id-token" not in (j.get("permissions") or {})
        for n, j in wf["jobs"].items()
        if n != "publish"
    )
    assert wf["concurrency"]["group"] == "release-${{ github.ref_name }}"
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert wf["on"]["push"]["tags"] == ["v*"]
    assert "dry_run" in wf["on"]["workflow_dispatch"]["inputs"]
    publish_env = wf["jobs"]["publish"]["steps"][-1]["env"]
    assert set(publish_env) >= {"GITHUB_TOKEN", "HF_TOKEN", "RELEASE_SIGNING"}
    # the normal path signs keyless and needs no signing secret; a key is the opt-in
    assert publish_env["RELEASE_SIGNING"] == "${{ vars.RELEASE_SIGNING || 'sigstore' }}"
    assert (
        "release publish --target github --target huggingface"
        in (wf["jobs"]["publish"]["steps"][-1]["run"])
    )
    upload = [
        s
        for s in wf["jobs"]["build"]["steps"]
        if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert upload and upload[0]["if"] == "always()"


def test_ci_runs_the_readme_test_command() -> None:
    wf = load(ROOT / ".github" / "workflows" / "ci.yml")
    runs = [s["run"] for s in wf["jobs"]["test"]["steps"] if "run" in s]
    assert "make test PYTHON=python" in runs
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make test" in (ROOT / ".ci" / "run").read_text()
    assert wf["permissions"] == {"contents": "read"}


def run_check(tag: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK_TAG), tag, str(config)], capture_output=True, text=True
    )


def test_tag_check_matches_release_toml() -> None:
    import tomllib

    version = tomllib.loads((ROOT / "release.toml").read_text())["model"]["version"]
    ok = run_check(f"v{version}", ROOT / "release.toml")
    assert ok.returncode == 0 and "matches" in ok.stdout
    ok = run_check(f"refs/tags/v{version}", ROOT / "release.toml")
    assert ok.returncode == 0


def test_tag_check_rejects_a_mismatch_with_an_annotation(tmp_path: Path) -> None:
    cfg = tmp_path / "release.toml"
    cfg.write_text('schema_version = 1\n[model]\nname = "m"\nversion = "1.2.0"\n')
    bad = run_check("v1.2.1", cfg)
    assert bad.returncode == 1
    assert bad.stdout.startswith("::error file=")
    assert "tag 'v1.2.1' does not match" in bad.stdout and "'v1.2.0'" in bad.stdout
    assert run_check("v1.2.0", cfg).returncode == 0
    cfg.write_text("schema_version = 1\n[model]\n")
    assert run_check("v1.2.0", cfg).returncode != 0
