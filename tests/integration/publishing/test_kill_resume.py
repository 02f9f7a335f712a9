"""Acceptance: `release publish --target github --target huggingface`, SIGKILLed at a random
request 20 times (each time on a fresh pair of repositories) and resumed each time, ends with
exactly one release per host holding exactly the built files, and no half release is ever
visible in between.

The kill is triggered by the emulators themselves, at request number k and in one of three
ways: "drop" (the request never reaches the route), "in-flight" (the route runs, reading whatever
part of the body arrived) and "lost-reply" (the state changed, the reply never arrives). Half of
the draws pick k uniformly over all the requests of a full publish, half over its state-changing
requests only (most requests are the downloads that verify, and the writes are where a kill can
leave duplicates). Killing on a request count instead of a timer spreads the kills over the
protocol instead of over interpreter start-up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline import config as cfg
from tests.emulators.base import Aborted
from tests.integration.publishing.conftest import (
    PUBLISH_TOML,
    WORKFLOW,
    assert_github_release,
    assert_hub_release,
    env_for,
    local_bytes,
    make_build,
    release,
    write_project,
)

pytestmark = pytest.mark.slow
KILLS = 20
INTERRUPTS = 3  # then SIGINT (Ctrl-C): the process unwinds (finally blocks run) and exits 130
MODES = ("drop", "in-flight", "lost-reply")
TAG = "v0.0.1"


def sigint_default() -> None:
    """Popen's preexec_fn: SIGINT at its default in the child, so Python turns it into
    KeyboardInterrupt. A test run started in the background by a shell without job control
    (`cmd &`, nohup) inherits SIGINT ignored, and the child would shrug the interrupt off."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Killer:
    """An emulator hook that SIGKILLs the publishing process at request number `at`."""

    def __init__(self, at: int, mode: str, writes_only: bool, sig: int = signal.SIGKILL):
        self.at, self.mode, self.writes_only, self.sig = at, mode, writes_only, sig
        self.count = 0
        self.where: str | None = None
        self.proc: subprocess.Popen | None = None
        self.started = threading.Event()
        self.lock = threading.Lock()

    def point(self) -> str:
        return f"{'write' if self.writes_only else 'request'} {self.at}"

    def __call__(self, method: str, path: str, stage: str) -> None:
        with self.lock:
            if self.where is not None:
                return
            if self.writes_only and method in ("GET", "HEAD"):
                return
            if stage == "before":
                self.count += 1
            want = "after" if self.mode == "lost-reply" else "before"
            if self.count != self.at or stage != want:
                return
            self.where = f"{method} {path}"
        self.started.wait(30)
        assert self.proc is not None
        os.kill(self.proc.pid, self.sig)
        if self.sig == signal.SIGKILL:
            self.proc.wait(30)  # dead before the server goes on
        if self.mode == "drop":
            raise Aborted


def project(root: Path, gh_repo: str, hf_repo: str) -> cfg.ReleaseConfig:
    text = PUBLISH_TOML.replace("alice/models", gh_repo).replace("acme/tiny-intent", hf_repo)
    config = write_project(root, text)
    # other bytes in every trial: the Hub emulator's LFS store is content-addressed across
    # repositories, and identical content would skip the very uploads a kill should hit
    make_build(config, payload=gh_repo.encode(), big=256 << 10)
    return config


def nothing_half_visible(gh, hub, gh_repo: str, hf_repo: str, files: dict[str, bytes]) -> None:
    """A published GitHub release or an HF tag exists only complete."""
    if [r for r in gh.releases(gh_repo) if r["tag_name"] == TAG and not r["draft"]]:
        assert_github_release(gh, gh_repo, TAG, files)
    if hf_repo in hub.repos and hub.tags(hf_repo):
        assert_hub_release(hub, hf_repo, TAG, files)


def test_killed_20_times_at_random_points_and_resumed_converges(gh, hub, tmp_path) -> None:
    seed = int(os.environ.get("RELEASE_KILL_SEED", "20261127"))
    rng = random.Random(seed)

    # A clean publish, to know how many requests a full one makes (the first run also fetches
    # huggingface_hub's agent registry once per HF_HOME, so a later run may make one fewer: a
    # draw past the end finishes unkilled, is checked like the others, and does not count).
    gh.add_repo("alice/measure")
    config = project(tmp_path / "measure", "alice/measure", "acme/measure")
    gh.clear_log()
    hub.clear_log()
    done = release(config.path.parent, env_for(gh, hub), *WORKFLOW)
    assert done.returncode == 0, done.stderr
    total = len(gh.log) + len(hub.log)
    writes = len(gh.writes()) + len(hub.writes())

    seen: list[tuple[str, str, str]] = []
    interrupted: list[tuple[str, str, str, int]] = []
    unkilled = 0
    for i in range(2 * (KILLS + INTERRUPTS)):
        if len(seen) == KILLS and len(interrupted) == INTERRUPTS:
            break
        sig = signal.SIGKILL if len(seen) < KILLS else signal.SIGINT
        gh_repo, hf_repo = f"alice/kill{i}", f"acme/kill{i}"
        gh.add_repo(gh_repo)
        config = project(tmp_path / f"trial{i}", gh_repo, hf_repo)
        files = local_bytes(config)
        env = env_for(gh, hub)
        writes_only = rng.random() < 0.5
        killer = Killer(
            rng.randint(1, writes if writes_only else total), rng.choice(MODES), writes_only, sig
        )
        gh.hook = hub.hook = killer
        log = tmp_path / f"trial{i}.log"
        try:
            with open(log, "wb") as out:
                killer.proc = subprocess.Popen(
                    [sys.executable, "-m", "pipeline", *WORKFLOW],
                    cwd=config.path.parent,
                    env=env,
                    stdout=out,
                    stderr=out,
                    preexec_fn=sigint_default,
                )
                killer.started.set()
                rc = killer.proc.wait(timeout=120)
        finally:
            gh.hook = hub.hook = None
        if killer.where is None:
            assert rc == 0, (i, killer.at, log.read_text()[-3000:])
            unkilled += 1
        elif sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, (i, killer.at, rc)
            seen.append((killer.point(), killer.mode, killer.where))
        else:
            assert rc != 0, (i, killer.at, log.read_text()[-3000:])
            interrupted.append((killer.point(), killer.mode, killer.where, rc))
        nothing_half_visible(gh, hub, gh_repo, hf_repo, files)

        resumed = release(config.path.parent, env, *WORKFLOW)
        assert resumed.returncode == 0, (i, killer.at, killer.mode, killer.where, resumed.stderr)
        assert_github_release(gh, gh_repo, TAG, files)
        assert_hub_release(hub, hf_repo, TAG, files)

    assert len(seen) == KILLS and len(interrupted) == INTERRUPTS
    on_writes = sum(1 for _, _, where in seen if not where.startswith(("GET", "HEAD")))
    print(
        f"\n{KILLS} kills (seed {seed}, {total} requests in a full publish, {writes} of them "
        "state-changing, "
        f"{unkilled} draw(s) past the end):"
    )
    for point, mode, where in seen:
        print(f"  {point:<11} {mode:<10} {where}")
    print(f"  {on_writes} of the kills on a state-changing request")
    for point, mode, where, rc in interrupted:
        print(f"  SIGINT at {point:<11} {mode:<10} {where} -> exit {rc}")
