"""Issue 27, findings 3 and 10, against hostile mirrors on 127.0.0.1 (tests/mirror_server.py):
what the cache remembers changes only on authenticated input (an unauthenticated remote manifest
never raises the rollback floor, never outranks the operator's local store, online or offline),
and a manifest declaring a size that cannot fit fails its source, not the whole fetch.
No torch here: the releases are small fake ones (fetched and verified, never loaded)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import Client, DiskFull, LocalSource
from pipeline.errors import InputError
from tests.conftest import KEY
from tests.integration.test_client_trust import mirror, release
from tests.mirror_server import Fault, MirrorServer

ONNX = ["onnx"]


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """The operator's own store: 1.0.0 and 1.1.0 (latest)."""
    root = tmp_path / "store"
    release(root, tmp_path / "ours", "1.0.0", onnx=True)
    release(root, tmp_path / "ours", "1.1.0", onnx=True)
    return root


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """What a hostile mirror serves: its own release 99.0.0 (signed by nobody we trust)."""
    from pipeline.publishers.local import LocalStore
    from tests.conftest import make_release_dir

    root = tmp_path / "evil"
    release(root, tmp_path / "theirs", "99.0.0", onnx=True)
    # and its own "1.1.0": the operator's version number, the attacker's files
    d = tmp_path / "theirs-1.1.0"
    m = make_release_dir(d, "m", "1.1.0", payload=b"evil")
    onnx = d / mf.ONNX_FILE
    onnx.write_bytes(b"attacker's graph " * 100)
    (d / mf.TOKENIZER_FILE).write_text('{"format": "evil"}\n')
    files = (
        *m.files,
        mf.file_entry(onnx, "onnx"),
        mf.file_entry(d / mf.TOKENIZER_FILE, "onnx", kind="tokenizer"),
    )
    m = dataclasses.replace(m, files=files)
    m.write(d)
    LocalStore(root).publish(d, m)
    (root / "m" / "latest").write_text("99.0.0\n")
    return root


def _onnx_bytes(store: Path, version: str) -> bytes:
    return (store / "m" / version / mf.ONNX_FILE).read_bytes()


# -- finding 3: an unauthenticated remote manifest never becomes state --------------------------


