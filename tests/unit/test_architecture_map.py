"""scripts/check_architecture.py: docs/ARCHITECTURE.md's package map names every module under
pipeline/, and nothing that is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.check_architecture import check
from tests.conftest import ROOT

MAP = """# Architecture

## The flow

`pipeline/not_a_map_entry.py` outside the map section is not read.

## Package map

| module | holds | may import |
|---|---|---|
| `pipeline/cli.py`, `helpers.py` | commands | everything |
| `pipeline/stages/` | one module per stage | torch |
| `pipeline/publishers/{local,s3}.py` | targets; `settings.py` the tokens | boto3 |
| `pipeline/client/` | what servers import; *today* `client/predict.py` imports the build side | httpx |
| `pipeline/typo_aliases.py` | the keyboard neighbours `benchmarks/typos.py` also uses | stdlib |

Inside `pipeline/client/`:

| module | holds |
|---|---|
| `client.py`, `predict.py` | the Client; predictions |

## Contracts
"""

TREE = [
    "pipeline/__init__.py",
    "pipeline/cli.py",
    "pipeline/helpers.py",
    "pipeline/typo_aliases.py",
    "pipeline/stages/__init__.py",
    "pipeline/stages/train.py",
    "pipeline/stages/deep/inner.py",
    "pipeline/publishers/__init__.py",
    "pipeline/publishers/local.py",
    "pipeline/publishers/s3.py",
    "pipeline/publishers/settings.py",
    "pipeline/client/__init__.py",
    "pipeline/client/client.py",
    "pipeline/client/predict.py",
    "benchmarks/typos.py",
]


def make_repo(root: Path, text: str = MAP, extra: tuple[str, ...] = ()) -> Path:
    for rel in (*TREE, *extra):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "ARCHITECTURE.md").write_text(text)
    return root


def test_the_repository_map_names_every_module() -> None:
    assert check(ROOT) == []
    proc = subprocess.run(
        [sys.executable, "scripts/check_architecture.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_full_relative_brace_and_package_names_count(tmp_path: Path) -> None:
    assert check(make_repo(tmp_path)) == []


def test_a_module_left_out_of_the_map_fails_naming_it(tmp_path: Path) -> None:
    problems = check(make_repo(tmp_path, extra=("pipeline/checksums.py",)))
    assert len(problems) == 1
    assert "the package map misses `pipeline/checksums.py`" in problems[0]


def test_a_package_with_its_own_table_needs_a_row_per_module(tmp_path: Path) -> None:
    """`pipeline/client/` named whole does not cover a client module its table leaves out."""
    problems = check(make_repo(tmp_path, extra=("pipeline/client/network.py",)))
    assert len(problems) == 1
    assert (
        'the "Inside `pipeline/client/`" table misses `pipeline/client/network.py`' in (problems[0])
    )


def test_a_package_named_whole_covers_its_modules_at_any_depth(tmp_path: Path) -> None:
    assert check(make_repo(tmp_path, extra=("pipeline/stages/deep/more.py",))) == []


def test_a_name_that_is_gone_fails(tmp_path: Path) -> None:
    text = MAP.replace("`pipeline/cli.py`, `helpers.py`", "`pipeline/cli.py`, `retired.py`")
    problems = check(make_repo(tmp_path, text))
    assert any("names `retired.py`, which does not exist" in p for p in problems), problems
    assert any("misses `pipeline/helpers.py`" in p for p in problems), problems


def test_no_map_section_fails(tmp_path: Path) -> None:
    problems = check(make_repo(tmp_path, "# Architecture\n\nNo map here.\n"))
    assert problems and "no '## Package map' section" in problems[0]
