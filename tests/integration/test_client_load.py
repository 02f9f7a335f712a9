"""The client loading a real (tiny) fastai release: fast predict, variant fallback, 16 processes."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.checksums import blake3_bytes
from pipeline.client import (
    Client,
    Http,
    LocalSource,
    MirrorSource,
    Untrusted,
    load_model,
)
from pipeline.errors import ReleaseError
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, sign_dir
from tests.mirror_server import Fault, MirrorServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "pipeline" / "data" / "eval.csv"


def build_dir(tiny) -> Path:
    work, m = tiny
    return work / "artifacts" / "build" / m.version


def republish(
    tiny, tmp: Path, name: str, quantized: bytes | None = None, golden=None, environment=None
) -> tuple[Path, mf.Manifest]:
    """A store with the tiny release, its quantized file or golden queries replaced."""
    _, m = tiny
    d = tmp / f"build-{name}"
    shutil.copytree(build_dir(tiny), d, ignore=shutil.ignore_patterns("*.lock", "train.key"))
    if quantized is not None:
        (d / mf.QUANTIZED_FILE).write_bytes(quantized)
    files = tuple(mf.file_entry(d / f.name, f.variant, f.kind) for f in m.files)
    new = dataclasses.replace(
        m,
        files=files,
        golden_queries=tuple(golden or m.golden_queries),
        environment=environment or m.environment,
    )
    new.write(d)
    sign_dir(d, new)
    root = tmp / f"store-{name}"
    LocalStore(root).publish(d, new)
    return root, new


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory) -> tuple[Path, mf.Manifest]:
    return republish(tiny, tmp_path_factory.mktemp("load"), "plain")


def eval_texts(n: int) -> list[str]:
    with open(EVAL, newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)][:n] + ["", "x", "ORA-01476 " * 40]


@pytest.mark.parametrize("variant", ["quantized", "original"])
def test_fast_predict_equals_learn_predict(tmp_path: Path, store, variant) -> None:
    root, m = store
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=[variant], cache_dir=tmp_path / "c"
    )
    assert loaded.variant == variant and loaded.predictor is not None
    assert loaded.smoke_passed == len(m.golden_queries) > 0
    learn = loaded.learner
    worst = 0.0
    with learn.no_bar():
        for text in eval_texts(30):
            label, _, probs = learn.predict(text)
            fast_label, fast_probs = loaded.predict(text)
            assert fast_label == str(label), text
            assert list(fast_probs) == list(m.labels)
            worst = max(
                worst,
                max(abs(a - b) for a, b in zip(probs.tolist(), fast_probs.values(), strict=True)),
            )
    assert worst <= 1e-5


@pytest.mark.parametrize("variant", ["original", "quantized", "onnx"])
def test_long_texts_one_at_a_time_and_batched(tiny, tmp_path: Path, store, variant) -> None:
    """Texts over 2 x seq_len through what a server loads: the client's predict() one at a
    time, and the pickle variants' learner batched (fastai's chunked path, where the quantized
    embedding once refused its non-contiguous slices), against the original learner."""
    import numpy as np
    from fastai.learner import load_learner

    from pipeline.evaluation import predict_all
    from tests.integration.conftest import assert_close_answers, long_eval_texts

    root, m = store
    long = long_eval_texts(tiny[0])
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=[variant], cache_dir=tmp_path / "c"
    )
    assert loaded.variant == variant
    one = np.array([list(loaded.predict(t)[1].values()) for t in long])
    reference = load_learner(build_dir(tiny) / mf.ORIGINAL_FILE)
    with reference.no_bar():
        original = np.stack([reference.predict(t)[2].numpy() for t in long])
    tolerance = 1e-5 if variant == "original" else 0.05
    assert_close_answers(one, original, tolerance, f"{variant} one at a time")
    if variant != "onnx":
        # dynamic INT8 quantizes activations per batch: close to one at a time, not equal
        batched = predict_all(loaded.learner, long)
        assert_close_answers(batched.probs, one, tolerance, f"{variant} batched")


def test_a_quantized_model_that_fails_to_load_falls_back(tiny, tmp_path: Path, caplog) -> None:
    root, m = republish(tiny, tmp_path, "garbage", quantized=b"\x80\x04not a learner at all")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        loaded = load_model(m.model, sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    assert loaded.variant == "original" and loaded.smoke_passed == len(m.golden_queries)
    assert loaded.fallback_reasons[0].startswith("quantized: failed to load: ")
    assert "quantized variant failed to load, falling back" in caplog.text
    assert "loaded tiny-intent 0.0.1, original variant" in caplog.text


def test_a_quantized_engine_this_cpu_lacks_falls_back_before_unpickling(
    tiny, tmp_path: Path
) -> None:
    _, m = tiny
    env = {**m.environment, "quantized_engine": "no-such-engine"}
    root, m = republish(tiny, tmp_path, "engine", environment=env)
    loaded = load_model(m.model, sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    assert loaded.variant == "original"
    assert "needs the 'no-such-engine' quantized engine" in loaded.fallback_reasons[0]


def test_a_quantized_model_that_fails_the_smoke_test_falls_back(
    tiny, tmp_path: Path, caplog
) -> None:
    """A quantized learner that loads but answers one label for everything (a broken build)."""
    import torch
    from fastai.learner import load_learner

    learn = load_learner(build_dir(tiny) / mf.QUANTIZED_FILE)
    original = load_learner(build_dir(tiny) / mf.ORIGINAL_FILE)
    labels = list(learn.dls.vocab[-1])
    head = learn.model[1].layers[-1]
    bias = torch.full((len(labels),), -50.0)
    bias[0] = 50.0  # always labels[0]
    learn.model[1].layers[-1] = torch.nn.Sequential(head, _AddBias(bias))
    broken = tmp_path / "broken.pkl"
    learn.export(broken)
    golden = []
    with original.no_bar():
        for text in eval_texts(60):
            expected = str(original.predict(text)[0])
            if expected != labels[0]:
                golden.append(mf.GoldenQuery(text, expected))
    assert golden, "the original answers labels[0] to everything"
    root, m = republish(tiny, tmp_path, "smoke", quantized=broken.read_bytes(), golden=golden[:3])
    with caplog.at_level(logging.INFO, logger="pipeline"):
        loaded = load_model(m.model, sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    assert loaded.variant == "original"
    reason = loaded.fallback_reasons[0]
    assert reason.startswith("quantized: smoke test: ") and f"gave {labels[0]!r}" in reason
    assert "quantized variant rejected, falling back: smoke test" in caplog.text


class _AddBias(__import__("torch").nn.Module):
    def __init__(self, bias) -> None:  # noqa: ANN001
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, x):  # noqa: ANN001, ANN201
        return x * 0 + self.bias


# One interpreter imports fastai once and forks 16 processes (as a pre-forking server does), so
# the test does not pay 16 fastai imports on a 2-core machine; each child is its own process with
# its own file descriptors and locks, started together by one signal.
FORKER = """
import json, os, sys, time, traceback
from pathlib import Path
import fastai.learner, fastai.text.all, spacy
spacy.blank("en")  # what unpickling a fastai text learner imports (0.7 s): once, before forking
from pipeline.client import MirrorSource, load_model
url, cache, out, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
r, w = os.pipe()
children = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # every child blocks here until the parent closes the pipe
        try:
            import torch
            torch.set_num_threads(1)
            loaded = load_model("tiny-intent", sources=[MirrorSource(url)], cache_dir=cache,
                                lock_timeout=120, public_key=Path(sys.argv[5]))
            result = {"variant": loaded.variant, "path": str(loaded.fetched.path),
                      "hit": loaded.fetched.cache_hit, "smoke": loaded.smoke_passed,
                      "label": loaded.predict("where is the credit check done?")[0], "pid": os.getpid()}
            (out / f"{i}.json").write_text(json.dumps(result))
            os._exit(0)
        except BaseException:
            (out / f"{i}.err").write_text(traceback.format_exc())
            os._exit(1)
    children.append(pid)
