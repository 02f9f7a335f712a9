"""Fail when docs/ARCHITECTURE.md's package map misses a module under pipeline/, or names one
that no longer exists. Run by `make lint` (and so by `make test` and CI).

    python scripts/check_architecture.py

The map is the "## Package map" section: its tables, and the "Inside `pipeline/X/`:" tables
that follow it. A module counts as named when a backticked path in a row names it: a full path
(`pipeline/cli.py`), a path relative to the row's first full path or to the table's package
(`measure.py`), or to `pipeline/` (`stages/__init__.py`), or a brace list (`pipeline/publishers/{local,s3}.py`).

Every `pipeline/**/*.py` must be named, or be inside a package the map names as a whole
(`pipeline/stages/`) — unless that package has its own "Inside" table, where each of its modules
must then have a row. An `__init__.py` counts as named when its package appears in the map.

Why a script under scripts/ and not a test or a mkdocs hook: it checks a document against the
tree, needs nothing but the standard library, and a maintainer runs it the way CI does; it is not
in docs/ because mkdocs would publish every file there, nor in pipeline/ because it is no part of
the installed package. tests/unit/test_architecture_map.py tests it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = Path("docs") / "ARCHITECTURE.md"
PACKAGE = "pipeline"

_NAME = re.compile(r"`([\w./{},-]+?(?:\.py|/))`")
_INSIDE = re.compile(r"^Inside `(?P<dir>[\w/]+/)`")


def _expand(token: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", token)
    if not m:
        return [token]
    return [
        name
        for part in m.group(1).split(",")
        for name in _expand(token[: m.start()] + part.strip() + token[m.end() :])
    ]


def _section(text: str) -> list[str]:
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "## Package map")
    except StopIteration:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1 : end]


def named(root: Path, text: str) -> tuple[set[str], set[str], set[str], list[str]]:
    """(modules named, packages named whole, packages with an Inside table, names not found),
    paths relative to `root` with / separators (packages end in /)."""
    modules: set[str] = set()
    packages: set[str] = set()
    itemized: set[str] = set()
    missing: list[str] = []
    table_dir: str | None = None
    for line in _section(text):
        inside = _INSIDE.match(line)
        if inside:
            table_dir = inside.group("dir")
            itemized.add(table_dir)
            continue
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        tokens = [t for tok in _NAME.findall(line) for t in _expand(tok)]
        full = [t for t in tokens if t.startswith(PACKAGE + "/")]
        base = table_dir or (full[0].rsplit("/", 1)[0] + "/" if full else PACKAGE + "/")
        for token in tokens:
            candidates = (
                [token]
                if token.startswith(PACKAGE + "/")
                else [base + token, f"{PACKAGE}/{token}", token]
            )
            found = next((c for c in candidates if (root / c).exists()), None)
            if found is None:
                if token.startswith(PACKAGE + "/") or not (root / token.split("/")[0]).exists():
                    missing.append(token)
                continue
            if not found.startswith(PACKAGE + "/"):
                continue  # a file elsewhere in the repository (benchmarks/, tests/)
            (packages if found.endswith("/") else modules).add(found)
    return modules, packages, itemized, missing


def check(root: Path = ROOT) -> list[str]:
    """Every problem with the package map of `root`/docs/ARCHITECTURE.md, one line each."""
    path = root / MAP
    if not path.is_file():
        return [f"{MAP}: not found"]
    modules, packages, itemized, missing = named(root, path.read_text())
    if not modules and not packages:
        return [f"{MAP}: no '## Package map' section naming modules under {PACKAGE}/"]
    problems = [
        f"{MAP}: the package map names `{name}`, which does not exist under {root.name}/: "
        "update or remove its row"
        for name in missing
    ]
    mentioned_dirs = {m.rsplit("/", 1)[0] + "/" for m in modules} | packages | itemized
    for py in sorted((root / PACKAGE).rglob("*.py")):
        rel = py.relative_to(root).as_posix()
        if rel in modules:
            continue
        parent = rel.rsplit("/", 1)[0] + "/"
        if py.name == "__init__.py" and parent in mentioned_dirs:
            continue
        covering = [p for p in packages if rel.startswith(p)]
        if covering and not any(rel.startswith(d) for d in itemized):
            continue
        where = next((d for d in sorted(itemized) if rel.startswith(d)), None)
        table = f'the "Inside `{where}`" table' if where else "the package map"
        problems.append(
            f"{MAP}: {table} misses `{rel}`: add a row saying what it holds (and, in the "
            "package map, what it may import)"
        )
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"{MAP}: the package map names every module under {PACKAGE}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
