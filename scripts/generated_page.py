"""What the docs generators share: write a generated page atomically, or check it is current.

`scripts/cli_reference.py` and `scripts/config_reference.py` render a page from the code and call
`write_or_check`; with `--check` (and in `tests/docs/test_docs.py`) a stale page fails with the
make target that rewrites it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_or_check(
    page: Path, render: Callable[[], str], source: str, target: str, argv: list[str] | None
) -> int:
    """`--check`: exit status 1 when `page` is not what `render` gives (naming `source`, what the
    page is generated from, and the make `target` that rewrites it); otherwise write it."""
    parser = argparse.ArgumentParser(description=f"write {page.relative_to(ROOT)} from {source}")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if page.read_text() != text:
            print(
                f"{page.relative_to(ROOT)} is out of date with {source}: "
                f"run `make {target}` and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, page)
    print(f"wrote {page.relative_to(ROOT)}")
    return 0
