"""The release workflow's own steps, run locally in order against the emulators.

Each `run:` script of .github/workflows/release.yml runs in bash exactly as written, with the
environment its `env:` gives it (expressions resolved as GitHub would for a tag push), `release`
on PATH, and GITHUB_API_URL / HF_ENDPOINT pointing at the emulators. The `uses:` steps are played
by their local equivalent: checkout = a copy of the project, upload/download-artifact = a copy
through an artifact directory into the publish job's own fresh checkout. The install steps are
skipped (this interpreter already has the pinned packages; the network is not there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import signing
from pipeline.checksums import blake3_file
from pipeline.report import DETAIL_FILE
from tests.conftest import FIXTURES, ROOT
from tests.integration.publishing.conftest import (
    GH_REPO,
    GH_TOKEN,
    HF_REPO,
    HF_TOKEN,
    PUBLISH_TOML,
    assert_github_release,
    assert_hub_release,
)

pytestmark = pytest.mark.slow
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
BUILD_STEP = "ran: Build (train or fetch the pinned learner, quantize, validate against the gates)"


class StepFailed(Exception):
    pass


def resolve(text: str, ctx: dict[str, str]) -> str:
    """Replace each ${{ expr }} by its value for this run; an unknown expression is a test error."""

    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr not in ctx:
            raise AssertionError(
                f"release.yml uses an expression this runner does not know: {expr}"
            )
        return ctx[expr]

    return EXPR.sub(one, text)


def condition(cond: str | None, ctx: dict[str, str]) -> bool:
    if cond is None:
        return True
    cond = EXPR.sub(lambda m: m.group(1), cond).strip()
    known = {"always()": True, "github.ref_type == 'tag'": ctx["github.ref_type"] == "tag"}
    if cond not in known:
        raise AssertionError(f"release.yml uses a condition this runner does not know: {cond}")
    return known[cond]


def run_job(
    job: dict[str, Any],
    checkout: Path,
    artifacts: Path,
    ctx: dict[str, str],
    env: dict[str, str],
    log: list[str],
) -> None:
    failed = False
    for step in job["steps"]:
        name = step.get("name") or step.get("uses", "")
        cond = step.get("if")
        if failed and cond != "always()":
            log.append(f"skipped (an earlier step failed): {name}")
            continue
        if not condition(cond, ctx):
            log.append(f"skipped (if: {cond}): {name}")
            continue
        uses = step.get("uses", "")
        if uses.startswith(("actions/checkout@", "actions/setup-python@")):
            log.append(f"local equivalent: {name}")
            continue
        if uses.startswith("actions/upload-artifact@"):
            src = checkout / step["with"]["path"]
            dst = artifacts / resolve(step["with"]["name"], ctx)
            if src.exists():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            log.append(f"uploaded artifact: {dst.name}")
            continue
        if uses.startswith("actions/download-artifact@"):
            src = artifacts / resolve(step["with"]["name"], ctx)
            shutil.copytree(src, checkout / step["with"]["path"], dirs_exist_ok=True)
            log.append(f"downloaded artifact: {src.name}")
            continue
        assert not uses, f"release.yml uses an action this runner cannot play: {uses}"
        script = step["run"]
        if "pip install" in script:
            log.append(f"skipped (already installed here): {name}")
            continue
        step_env = {**env, **{k: resolve(str(v), ctx) for k, v in (step.get("env") or {}).items()}}
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=checkout,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log.append(f"ran: {name} -> exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            failed = True
    if failed:
        raise StepFailed("\n".join(log))


def play(
    project: Path, tmp: Path, tag: str, secrets: dict[str, str], gh, hub
) -> tuple[Path, list[str]]:
    """Run the build job, then the publish job in a fresh checkout; return the summary file and log."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    artifacts = tmp / "artifact-store"
    artifacts.mkdir()
    summary = tmp / "step_summary.md"
    summary.touch()
    ctx = {
        "github.ref_name": tag,
        "github.ref_type": "tag",
        "secrets.GITHUB_TOKEN": secrets["GITHUB_TOKEN"],
        "secrets.HF_TOKEN": secrets["HF_TOKEN"],
        "secrets.RELEASE_SIGNING_KEY": secrets["RELEASE_SIGNING_KEY"],
        # keyless Sigstore (the workflow's default) cannot reach Fulcio and Rekor from here: this
        # run is a repository that set the variable RELEASE_SIGNING=key and the key secret
        "vars.RELEASE_SIGNING || 'sigstore'": "key" if secrets["RELEASE_SIGNING_KEY"] else "",
        "vars.RELEASE_SIGNING_CERTIFICATE": "",
        # a learner's location that needs none of these (the repository does not set them)
        "secrets.LEARNER_HF_TOKEN": "",
        "secrets.LEARNER_AWS_ACCESS_KEY_ID": "",
        "secrets.LEARNER_AWS_SECRET_ACCESS_KEY": "",
        "vars.LEARNER_AWS_REGION": "",
        "vars.LEARNER_S3_ENDPOINT": "",
        "github.event_name == 'workflow_dispatch' && inputs.dry_run": "false",  # a tag push
    }
    env = {
        **{
            k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN", "HF_TOKEN")
        },
        **{k: resolve(str(v), ctx) for k, v in (wf.get("env") or {}).items()},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_API_URL": gh.api_url,
        "HF_ENDPOINT": hub.url,
        "RELEASE_CACHE_DIR": str(tmp / "cache"),
    }
    log: list[str] = []
    jobs = wf["jobs"]
    order = ["build", "publish"]
    assert list(jobs) == order and jobs["publish"]["needs"] == "build"
    for name in order:
        checkout = tmp / f"runner-{name}"
        shutil.copytree(project, checkout)
        log.append(f"== job {name}")
        run_job(jobs[name], checkout, artifacts, ctx, env, log)
    return summary, log


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The repository as a checkout sees it, with the tiny model config as release.toml."""
    p = tmp_path / "repo"
    shutil.copytree(ROOT / ".github", p / ".github")
    (p / "release.toml").write_text((FIXTURES / "tiny.toml").read_text() + PUBLISH_TOML)
    return p


def test_release_workflow_steps_publish_end_to_end(project, tmp_path, gh, hub, tiny) -> None:
    # Trained elsewhere (here: the session's tiny build), uploaded as the asset of a "learner"
    # release of the same repository, pinned in release.toml: the tag's build job fetches it
    # with its own token (docs/train-elsewhere.md), then quantizes, validates and publishes.
    learner = tiny[0] / "artifacts" / "build" / "0.0.1" / "export.pkl"
    gh.add_release(GH_REPO, "learner-1", assets={"export.pkl": learner.read_bytes()})
    location = f"github:{GH_REPO}@learner-1/export.pkl"
    pin = (
        f'export_pkl_blake3 = "{blake3_file(learner)}"\nexport_pkl_size = {learner.stat().st_size}'
    )
    toml = (project / "release.toml").read_text().replace('train_csv = "bundled:train.csv"\n', "")
    toml = toml.replace("[train]\n", f'[train]\nexport_pkl = "{location}"\n{pin}\n')
    (project / "release.toml").write_text(toml)
    pair = signing.generate()
    secrets = {
        "GITHUB_TOKEN": GH_TOKEN,
        "HF_TOKEN": HF_TOKEN,
        "RELEASE_SIGNING_KEY": pair.private_pem,
    }
    summary, log = play(project, tmp_path, "v0.0.1", secrets, gh, hub)
    text = "\n".join(log)
    assert f"downloading {location} (" in text, text
    assert f"{BUILD_STEP} -> exit 0" in text, text
    assert "ran: Publish to GitHub Releases and the Hugging Face Hub -> exit 0" in text, text
    assert "**PASSED**" in summary.read_text()
    build = tmp_path / "runner-publish" / "artifacts" / "build" / "0.0.1"
    files = {
        p.name: p.read_bytes()
        for p in build.iterdir()
        if p.is_file() and not p.name.startswith(".")
    }
    assert {"manifest.json", "model.sig", "export_quantized.pkl", "model_int8.onnx"} <= set(files)
    for name in ("train.key", DETAIL_FILE):  # the build's own, never published
        files.pop(name, None)
    assert_github_release(gh, GH_REPO, "v0.0.1", files)
    assert_hub_release(hub, HF_REPO, "v0.0.1", files)
    for secret in (GH_TOKEN, HF_TOKEN, pair.private_pem.splitlines()[1]):
        assert secret not in text


def test_a_mismatching_tag_stops_before_the_build(project, tmp_path, gh, hub) -> None:
    secrets = {"GITHUB_TOKEN": GH_TOKEN, "HF_TOKEN": HF_TOKEN, "RELEASE_SIGNING_KEY": ""}
    with pytest.raises(StepFailed) as e:
        play(project, tmp_path, "v9.9.9", secrets, gh, hub)
    text = str(e.value)
    assert "ran: Check that the tag matches release.toml -> exit 1" in text
    assert "tag 'v9.9.9' does not match" in text
    assert f"skipped (an earlier step failed): {BUILD_STEP.removeprefix('ran: ')}" in text
    assert "ran: Write the report to the job summary -> exit 0" in text  # if: always()
    assert gh.releases(GH_REPO) == [] and HF_REPO not in hub.repos
