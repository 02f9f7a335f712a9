"""pytest plugin for the Python examples of README.md and docs/ (`make docs-check`):

    python -m pytest -p tests.docs.markdown_plugin --markdown-docs -m markdown-docs README.md docs

pytest-markdown-docs collects every ```python block. This plugin skips a block marked
`<!-- not run: REASON -->` (tests/docs/blocks.py) with that reason, which `pytest -rs` prints, and
runs every other block in a fresh directory that looks like the repository after `make demo`: a
local release store `artifacts/releases` holding `erp-intent` 1.0.0 (small fake files under a valid
manifest: enough to fetch and verify, not to load a model), the client's cache under it, and no
token, signing key or real host reachable (tests/conftest.py's environment).

(The plugin's own marker, not pytest-markdown-docs' `notest` option: mkdocs-material's code
fences do not render a block whose info string holds a bare word after the language.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_release_dir  # also scrubs tokens and points HF/AWS nowhere
from tests.docs.blocks import marker_reason


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        definition = getattr(item, "test_definition", None)
        if definition is None:
            continue
        lines = Path(definition.source_path).read_text().splitlines()
        reason = marker_reason(lines, definition.start_line - 1)  # start_line: the first code line
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"not run: {reason}"))


@pytest.fixture(autouse=True)
def demo_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory like the repository after `make demo`, as the working directory."""
    from pipeline.publishers.local import LocalStore

    build = tmp_path / "artifacts" / "build" / "1.0.0"
    manifest = make_release_dir(build, "erp-intent", "1.0.0")
    LocalStore(tmp_path / "artifacts" / "releases").publish(build, manifest)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELEASE_CACHE_DIR", str(tmp_path / "artifacts" / "cache"))
    return tmp_path
