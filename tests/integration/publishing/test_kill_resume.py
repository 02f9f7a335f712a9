"""Acceptance: `release publish --target github --target huggingface`, SIGKILLed at a random
request 20 times (each time on a fresh pair of repositories) and resumed each time, ends with
exactly one release per host holding exactly the built files, and no half release is ever
visible in between.

How the kills are drawn and made: tests/integration/publishing/kills.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config as cfg
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
from tests.integration.publishing.kills import Campaign

pytestmark = pytest.mark.slow
KILLS = 20
INTERRUPTS = 3  # then SIGINT (Ctrl-C): the process unwinds (finally blocks run) and exits 130
TAG = "v0.0.1"


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

    campaign = Campaign(
        WORKFLOW, kills=KILLS, interrupts=INTERRUPTS, total=total, writes=writes, seed=20261127
    )
    for i in campaign.trials():
        gh_repo, hf_repo = f"alice/kill{i}", f"acme/kill{i}"
        gh.add_repo(gh_repo)
        config = project(tmp_path / f"trial{i}", gh_repo, hf_repo)
        files = local_bytes(config)
        env = env_for(gh, hub)
        killer = campaign.killer()
        campaign.run(i, killer, [gh, hub], config.path.parent, env)
        nothing_half_visible(gh, hub, gh_repo, hf_repo, files)

        resumed = release(config.path.parent, env, *WORKFLOW)
        assert resumed.returncode == 0, (i, killer.at, killer.mode, killer.where, resumed.stderr)
        assert_github_release(gh, gh_repo, TAG, files)
        assert_hub_release(hub, hf_repo, TAG, files)
    campaign.report()
