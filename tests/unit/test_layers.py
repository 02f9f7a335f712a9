"""The package map's layers, enforced by import-linter's contracts in pyproject.toml: the real
tree keeps them, a copy with one import across each layer breaks each; and no module reaches
into a client library's private parts (they change without notice)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = str(Path(sys.executable).with_name("lint-imports"))
# model-signing is pinned (==1.1.1) and its Sigstore verifier has no public module
PRIVATE_ALLOWED = {"model_signing"}


def lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [LINT, "--no-cache", "--config", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_layer_contract() -> None:
    r = lint(ROOT, ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout


def test_an_import_across_a_layer_breaks_its_contract(tmp_path: Path) -> None:
    copy = tmp_path / "pipeline"
    shutil.copytree(ROOT / "pipeline", copy, ignore=shutil.ignore_patterns("*.csv", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (copy / "client" / "layer_breach.py").write_text("from pipeline.publishers import base\n")
    (copy / "versions_breach.py").write_text("import pipeline.client.cache\n")
    # a core module that imports the breach: the core contract sees the chain
    with (copy / "errors.py").open("a") as f:
        f.write("\nfrom pipeline import versions_breach  # noqa: E402,F401\n")
    (copy / "stages" / "layer_breach.py").write_text("import pipeline.publish\n")
    r = lint(tmp_path, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 kept, 3 broken" in r.stdout
    out = " ".join(r.stdout.split())
    assert "pipeline.client.layer_breach -> pipeline.publishers.base" in out
    assert "pipeline.versions_breach -> pipeline.client.cache" in out
    assert "pipeline.stages.layer_breach -> pipeline.publish" in out


def test_no_module_imports_a_client_librarys_private_parts() -> None:
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if (
                    parts[0] in ("pipeline", *PRIVATE_ALLOWED)
                    or parts[0] in sys.stdlib_module_names
                ):
                    continue
                if any(p.startswith("_") for p in parts[1:]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []
