"""A learner trained elsewhere: `train.export_pkl` as a location (https://, hf:, github:, s3://)
with a blake3 and size pin, downloaded by the client's transport into the build directory and
checked before anything unpickles it (pipeline/learner_file.py).

The learner served here is a pickle whose unpickling creates a marker file: a test that finds no
marker after a refusal knows nothing unpickled it, and the control (the same bytes with their own
pin) shows that the build does unpickle what passes the pin, so the marker would have appeared.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline.build import build
from pipeline.checksums import blake3_bytes
from pipeline.client.network import Http
from pipeline.config.train import TrainConfig
from pipeline.errors import InputError, IntegrityError, RemoteError
from pipeline.learner_file import place
from pipeline.retry import RetryPolicy
from tests.conftest import FIXTURES
from tests.mirror_server import Fault, MirrorServer

PATH = "/learners/export.pkl"


class _Marker:
    """Unpickling this creates the file at `path` (what a hostile pickle could do instead)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Marker(marker))


def other_bytes(like: bytes) -> bytes:
    """Bytes of the same size: the learner the pin was written for."""
    return bytes(b ^ 0x5A for b in like)


def fast_http(sleeps: list[float] | None = None) -> Http:
    policy = RetryPolicy.for_downloads(max_attempts=3, max_total=30, connect_timeout=2, timeout=5)
    return Http(policy, sleep=(sleeps.append if sleeps is not None else None), progress=False)


def pinned(location: str, data: bytes) -> TrainConfig:
    return TrainConfig(
        export_pkl=location, export_pkl_blake3=blake3_bytes(data), export_pkl_size=len(data)
    )


@pytest.fixture
def served(tmp_path: Path):
    """A mirror on 127.0.0.1 serving a hostile pickle at PATH; (server, its bytes, marker)."""
    marker = tmp_path / "unpickled.marker"
    data = hostile_pickle(marker)
    root = tmp_path / "www"
    (root / "learners").mkdir(parents=True)
    (root / "learners" / "export.pkl").write_bytes(data)
    with MirrorServer(root) as server:
        yield server, data, marker


def test_a_wrong_pin_is_refused_before_unpickling(tmp_path: Path, served) -> None:
    server, data, marker = served
    dest = tmp_path / "build" / "export.pkl"
    dest.parent.mkdir()
    wrong = pinned(server.url + PATH, other_bytes(data))
    with pytest.raises(IntegrityError) as e:
        place(wrong, dest, http=fast_http())
    message = str(e.value)
    assert f"train.export_pkl {server.url}{PATH}: blake3 {blake3_bytes(data)}, " in message
    assert f"train.export_pkl_blake3 says {blake3_bytes(other_bytes(data))}" in message
    assert "nothing was unpickled" in message and "b3sum export.pkl" in message
    assert not marker.exists()  # nothing unpickled it
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # the download deleted
    # the probe works: unpickling these bytes is what would have created the marker
    pickle.loads(data)
    assert marker.exists()


def test_the_pinned_file_is_placed_and_not_downloaded_again(tmp_path: Path, served) -> None:
    server, data, marker = served
    dest = tmp_path / "export.pkl"
    t = pinned(server.url + PATH, data)
    assert place(t, dest, http=fast_http()) == server.url + PATH
    assert dest.read_bytes() == data and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.pkl", "www"]  # no .download
    assert server.count(PATH) == 1
    place(t, dest, http=fast_http())  # already there and matching its pin
    assert server.count(PATH) == 1
    dest.write_bytes(other_bytes(data))  # there, but not the pinned file: downloaded again
    place(t, dest, http=fast_http())
    assert server.count(PATH) == 2 and dest.read_bytes() == data


