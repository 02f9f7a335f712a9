"""The README stays a front door and the docs stay true to the code: the CLI reference is what
`--help` prints, every `release ...` line in a shell example parses, every example that is not run
says why, the README's links resolve and its numbers are the demo page's."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from markdown.extensions.toc import slugify

from tests.conftest import ROOT
from tests.docs.blocks import (
    SHELL,
    blocks,
    check_release_command,
    doc_files,
    release_args,
)

README = ROOT / "README.md"


def _release_lines() -> list[tuple[str, str]]:
    return [
        (b.where, c)
        for f in doc_files()
        for b in blocks(f)
        if b.lang in SHELL
        for c in b.commands()
        if release_args(c) is not None
    ]


def test_the_cli_reference_is_what_help_prints() -> None:
    from scripts.cli_reference import PAGE, render

    assert PAGE.read_text() == render(), (
        "docs/cli.md is out of date with the commands' --help: run `make docs-cli` and commit it"
    )


def test_the_config_reference_is_the_declaration() -> None:
    from scripts.config_reference import PAGE, render

    assert PAGE.read_text() == render(), (
        "docs/config.md is out of date with pipeline/config/: run `make docs-config` and commit it"
    )


def test_the_readme_is_a_front_door_with_the_quick_start_early() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    quick = lines.index("## Quick start") + 1
    assert quick <= 60, f"the quick start is on line {quick}; keep it within the first 60"
    start = "\n".join(lines[quick:])
    setup = next(b for b in blocks(README) if b.line > quick and b.lang in SHELL)
    assert [c.split()[:2] for c in setup.commands()] == [["make", "demo"], ["make", "test"]]
    assert start.index("make demo") < start.index("## ", 1)


def test_the_readme_numbers_are_the_demo_pages() -> None:
    def table(text: str) -> list[str]:
        rows = text.split("<!-- demo-numbers", 1)[1].splitlines()[1:]
        return [ln for ln in rows[: rows.index("")] if not ln.startswith("|---")]

    readme = table(README.read_text())
    page = table((ROOT / "docs" / "demo-model.md").read_text())
    assert len(readme) == 6 and readme == page[: len(readme)], (readme, page)


def _anchors(page: Path) -> set[str]:
    return {slugify(m, "-") for m in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_the_readme_links_resolve() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 20
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README.md links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"README.md links to {link}: no such heading"


@pytest.mark.parametrize(("where", "command"), _release_lines())
def test_each_release_command_in_the_docs_parses(where: str, command: str) -> None:
    args = release_args(command)
    assert args is not None
    try:
        check_release_command(args)
    except click.ClickException as e:
        pytest.fail(f"{where}: `{command}` does not parse: {e.format_message()}")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("release fetch m --no-such-option", "No such option"),
        ("release fetch m --variant fp16", "fp16"),
        ("release fetch m --retries -1", "-1"),
        ("release fetch", "MODEL"),
        ("release info a b", "extra arguments"),
        ("release cache shrink", "no such command"),
        ("release publish --target gitlab", "gitlab"),
        ("release publish --dry-run --target", "requires an argument"),
    ],
)
def test_the_command_check_refuses_what_click_would(command: str, says: str) -> None:
    args = release_args(command)
    assert args is not None
    with pytest.raises(click.ClickException) as e:
        check_release_command(args)
    assert says in e.value.format_message()


def test_examples_that_are_not_run_say_why() -> None:
    found = 0
    for f in doc_files():
        for b in blocks(f):
            if b.lang in SHELL:
                others = [c for c in b.commands() if release_args(c) is None]
                assert not others or b.not_run, (
                    f"{b.where}: `{others[0]}` is not checked by any test: add "
                    "`<!-- not run: REASON -->` above the block, or make it a release command"
                )
            if b.not_run:
                found += 1
                assert len(b.not_run.split()) >= 3, f"{b.where}: say why it is not run"
    assert found >= 5


def test_the_readme_first_command_runs_and_names_the_model_the_others_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release init --csv tickets.csv` for real, on a small CSV: the release.toml it writes
    names the model `tickets`, which `release fetch tickets` then asks for."""
    from pipeline.cli import cli

    setup = next(b for b in blocks(README) if "release init" in b.code)
    commands = [release_args(c) for c in setup.commands()]
    assert [c[0] for c in commands if c] == ["init", "build", "publish", "publish", "fetch"]
    rows = ["question,intent"] + [
        f"how do I {verb} the {thing},{label}"
        for label, verb in [("howto", "open"), ("howto", "close"), ("billing", "pay")]
        for thing in ("invoice", "order", "ticket", "report", "account", "user")
    ]
    monkeypatch.chdir(tmp_path)
    Path("tickets.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, commands[0], prog_name="release")
    assert result.exit_code == 0, result.output
    config = Path("release.toml").read_text()
    assert 'name = "tickets"' in config
    assert Path("tickets-train.csv").is_file() and Path("tickets-eval.csv").is_file()
    assert commands[-1][:2] == ["fetch", "tickets"]