def test_a_hostile_latest_does_not_poison_the_rollback_floor(
    tmp_path: Path, local: Path, evil: Path, caplog
) -> None:
    cache = tmp_path / "c"
    with MirrorServer(evil) as hostile:
        # one answer from a hostile mirror, default trust: its onnx variant lands in the cache
        r = Client([mirror(hostile)], cache_dir=cache).fetch("m", variants=ONNX)
        assert r.manifest.version == "99.0.0" and not r.authenticated
    assert (cache / "m" / "99.0.0").is_dir()
    # afterwards the operator's own store: its latest is used, not "keeping 99.0.0"
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        r = Client([LocalSource(local)], cache_dir=cache).fetch("m", variants=ONNX)
    assert r.manifest.version == "1.1.0" and r.local
    assert r.path.read_bytes() == _onnx_bytes(local, "1.1.0")
    assert "roll back" not in caplog.text and "keeping" not in caplog.text
    # offline: the local store's version wins over the hostile one, although 99 > 1.1
    r = Client([LocalSource(local)], cache_dir=cache, offline=True).fetch("m", variants=ONNX)
    assert r.manifest.version == "1.1.0" and r.path.read_bytes() == _onnx_bytes(local, "1.1.0")
    # the command line, the same
    out = CliRunner().invoke(
        cli, ["fetch", "m", "-s", str(local), "--variant", "onnx", "--cache-dir", str(cache)]
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip().endswith(f"m/1.1.0/{mf.ONNX_FILE}")


def test_offline_prefers_the_local_stores_version_even_when_it_was_never_fetched_online(
    tmp_path: Path, local: Path, evil: Path
) -> None:
    cache = tmp_path / "c"
    Client([LocalSource(local)], cache_dir=cache).fetch("m", "1.0.0", variants=ONNX)
    with MirrorServer(evil) as hostile:
        Client([mirror(hostile)], cache_dir=cache).fetch("m", variants=ONNX)
    r = Client([LocalSource(local)], cache_dir=cache, offline=True).fetch("m", variants=ONNX)
    assert r.manifest.version == "1.0.0" and r.local  # the store's, not the newer hostile 99
    # with nothing but unauthenticated remote versions cached, offline still uses the cache
    # (the default mode's image pre-fetch), newest first
    r = Client([], cache_dir=cache, offline=True).fetch("m", variants=ONNX)
    assert r.manifest.version == "99.0.0" and not r.local and not r.authenticated


def test_a_hostile_copy_of_the_operators_version_never_replaces_it(
    tmp_path: Path, local: Path, evil: Path, caplog
) -> None:
    cache = tmp_path / "c"
    Client([LocalSource(local)], cache_dir=cache).fetch("m", variants=ONNX)  # 1.1.0, local
    with MirrorServer(evil) as hostile:
        client = Client([mirror(hostile), LocalSource(local)], cache_dir=cache)
        # a pinned version the store vouches for comes from the cache: nobody is asked
        r = client.fetch("m", "1.1.0", variants=ONNX)
        assert r.cache_hit and r.local and hostile.hits == []
        # the hostile mirror's own "1.1.0" differs from the one the local store vouches for:
        # refused as that source's answer, and the next source is asked
        hostile.always("/m/latest", Fault.body(b"1.1.0\n"))
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            r = client.fetch("m", variants=ONNX)
        assert r.manifest_source == f"local:{local}" and r.cache_hit
        assert r.path.read_bytes() == _onnx_bytes(local, "1.1.0")
        assert "the cache holds another manifest of m 1.1.0" in caplog.text
        assert hostile.count(f"/m/1.1.0/{mf.ONNX_FILE}") == 0
    cached = (cache / "m" / "1.1.0" / mf.MANIFEST_NAME).read_bytes()
    assert cached == (local / "m" / "1.1.0" / mf.MANIFEST_NAME).read_bytes()


def test_a_cached_hostile_version_is_not_used_when_the_local_store_says_otherwise(
    tmp_path: Path, local: Path, evil: Path
) -> None:
    cache = tmp_path / "c"
    with MirrorServer(evil) as hostile:  # first contact: the hostile "1.1.0" is cached
        Client([mirror(hostile)], cache_dir=cache).fetch("m", "1.1.0", variants=ONNX)
    # a pinned version that is in the cache is normally taken from it without asking anyone;
    # not when the operator's store holds another manifest of that version
    for offline in (True, False):
        client = Client([LocalSource(local)], cache_dir=cache, offline=offline)
        if offline:
            with pytest.raises(Exception, match="no verified copy in the cache"):
                client.fetch("m", "1.1.0", variants=ONNX)
            continue
        r = client.fetch("m", "1.1.0", variants=ONNX)
        assert r.local and r.path.read_bytes() == _onnx_bytes(local, "1.1.0")


def test_authenticated_and_local_versions_still_set_the_floor(
    tmp_path: Path, local: Path, caplog
) -> None:
    # the operator's local store raised the floor to 1.1.0 (re-checked on each start: the store
    # still holds that manifest); a mirror whose latest is 1.0.0 is a rollback, in the default
    # mode too, and so is the store's own pointer moved back
    cache = tmp_path / "c"
    Client([LocalSource(local)], cache_dir=cache).fetch("m", variants=ONNX)
    with MirrorServer(local) as server:
        server.always("/m/latest", Fault.body(b"1.0.0\n"))
        both = Client([mirror(server), LocalSource(local)], cache_dir=cache)
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            r = both.fetch("m", variants=ONNX)
        assert r.manifest.version == "1.1.0" and r.manifest_source == f"local:{local}"
        assert "refusing to roll back" in caplog.text
        (local / "m" / "latest").write_text("1.0.0\n")
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            r = both.fetch("m", variants=ONNX)
        assert r.manifest.version == "1.1.0" and "keeping 1.1.0" in caplog.text
        (local / "m" / "latest").write_text("1.1.0\n")
        # signed: the same with a trust root, from a cache that only a mirror filled
        signed = Client([mirror(server)], cache_dir=tmp_path / "d", public_key=KEY.public_pem)
        server.clear()
        assert signed.fetch("m", variants=ONNX).manifest.version == "1.1.0"
        server.always("/m/latest", Fault.body(b"1.0.0\n"))
        assert signed.fetch("m", variants=ONNX).manifest.version == "1.1.0"
        # unauthenticated and remote: no floor (it would be the attacker's to set)
        unsigned = Client([mirror(server)], cache_dir=tmp_path / "e")
        server.clear()
        assert unsigned.fetch("m", variants=ONNX).manifest.version == "1.1.0"
        server.always("/m/latest", Fault.body(b"1.0.0\n"))
        assert unsigned.fetch("m", variants=ONNX).manifest.version == "1.0.0"


# -- finding 10: an impossible declared size fails that source, not the fetch -------------------


def _with_size(store: Path, version: str, name: str, size: int) -> bytes:
    data = json.loads((store / "m" / version / mf.MANIFEST_NAME).read_bytes())
    for f in data["files"]:
        if f["name"] == name:
            f["size"] = size
    return json.dumps(data).encode()


def _beyond_free(path: Path) -> int:
    """A size between the free space and the disk's size (the free space moves: other writers)."""
    import shutil

    usage = shutil.disk_usage(path)
    return (usage.free + usage.total) // 2


def test_an_impossible_size_fails_its_source_and_the_next_is_used(
    tmp_path: Path, local: Path, caplog
) -> None:
    huge = _with_size(local, "1.1.0", mf.ONNX_FILE, 10**30)
    with MirrorServer(local) as hostile, MirrorServer(local) as good:
        hostile.always("/m/1.1.0/manifest.json", Fault.body(huge))
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            r = Client([mirror(hostile), mirror(good)], cache_dir=tmp_path / "c").fetch(
                "m", variants=ONNX
            )
        assert r.manifest_source == f"mirror:{good.url}" and r.variant == "onnx"
        assert "declares 10" in caplog.text and "more than the whole disk" in caplog.text
        # alone: a clear error naming the file and the size, exit 3, nothing downloaded
        with pytest.raises(InputError, match="more than the whole disk"):
            Client([mirror(hostile)], cache_dir=tmp_path / "d").fetch("m", variants=ONNX)
        out = CliRunner().invoke(
            cli,
            ["fetch", "m", "-s", hostile.url, "--variant", "onnx",
             "--cache-dir", str(tmp_path / "e")],
        )  # fmt: skip
        assert out.exit_code == 3 and mf.ONNX_FILE in out.output, out.output
        assert "Traceback" not in out.output
        assert hostile.count(f"/m/1.1.0/{mf.ONNX_FILE}") == 0


def test_a_size_beyond_the_free_space_fails_the_variant_and_the_next_is_tried(
    tmp_path: Path, local: Path
) -> None:

    too_big = _with_size(local, "1.1.0", mf.QUANTIZED_FILE, _beyond_free(tmp_path))
    with MirrorServer(local) as hostile:
        hostile.always("/m/1.1.0/manifest.json", Fault.body(too_big))
        client = Client([mirror(hostile)], cache_dir=tmp_path / "c", allow_unverified=True)
        r = client.fetch("m", variants=["quantized", "original"])
        assert r.variant == "original"
        assert any("quantized" in s and "free" in s for s in r.skipped), r.skipped
        # only that variant: it cannot fit, and the disk really is too small: DiskFull (exit 3)
        with pytest.raises(DiskFull, match="free"):
            client.fetch("m", variants=["quantized"])


def test_an_authenticated_manifest_that_cannot_fit_is_still_disk_full(
    tmp_path: Path, local: Path
) -> None:
    # the honest case: a release its operator vouched for (here: pinned) that is too big for
    # this disk stops the fetch with the way out (exit 3); another source would not help

    from pipeline.checksums import blake3_bytes

    too_big = _with_size(local, "1.1.0", mf.ONNX_FILE, _beyond_free(tmp_path))
    with MirrorServer(local) as pinned, MirrorServer(local) as good:
        pinned.always("/m/1.1.0/manifest.json", Fault.body(too_big))
        client = Client(
            [mirror(pinned), mirror(good)], cache_dir=tmp_path / "c", pin=blake3_bytes(too_big)
        )
        with pytest.raises(DiskFull, match="free space"):
            client.fetch("m", variants=ONNX)
        assert good.hits == [] and pinned.count(f"/m/1.1.0/{mf.ONNX_FILE}") == 0
