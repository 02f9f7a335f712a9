"""Issue 29 with a real (tiny) model: a live model that follows a channel (hot reload: poll,
verify, smoke-test, swap; keep the old one when the new one fails), and predict_batch on the
quantized pickle, the original and the onnx variant against one-by-one predict."""

from __future__ import annotations

import csv
import dataclasses
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline import signing
from pipeline.channels import Change, change_index
from pipeline.client import Client, Http, InputTooLarge, LocalSource, MirrorSource
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, sign_dir
from tests.mirror_server import MirrorServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SIGNER = signing.Signer("key", KEY.private_pem.encode())


def publish_as(tiny, root: Path, tmp: Path, version: str, golden=None) -> mf.Manifest:
    """The tiny build published (signed) into the store `root` as `version`."""
    work, m = tiny
    d = tmp / f"build-{version}"
    shutil.copytree(
        work / "artifacts" / "build" / m.version,
        d,
        ignore=shutil.ignore_patterns("*.lock", "train.key", mf.SIGNATURE_NAME),
    )
    new = dataclasses.replace(m, version=version, golden_queries=tuple(golden or m.golden_queries))
    new.write(d)
    sign_dir(d, new)
    LocalStore(root).publish(d, new)
    return new


def promote(root: Path, version: str, channel: str = "stable") -> None:
    change_index([LocalStore(root)], "tiny-intent", Change("promote", version, channel), SIGNER)


@pytest.fixture
def fleet(tiny, tmp_path):
    """A signed store with 0.0.1, 0.0.2 and 0.0.3 (whose golden queries expect wrong labels:
    its smoke test fails), stable -> 0.0.1, served by a mirror."""
    _, m = tiny
    root = tmp_path / "store"
    for v in ("0.0.1", "0.0.2"):
        publish_as(tiny, root, tmp_path, v)
    wrong = [
        mf.GoldenQuery(q.text, next(x for x in m.labels if x != q.expected))
        for q in m.golden_queries
    ]
    publish_as(tiny, root, tmp_path, "0.0.3", golden=wrong)
    promote(root, "0.0.1")
    with MirrorServer(root) as server:
        yield root, server


def live_client(server: MirrorServer, tmp_path: Path) -> Client:
    source = MirrorSource(server.url, http=Http(progress=False))
    return Client([source], public_key=KEY.public_pem, cache_dir=tmp_path / "cache")


def test_a_live_model_follows_its_channel_and_an_idle_poll_is_one_304(fleet, tmp_path) -> None:
    root, server = fleet
    live = live_client(server, tmp_path).watch(
        "tiny-intent", channel="stable", variants=["quantized"], start=False
    )
    assert (live.version, live.health["ok"], live.swaps) == ("0.0.1", True, 0)
    server.hits.clear()
    assert live.check_now() is False  # nothing changed: one request, answered 304, no body
    assert [(h.path, h.status, h.sent) for h in server.hits] == [
        ("/tiny-intent/index.json", 304, 0)
    ]

    promote(root, "0.0.2")
    assert live.check_now() is True
    assert (live.version, live.swaps, live.health["sequence"]) == ("0.0.2", 1, live.sequence)
    label, probs = live.predict("where is my invoice")
    assert label in probs

    promote(root, "0.0.1")  # the rollback: a lower version, a higher sequence
    assert live.check_now() is True and live.version == "0.0.1"


def test_a_failed_refresh_keeps_the_model_in_use_and_says_why(fleet, tmp_path, monkeypatch) -> None:
    root, server = fleet
    live = live_client(server, tmp_path).watch(
        "tiny-intent", channel="stable", variants=["quantized"], start=False
    )
    promote(root, "0.0.3")  # a bad release: its smoke test fails
    assert live.check_now() is False
    health = live.health
    assert (live.version, health["ok"]) == ("0.0.1", False)
    assert "0.0.3 could not be loaded, kept 0.0.1" in health["last_error"]
    assert "smoke test" in health["last_error"]
    assert live.predict("where is my invoice")[0]  # still serving

    import pipeline.client.loading as loading

    loads = []
    real = loading.load_release
    monkeypatch.setattr(loading, "load_release", lambda *a, **k: loads.append(1) or real(*a, **k))
    assert live.check_now() is False  # the same bad manifest is not loaded again
    assert loads == [] and live.health["ok"] is False
    promote(root, "0.0.2")  # the operator fixes the channel
    assert live.check_now() is True and live.version == "0.0.2" and live.health["ok"] is True


