"""Killing a publishing process at a chosen request, for the kill-and-resume tests.

The kill is triggered by the emulators themselves, at request number k and in one of three
ways: "drop" (the request never reaches the route), "in-flight" (the route runs, reading whatever
part of the body arrived) and "lost-reply" (the state changed, the reply never arrives). Killing
on a request count instead of a timer spreads the kills over the protocol instead of over
interpreter start-up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.emulators.base import Aborted

MODES = ("drop", "in-flight", "lost-reply")


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


def run_killed(
    killer: Killer,
    argv: Sequence[str],
    emulators: Sequence[Any],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    out: Any = subprocess.DEVNULL,
    timeout: float = 120,
) -> int:
    """Run `argv` with `killer` hooking every request `emulators` answer (it kills the process
    at its request); the exit status. The hooks are removed however it ends."""
    for emulator in emulators:
        emulator.hook = killer
    try:
        killer.proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdout=out, stderr=out, preexec_fn=sigint_default
        )
        killer.started.set()
        return killer.proc.wait(timeout=timeout)
    finally:
        for emulator in emulators:
            emulator.hook = None


class Campaign:
    """The draws and the tally of a kill-and-resume test: `kills` SIGKILLs, then `interrupts`
    SIGINTs (Ctrl-C: the process unwinds and exits 130), of `release WORKFLOW`. Half of the draws
    pick the request uniformly over all the `total` requests of a full publish, half over its
    `writes` state-changing ones only (most requests are the downloads that verify, and the
    writes are where a kill can leave duplicates). $RELEASE_KILL_SEED replaces `seed`."""

    def __init__(
        self,
        workflow: Sequence[str],
        *,
        kills: int,
        interrupts: int,
        total: int,
        writes: int,
        seed: int,
    ):
        self.workflow, self.kills, self.interrupts = tuple(workflow), kills, interrupts
        self.total, self.writes = total, writes
        self.seed = int(os.environ.get("RELEASE_KILL_SEED", str(seed)))
        self.rng = random.Random(self.seed)
        self.seen: list[tuple[str, str, str]] = []
        self.interrupted: list[tuple[str, str, str, int]] = []
        self.unkilled = 0

    def trials(self) -> Iterator[int]:
        """Trial numbers, until every kill and interrupt has landed (a draw past the end of a
        shorter publish finishes unkilled and does not count)."""
        for i in range(2 * (self.kills + self.interrupts)):
            if len(self.seen) == self.kills and len(self.interrupted) == self.interrupts:
                return
            yield i

    def killer(self) -> Killer:
        """The next draw: its request, its mode, and SIGKILL until the kills are done."""
        sig = signal.SIGKILL if len(self.seen) < self.kills else signal.SIGINT
        writes_only = self.rng.random() < 0.5
        at = self.rng.randint(1, self.writes if writes_only else self.total)
        return Killer(at, self.rng.choice(MODES), writes_only, sig)

    def run(
        self, i: int, killer: Killer, emulators: Sequence[Any], cwd: Path, env: dict[str, str]
    ) -> None:
        """Trial `i`: the workflow in `cwd`, killed by `killer`; checks and counts how it ended
        (its output in `cwd`/../trial-<i>.log)."""
        log = cwd.parent / f"trial-{i}.log"
        with open(log, "wb") as out:
            argv = [sys.executable, "-m", "pipeline", *self.workflow]
            rc = run_killed(killer, argv, emulators, env=env, cwd=cwd, out=out)
        if killer.where is None:
            assert rc == 0, (i, killer.at, log.read_text()[-3000:])
            self.unkilled += 1
        elif killer.sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, (i, killer.at, rc)
            self.seen.append((killer.point(), killer.mode, killer.where))
        else:
            assert rc != 0, (i, killer.at, log.read_text()[-3000:])
            self.interrupted.append((killer.point(), killer.mode, killer.where, rc))

    def report(self) -> None:
        """Every kill and interrupt landed; print where."""
        assert len(self.seen) == self.kills and len(self.interrupted) == self.interrupts
        on_writes = sum(1 for _, _, where in self.seen if not where.startswith(("GET", "HEAD")))
        print(
            f"\n{self.kills} kills (seed {self.seed}, {self.total} requests in a full publish, "
            f"{self.writes} of them state-changing, {self.unkilled} draw(s) past the end):"
        )
        for point, mode, where in self.seen:
            print(f"  {point:<11} {mode:<10} {where}")
        print(f"  {on_writes} of the kills on a state-changing request")
        for point, mode, where, rc in self.interrupted:
            print(f"  SIGINT at {point:<11} {mode:<10} {where} -> exit {rc}")
