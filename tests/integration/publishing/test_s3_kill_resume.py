"""Acceptance: `release publish --target s3`, SIGKILLed at a random request 12 times (each time
under a fresh prefix) and resumed each time, ends with exactly the built files under
`<prefix>/<model>/<version>/`, `latest` naming the version and no unfinished multipart upload;
and no version is ever visible (its manifest.json there) without all of its files.

The structure is test_kill_resume.py's (tests/integration/publishing/kills.py): the proxy in front
of moto kills the publishing process at request number k ("drop": before moto sees it,
"in-flight": while it reads the body, "lost-reply": after moto applied it), half of the draws
over all requests of a full publish, half over its state-changing ones. export.pkl is 9 MiB so
multipart uploads are among them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.publishing.conftest import (
    AWS_ENV,
    BUCKET,
    local_bytes,
    make_build,
    release,
    s3_toml,
    write_project,
)
from tests.integration.publishing.kills import Campaign

pytestmark = pytest.mark.slow
KILLS = 12
INTERRUPTS = 2
WORKFLOW = ("publish", "--target", "s3")


def trial(s3, root: Path, prefix: str):
    config = write_project(root, s3_toml(s3.url, prefix=prefix))
    make_build(config, payload=prefix.encode(), big=9 << 20)
    return config


def state(s3, prefix: str) -> tuple[dict[str, bytes], bytes | None]:
    base = f"{prefix}/tiny-intent/0.0.1/"
    objects = s3.objects(BUCKET, f"{prefix}/")
    files = {k[len(base) :]: v for k, v in objects.items() if k.startswith(base)}
    return files, objects.get(f"{prefix}/tiny-intent/latest")


def test_killed_12_times_at_random_points_and_resumed_converges(s3, tmp_path) -> None:
    env = {**os.environ, **AWS_ENV}

    config = trial(s3, tmp_path / "measure", "measure")
    s3.clear_log()
    done = release(config.path.parent, env, *WORKFLOW)
    assert done.returncode == 0, done.stderr
    total, writes = len(s3.log), len(s3.writes())
    assert s3.count("PUT", "partNumber=", query=True) == 2

    campaign = Campaign(
        WORKFLOW, kills=KILLS, interrupts=INTERRUPTS, total=total, writes=writes, seed=20261130
    )
    for i in campaign.trials():
        prefix = f"kill{i}"
        config = trial(s3, tmp_path / prefix, prefix)
        built = local_bytes(config)
        killer = campaign.killer()
        campaign.run(i, killer, [s3], config.path.parent, env)

        files, latest = state(s3, prefix)
        if "manifest.json" in files:  # published: then whole
            assert files == built, (i, killer.where, sorted(files))
        assert latest in (None, b"0.0.1\n")
        if latest is not None:
            assert files == built

        resumed = release(config.path.parent, env, *WORKFLOW)
        assert resumed.returncode == 0, (i, killer.at, killer.mode, killer.where, resumed.stderr)
        files, latest = state(s3, prefix)
        assert files == built and latest == b"0.0.1\n"
        assert [k for k in s3.unfinished_uploads(BUCKET) if k.startswith(f"{prefix}/")] == []

    campaign.report()