os.close(r)
time.sleep(0.2)
os.close(w)  # go: all children start at once
failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in children)
sys.exit(failed)
"""


def test_16_processes_on_an_empty_cache_download_once_and_all_load(tmp_path: Path, store) -> None:
    root, m = store
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    q = f"/{m.model}/{m.version}/{mf.QUANTIZED_FILE}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    key = tmp_path / "release.pub"
    key.write_text(KEY.public_pem)
    with MirrorServer(root) as server:
        server.always(q, Fault.slow(1_000_000))  # ~0.6 s: every process arrives during it
        proc = subprocess.run(
            [sys.executable, "-c", FORKER, server.url, str(cache), str(out), "16", str(key)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        gets = [h for h in server.requests(q) if h.method == "GET"]
    errors = "\n".join(p.read_text() for p in out.glob("*.err"))
    assert proc.returncode == 0, (proc.stderr[-2000:], errors[-3000:])
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(results) == 16 and len({r["pid"] for r in results}) == 16
    assert [h.status for h in gets] == [200] and gets[0].range is None  # exactly one download
    assert server.count(f"/{m.model}/{m.version}/{mf.ORIGINAL_FILE}") == 0
    assert {r["variant"] for r in results} == {"quantized"}
    assert {r["path"] for r in results} == {str(cache / m.model / m.version / mf.QUANTIZED_FILE)}
    assert sum(not r["hit"] for r in results) == 1  # one downloaded, fifteen waited and reused
    assert all(r["smoke"] == len(m.golden_queries) for r in results)
    assert len({r["label"] for r in results}) == 1


# -- issue 11: who may make this process unpickle, and what exactly is unpickled ----------------


def evil_pickle(marker: Path) -> bytes:
    """A pickle that runs a command when loaded (what a hostile mirror would serve)."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


