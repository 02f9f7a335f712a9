"""Fail unless a pushed tag equals "v" + [model] version of release.toml.

Usage: python .github/scripts/check_tag.py TAG [CONFIG]
Runs before anything is installed (standard library only). Prints a GitHub Actions error
annotation on a mismatch so the run page says what to fix.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def expected_tag(config: Path) -> str:
    with config.open("rb") as f:
        data = tomllib.load(f)
    version = data.get("model", {}).get("version")
    if not isinstance(version, str) or not version:
        raise SystemExit(f"::error file={config}::{config}: [model] version is missing; cannot check the tag")
    return f"v{version}"


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    tag = argv[0].removeprefix("refs/tags/")
    config = Path(argv[1] if len(argv) > 1 else "release.toml")
    want = expected_tag(config)
    if tag != want:
        print(
            f"::error file={config}::tag {tag!r} does not match {config}: [model] version says {want!r}. "
            f"Either push tag {want} or set version = \"{tag.removeprefix('v')}\" in {config}, commit, and tag that commit."
        )
        return 1
    print(f"tag {tag} matches {config} ({want})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