def test_a_download_is_retried_and_resumed(tmp_path: Path, served) -> None:
    server, data, _ = served
    server.fail(PATH, Fault.status(503), Fault.reset(len(data) // 2))
    sleeps: list[float] = []
    dest = tmp_path / "export.pkl"
    place(pinned(server.url + PATH, data), dest, http=fast_http(sleeps))
    assert dest.read_bytes() == data and len(sleeps) == 2
    assert [h.range for h in server.requests(PATH)][-1] is not None  # the rest, by Range


def test_a_body_longer_than_the_pinned_size_is_cut_and_refused(tmp_path: Path, served) -> None:
    server, data, marker = served
    server.always(PATH, Fault.endless(100 << 20))
    dest = tmp_path / "export.pkl"
    with pytest.raises(IntegrityError, match="train.export_pkl_size is .*another file"):
        place(pinned(server.url + PATH, data), dest, http=fast_http())
    part = tmp_path / ".export.pkl.download"
    assert not dest.exists() and (not part.exists() or part.stat().st_size <= len(data))


def test_a_file_shorter_than_the_pin_names_the_size(tmp_path: Path, served) -> None:
    server, data, marker = served
    longer = data + b"the rest of the learner that was pinned"
    with pytest.raises(RemoteError) as e:
        place(pinned(server.url + PATH, longer), tmp_path / "export.pkl", http=fast_http([]))
    assert f"shorter than train.export_pkl_size ({len(longer)} bytes)" in str(e.value)
    assert not (tmp_path / "export.pkl").exists() and not marker.exists()


def test_a_local_export_pkl_is_checked_against_its_pin_when_set(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.marker"
    src = tmp_path / "mine.pkl"
    src.write_bytes(hostile_pickle(marker))
    dest = tmp_path / "build" / "export.pkl"
    dest.parent.mkdir()
    t = replace(pinned("x", other_bytes(src.read_bytes())), export_pkl=src)
    with pytest.raises(IntegrityError, match=r"mine\.pkl: blake3 \w{64}, train\.export_pkl_b"):
        place(t, dest)
    with pytest.raises(
        IntegrityError, match=r"mine\.pkl: \d+ bytes, train\.export_pkl_size says 1;"
    ):
        place(replace(t, export_pkl_size=1), dest)
    assert not marker.exists() and list(dest.parent.iterdir()) == []
    place(replace(t, export_pkl_blake3=None, export_pkl_size=None), dest)  # unpinned: copied
    assert dest.read_bytes() == src.read_bytes() and not marker.exists()


def remote_config(tmp_path: Path, location: str, data: bytes) -> Path:
    text = (FIXTURES / "tiny.toml").read_text().replace('train_csv = "bundled:train.csv"\n', "")
    pin = f'export_pkl_blake3 = "{blake3_bytes(data)}"\nexport_pkl_size = {len(data)}\n'
    text = text.replace("[train]\n", f'[train]\nexport_pkl = "{location}"\n{pin}')
    (tmp_path / "release.toml").write_text(text)
    return tmp_path / "release.toml"


def test_release_build_refuses_a_wrong_pin_with_exit_5(tmp_path: Path, served) -> None:
    server, data, marker = served
    work = tmp_path / "w"
    work.mkdir()
    remote_config(work, server.url + PATH, other_bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "build"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "RELEASE_CACHE_DIR": str(work / "cache")},
    )
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"loading the learner: train.export_pkl {server.url}{PATH}: blake3 " in proc.stderr
    assert not marker.exists()
    build_dir = work / "artifacts" / "build" / "0.0.1"
    assert not (build_dir / "export.pkl").exists()
    assert not (build_dir / ".export.pkl.download").exists()
    # the control: the same bytes with their own pin reach the unpickler (and are no learner)
    with pytest.raises(InputError, match=f"{server.url}{PATH}: not a loadable fastai export"):
        build(cfg.load(remote_config(work, server.url + PATH, data)))
    assert marker.exists()


def test_hf_github_and_s3_locations(tmp_path: Path, monkeypatch) -> None:
    from tests.emulators.github import GitHubEmulator
    from tests.emulators.huggingface import HubEmulator
    from tests.emulators.s3 import S3Emulator

    data = os.urandom(3000)
    for k in ("HF_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    with HubEmulator() as hub, GitHubEmulator(repos=["acme/learners"]) as gh, S3Emulator() as s3:
        hub.add_repo("acme/learner", {"export.pkl": data})
        gh.add_release("acme/learners", "learner/1", assets={"export.pkl": data})
        s3.create_bucket("gpu-box")
        s3.client().put_object(Bucket="gpu-box", Key="runs/7/export.pkl", Body=data)
        env = {
            "HF_ENDPOINT": hub.url,
            "GITHUB_SERVER_URL": gh.url,
            "GITHUB_API_URL": gh.api_url,
            "AWS_ENDPOINT_URL_S3": s3.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        for location in (
            "hf:acme/learner/export.pkl",
            "github:acme/learners@learner%2F1/export.pkl",
            "s3://gpu-box/runs/7/export.pkl",
        ):
            dest = tmp_path / location.split(":")[0] / "export.pkl"
            dest.parent.mkdir()
            assert place(pinned(location, data), dest, http=fast_http()) == location
            assert dest.read_bytes() == data, location
            with pytest.raises(IntegrityError, match=f"train.export_pkl {location}: blake3"):
                place(pinned(location, other_bytes(data)), dest.with_name("x"), http=fast_http())