def hostile(root: Path, m: mf.Manifest, pickle: bytes) -> bytes:
    """The release's manifest, rewritten to list the mirror's own quantized pickle."""
    entry = mf.FileEntry(mf.QUANTIZED_FILE, len(pickle), blake3_bytes(pickle), "quantized")
    files = tuple(entry if f.name == mf.QUANTIZED_FILE else f for f in m.files)
    return dataclasses.replace(m, files=files).to_json().encode()


def test_a_hostile_mirror_cannot_make_a_server_unpickle(tmp_path: Path, store, caplog) -> None:
    """Finding 1: no key, no pin (the default) used to load the mirror's pickle."""
    root, m = store
    marker = tmp_path / "pwned"
    evil = evil_pickle(marker)
    base = f"/{m.model}/{m.version}"
    with MirrorServer(root) as server:
        server.always(f"{base}/manifest.json", Fault.body(hostile(root, m, evil)))
        server.always(f"{base}/{mf.QUANTIZED_FILE}", Fault.body(evil))
        source = MirrorSource(server.url, http=Http(progress=False))
        client = Client([source], cache_dir=tmp_path / "c")
        with pytest.raises(Untrusted, match="--public-key"):
            client.load_model(m.model, variants=["quantized", "original"])
        assert not marker.exists()
        # onnx installed and allowed: the variant that executes nothing is loaded instead
        loaded = client.load_model(m.model, variants=["quantized", "onnx"])
        assert loaded.variant == "onnx" and not marker.exists()
        assert loaded.predict("where is the invoice posted?")[0] in m.labels
        # the explicit opt-in loads it, says so at WARNING, and fastai's own warning is shown
        unsafe = Client([source], cache_dir=tmp_path / "d", allow_unverified=True)
        with (
            caplog.at_level(logging.WARNING, logger="pipeline"),
            pytest.warns(UserWarning, match="insecure pickle"),
            pytest.raises(ReleaseError),  # it ran, then turned out not to be a learner
        ):
            unsafe.load_model(m.model, variants=["quantized"])
        assert marker.exists()  # the proof that allow_unverified really unpickled it
        assert "whose manifest is NOT authenticated (allow_unverified)" in caplog.text


