"""The fenced code blocks of README.md and docs/*.md, and what the docs tests do with each.

A block preceded by

    <!-- not run: REASON -->

on the nearest non-blank line above its fence (a line of its own, or the end of the line before
a fence inside a list item, where a line of its own would end the list) is not executed, and the reason says why (it trains for minutes, needs a token, a network host or
a published release). Every other Python block runs (`make docs-check`, pytest-markdown-docs). In
every shell block, each `release ...` command line is parsed against the real command line
(`check_release_command`), marked or not; a shell block holding any other command (make, pip,
git, gh, export, model_signing) must carry the marker, because nothing runs it.
"""

from __future__ import annotations

import enum
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
from markdown_it import MarkdownIt

from tests.conftest import ROOT

SHELL = ("sh", "bash", "shell", "console")
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>.+?) -->")
PLACEHOLDER = "PLACEHOLDER"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when the block is marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The command lines of a shell block: continuations joined, comment lines and console output
        left out."""
        lines = self.code.splitlines()
        if self.lang == "console":
            lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
        joined: list[str] = []
        carry = ""
        for ln in lines:
            if ln.rstrip().endswith("\\"):
                carry += ln.rstrip()[:-1] + " "
                continue
            joined.append(carry + ln)
            carry = ""
        return [c.strip() for c in joined if c.strip() and not c.strip().startswith("#")]


def marker_reason(lines: list[str], fence_index: int) -> str | None:
    """The reason of a `<!-- not run: ... -->` on the nearest non-blank line above a fence."""
    i = fence_index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    m = NOT_RUN.search(lines[i]) if i >= 0 else None
    return m.group("reason") if m else None


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for tok in MarkdownIt("commonmark").parse(text):
        if tok.type != "fence" or not tok.map:
            continue
        lang = (tok.info.split() or [""])[0]
        out.append(Block(path, tok.map[0] + 1, lang, tok.content, marker_reason(lines, tok.map[0])))
    return out


def release_args(command: str) -> list[str] | None:
    """The arguments of a `release ...` command line (None for any other command).

    `<placeholders>` become one word, `[--optional ...]` brackets are dropped, comments too.
    """
    command = re.sub(r"<[^<>]+>", PLACEHOLDER, command)
    words = shlex.split(command, comments=True)
    if not words or Path(words[0]).name != "release":
        return None
    return [w.strip("[]") for w in words[1:] if w.strip("[]")]


def check_release_command(args: list[str]) -> None:
    """Parse `release ARGS` as click would, without running it.

    Checks: every option exists on its command, takes the number of values given, and each value
    converts to the option's type (numbers, ranges, choices; paths are not looked up); each
    command and subcommand exists; no argument is missing or left over.

    Raises:
        click.UsageError (or its subclasses): what click itself would say.
    """
    from pipeline.cli import cli

    cmd: click.Command = cli
    parent: click.Context | None = None
    name = "release"
    while True:
        ctx = click.Context(cmd, info_name=name, parent=parent, **cmd.context_settings)
        values, rest, _order = cmd.make_parser(ctx).parse_args(args=list(args))
        for param in cmd.get_params(ctx):
            given = values.get(param.name)
            if given is None or isinstance(given, enum.Enum):  # click >= 8.3: Sentinel.UNSET
                if isinstance(param, click.Argument) and param.required:
                    raise click.MissingParameter(ctx=ctx, param=param)
                continue
            for value in given if isinstance(given, (list, tuple)) else [given]:
                if isinstance(param.type, click.Path) or value in (PLACEHOLDER, True, False):
                    continue
                param.type.convert(value, param, ctx)
        if cmd.name == "publish":  # a plain string option: the command checks the names
            from pipeline.publish import TARGETS

            for target in values.get("targets") or ():
                if target not in TARGETS:
                    raise click.BadParameter(f"unknown target {target!r}", ctx)
        if not isinstance(cmd, click.Group):
            if rest:
                raise click.UsageError(f"unexpected extra arguments: {rest}", ctx)
            return
        if not rest:
            raise click.UsageError("no command given", ctx)
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise click.UsageError(f"no such command {rest[0]!r}", ctx)
        cmd, parent, name, args = sub, ctx, rest[0], rest[1:]
