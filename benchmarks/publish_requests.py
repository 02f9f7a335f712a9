"""Requests per phase of `release publish --target github --target huggingface`, counted by the emulators.

    python -m benchmarks.publish_requests

A signed fake release of 7 files (tests/integration/publishing: 1 MB export.pkl) is published by
the exact release-workflow command, in a fresh process each time, against tests/emulators on
127.0.0.1: a dry run, the first publish, an identical re-publish, and a dry run afterwards.
Prints each run's requests by phase and how many could change state.
"""

from __future__ import annotations

import collections
import re
import tempfile
import time
from pathlib import Path

import tests.conftest  # noqa: F401  (sets the HF environment before anything imports huggingface_hub)
from pipeline import signing
from tests.emulators.base import Emulator
from tests.integration.publishing.conftest import (
    GH_REPO,
    GH_TOKEN,
    HF_TOKEN,
    WORKFLOW,
    GitHubEmulator,
    HubEmulator,
    env_for,
    make_build,
    release,
    write_project,
)

PHASES = {
    "github": [
        (r"^/api/uploads/", "upload asset"),
        (r"^/api/storage/", "download asset (storage)"),
        (r"/releases/assets/\d+$", "download asset (API, 302)"),
        (r"/releases/tags/", "find release by tag"),
        (r"/releases$", "list or create releases"),
        (r"/releases/\d+/assets$", "list assets"),
        (r"/releases/\d+$", "edit release (publish)"),
        (r"^/api/v3/repos/[^/]+/[^/]+$", "read repository"),
    ],
    "huggingface": [
        (r"whoami", "whoami"),
        (r"agent-harnesses", "agent registry (huggingface_hub)"),
        (r"/preupload/", "preupload"),
        (r"lfs/objects/batch", "LFS batch"),
        (r"^/_lfs/[0-9a-f]+$", "LFS upload"),
        (r"/verify$", "LFS verify"),
        (r"/commit/", "commit"),
        (r"/tag/", "tag"),
        (r"/refs$", "refs"),
        (r"/tree/", "list files"),
        (r"/resolve/", "download (resolve)"),
        (r"validate-yaml", "validate model card"),
        (r"/repos/create", "create repo"),
        (r"^/api/models/[^/]+/[^/]+(/revision/.*)?$", "repo info"),
    ],
}


def report(title: str, emulators: dict[str, Emulator], seconds: float) -> None:
    print(f"\n== {title} ({seconds:.2f} s wall, interpreter start included)")
    for host, emu in emulators.items():
        phases = collections.Counter(
            (e.method, next((n for rx, n in PHASES[host] if re.search(rx, e.path)), e.path))
            for e in emu.log
        )
        writes = sum(n for (m, _), n in phases.items() if m not in ("GET", "HEAD"))
        print(f"  {host}: {len(emu.log)} requests, {writes} state-changing")
        for (method, name), n in sorted(phases.items(), key=lambda x: x[0][1]):
            print(f"    {n:>3} x {method:<6} {name}")


def main() -> None:
    dry = ("publish", "--dry-run", "--target", "github", "--target", "huggingface")
    with tempfile.TemporaryDirectory() as tmp:
        config = write_project(Path(tmp) / "project")
        make_build(config)
        with (
            GitHubEmulator(tokens={GH_TOKEN: "alice"}, repos=[GH_REPO]) as gh,
            HubEmulator(tokens={HF_TOKEN: "alice"}) as hub,
        ):
            env = env_for(gh, hub, RELEASE_SIGNING_KEY=signing.generate().private_pem)
            for title, args in (
                ("dry run before anything exists", dry),
                ("first publish", WORKFLOW),
                ("identical re-publish", WORKFLOW),
                ("dry run after publishing", dry),
            ):
                gh.clear_log()
                hub.clear_log()
                t = time.perf_counter()
                proc = release(config.path.parent, env, *args)
                seconds = time.perf_counter() - t
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr)
                report(title, {"github": gh, "huggingface": hub}, seconds)


if __name__ == "__main__":
    main()