def test_predicts_during_swaps_get_the_old_or_the_new_model_never_an_error(fleet, tmp_path) -> None:
    root, server = fleet
    live = live_client(server, tmp_path).watch(
        "tiny-intent", channel="stable", variants=["quantized"], start=False
    )
    errors: list[BaseException] = []
    answered = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                answered.append(live.predict_batch(["where is my invoice", "reset my password"]))
                answered.append(live.predict("the ERP crashed"))
            except BaseException as e:  # noqa: BLE001 - the point is that none happens
                errors.append(e)

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in ("0.0.2", "0.0.1", "0.0.2", "0.0.1"):
            promote(root, v)
            assert live.check_now() is True and live.version == v
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == [] and len(answered) > 4


def test_the_polling_thread_swaps_on_its_own_and_stops_on_close(fleet, tmp_path) -> None:
    root, server = fleet
    with live_client(server, tmp_path).watch(
        "tiny-intent", channel="stable", every=0.05, jitter=0.5, variants=["quantized"]
    ) as live:
        assert live.health["polling"]
        promote(root, "0.0.2")
        deadline = time.monotonic() + 60
        while live.version != "0.0.2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.version == "0.0.2" and live.checks >= 1
    assert live.health["polling"] is False
    waits = [live.wait_seconds() for _ in range(200)]
    assert min(waits) >= 0.025 and max(waits) <= 0.075 and len(set(waits)) > 100


def texts_of_many_lengths() -> list[str]:
    with open(ROOT / "pipeline" / "data" / "eval.csv", newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:24]
    rng = random.Random(29)
    words = " ".join(texts).split()
    # > 2 x seq_len (72) tokens, up to ~450 (the default limit is 512)
    texts += [" ".join(rng.choice(words) for _ in range(n)) for n in (60, 150, 200, 330)]
    return [*texts, "", "x", "?"]


@pytest.mark.parametrize("variant", ["original", "quantized", "onnx"])
def test_predict_batch_gives_each_text_its_own_answer(tiny, tmp_path, variant) -> None:
    """fp32 (original): the same numbers as one-by-one. The INT8 variants quantize their
    activations dynamically, with one scale per batch: probabilities move a little with the
    company a text keeps, and only a near tie may change its label."""
    _, m = tiny
    root = tmp_path / "store"
    publish_as(tiny, root, tmp_path, m.version)
    model = Client([LocalSource(root)], cache_dir=tmp_path / "cache").load_model(
        "tiny-intent", variants=[variant]
    )
    texts = texts_of_many_lengths()
    one = [model.predict(t) for t in texts]
    tolerance = 1e-5 if variant == "original" else 0.03
    for size in (1, 7):  # one at a time (padding alone), and batches mixing lengths
        batch = model.predict_batch(texts, batch_size=size)
        assert len(batch) == len(texts)
        for t, (label, probs), (label_b, probs_b) in zip(texts, one, batch, strict=True):
            assert max(abs(probs[k] - probs_b[k]) for k in probs) <= tolerance, (size, t[:40])
            if label_b != label:
                top = sorted(probs.values(), reverse=True)
                assert top[0] - top[1] <= 2 * tolerance, (size, t[:40], label, label_b)
    if variant == "onnx":
        assert model.predictor.batched  # this build's graph takes a batch
    too_long = "word " * 3000
    with pytest.raises(InputTooLarge):
        model.predict_batch(["fine", too_long])