def test_the_bytes_verified_are_the_bytes_loaded_under_a_real_race(tmp_path: Path, store) -> None:
    """Finding 4: a process that can write the cache swaps the file between check and load."""
    root, m = store
    cache = tmp_path / "c"
    client = Client([LocalSource(root)], cache_dir=cache)
    client.load_model(m.model, variants=["quantized"], smoke_test=False)  # warm the cache
    target = cache / m.model / m.version / mf.QUANTIZED_FILE
    marker = tmp_path / "pwned"
    spare = tmp_path / "spare"
    spare.mkdir()
    (spare / "evil").write_bytes(evil_pickle(marker))
    shutil.copyfile(target, spare / "good")
    # The swapper is its own process: a thread would share the GIL with the loads and run
    # mostly between them, so the cache file would seldom change between check and read.
    stop = tmp_path / "stop"
    counted = tmp_path / "swaps"
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(target), str(spare), str(stop), str(counted)]
    )
    loaded = refused = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(12):
                try:
                    got = client.load_model(m.model, variants=["quantized"], smoke_test=False)
                except ReleaseError as e:
                    assert "refusing to load it" in str(e) or "blake3" in str(e), e
                    refused += 1
                else:
                    assert got.variant == "quantized" and hasattr(got.learner, "dls")
                    loaded += 1
    finally:
        stop.touch()
        assert swapper.wait(timeout=30) == 0
    swaps = int(counted.read_text())
    assert not marker.exists()  # the swapped-in pickle never ran
    print(f"race: {swaps} swaps, {loaded} loads of the good model, {refused} refused")
    assert swaps > 100 and loaded + refused == 12
    assert refused > 0  # the race was real: some reads caught the hostile bytes, and refused them


SWAPPER = """
import os, shutil, sys
from pathlib import Path
target, spare, stop, counted = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
swaps = 0
while not stop.exists():
    for name in ("evil", "good"):
        tmp = target.with_name(f".swap-{name}")
        shutil.copyfile(spare / name, tmp)
        os.replace(tmp, target)
        swaps += 1
Path(counted).write_text(str(swaps))
"""


PRUNE = """
import sys
from pathlib import Path
from pipeline.client.cache import Cache, CacheBusy
try:
    print(Cache(Path(sys.argv[1])).prune(keep=0, wait=0.5))
except CacheBusy:
    print("busy")
"""


def test_prune_waits_for_a_load_between_fetch_and_read(tmp_path: Path, store, monkeypatch) -> None:
    """`cache prune --keep 0` run after the fetch and before the bytes are read must wait:
    it used to remove the fetched file, and the load fell back to a variant it also removed."""
    from pipeline.client import loading

    root, m = store
    cache = tmp_path / "c"
    pruned: list[str] = []
    read = loading.read_verified

    def prune_then_read(path: Path, entry: mf.FileEntry) -> bytes:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", PRUNE, str(cache)], capture_output=True, text=True, env=env
        )
        pruned.append(proc.stdout.strip() or proc.stderr[-2000:])
        return read(path, entry)

    monkeypatch.setattr(loading, "read_verified", prune_then_read)
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=["quantized", "original"], cache_dir=cache
    )
    assert pruned == ["busy"]
    assert loaded.variant == "quantized" and not loaded.fallback_reasons
    monkeypatch.setattr(loading, "read_verified", read)
    # and once the load is done, prune runs
    assert (
        f"{m.model} {m.version}"
        in subprocess.run(
            [sys.executable, "-c", PRUNE, str(cache)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
    )
