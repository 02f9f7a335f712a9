"""Issue 27, finding 1 end to end: a hostile HTTP mirror serves the tiny release with a crafted
`model_int8.onnx` whose weights are "external data" naming a file, to a server with the default
trust whose working directory holds a secret. Before the fix, onnxruntime loaded the graph from
bytes, resolved `.env` against the working directory, and `predict()` returned the secret's bytes
as probabilities. Now the graph is refused before onnxruntime sees it (exit 5, the tensor and the
file it names in the message), on a server without the `onnx` package, and the client falls back
to the next variant. The project's own graph and tokenizer still load from the same mirror; a
tokenizer file with a catastrophic pattern is refused at once (finding 2). The learn.predict
fallback keeps the input limits and every pickle predict runs at a set thread count (finding 11).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import InputLimits, InputTooLarge, LocalSource, MirrorSource, load_model
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, sign_dir
from tests.integration.test_client_load import build_dir
from tests.mirror_server import MirrorServer
from tests.unit.test_hostile_model_inputs import REDOS, SECRET, N, leaking_graph

pytestmark = pytest.mark.slow
VERSION = "0.0.1"


@dataclasses.dataclass(frozen=True)
class World:
    """The mirror's store, the server's working directory and the secrets around it."""

    store: Path
    server_dir: Path
    secrets: dict[str, bytes]  # case -> the bytes its graph tries to read


def _release(
    tiny,
    tmp: Path,
    store: Path,
    model: str,
    *,
    onnx: bytes | None = None,
    tokenizer_change: dict | None = None,
    labels: list[str] | None = None,
    pickles: bool = False,
    signed: bool = False,
) -> None:
    """Publish the tiny release as `model` into `store`, its graph and tokenizer replaced."""
    _, m = tiny
    src = build_dir(tiny)
    d = tmp / f"build-{model}"
    d.mkdir(parents=True)
    shutil.copy(src / mf.ONNX_FILE, d / mf.ONNX_FILE)
    if onnx is not None:
        (d / mf.ONNX_FILE).write_bytes(onnx)
    spec = json.loads((src / mf.TOKENIZER_FILE).read_bytes())
    if labels is not None:
        spec["labels"] = labels
    if tokenizer_change:
        spec["tokenizer"] = {**spec["tokenizer"], **tokenizer_change}
    (d / mf.TOKENIZER_FILE).write_text(json.dumps(spec))
    names = [mf.ONNX_FILE, mf.TOKENIZER_FILE]
    if pickles:
        shutil.copy(src / mf.QUANTIZED_FILE, d / mf.QUANTIZED_FILE)
        names.append(mf.QUANTIZED_FILE)
    entries = {e.name: e for e in m.files}
    files = tuple(mf.file_entry(d / n, entries[n].variant, entries[n].kind) for n in names)
    golden = m.golden_queries if onnx is None else ()  # a crafted graph answers nonsense
    new = dataclasses.replace(
        m, model=model, files=files, golden_queries=golden, labels=tuple(labels or m.labels)
    )
    new.write(d)
    if signed:
        sign_dir(d, new)
    LocalStore(store).publish(d, new)


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("hostile-model")
    store = tmp / "store"
    server_dir = tmp / "server"
    server_dir.mkdir()
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    secrets = {
        "env": SECRET,
        "parent": b"PARENT_SECRET=" + os.urandom(8).hex().encode(),
        "absolute": b"ABSOLUTE_SECRET=" + os.urandom(8).hex().encode(),
        "symlink": b"LINKED_SECRET=" + os.urandom(8).hex().encode(),
    }
    (server_dir / ".env").write_bytes(secrets["env"])
    (tmp / "x").write_bytes(secrets["parent"])  # ../x from the server's directory
    (elsewhere / "abs").write_bytes(secrets["absolute"])
    (elsewhere / "linked").write_bytes(secrets["symlink"])
    (server_dir / "link").symlink_to(elsewhere / "linked")
    locations = {
        "env": ".env",
        "parent": "../x",
        "absolute": str(elsewhere / "abs"),
        "symlink": "link",
    }
    labels = [f"b{i}" for i in range(N)]
    for case, location in locations.items():
        _release(tiny, tmp, store, f"m-{case}", onnx=leaking_graph(location), labels=labels)
    # the project's own graph and tokenizer, unsigned: what a plain mirror serves
    _release(tiny, tmp, store, "m-own")
    # the project's own graph with a tokenizer whose token_match backtracks catastrophically
    _release(tiny, tmp, store, "m-redos", tokenizer_change={"token_match": REDOS})
    # a signed release holding the crafted graph and the real quantized pickle
    _release(
        tiny,
        tmp,
        store,
        "m-signed",
        onnx=leaking_graph(".env"),
        labels=labels,
        pickles=True,
        signed=True,
    )
    return World(store, server_dir, secrets)


# A server with `pip install fastai-release[onnx]`: onnxruntime and numpy, no `onnx` package
# (the check must not need it), no torch, fastai or spaCy. Its working directory holds the
# secrets; the trust is the default (no key, no pin).
_SERVER = r"""
import importlib.abc, json, sys, time

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "torch", "fastai", "spacy", "fastcore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())

from pipeline.client import MirrorSource, load_model
from pipeline.errors import ReleaseError

url, cache = sys.argv[1], sys.argv[2]
for model in sys.argv[3:]:
    start = time.perf_counter()
    try:
        loaded = load_model(model, sources=[MirrorSource(url)], cache_dir=cache)
        label, probs = loaded.predict("hello there")
        out = {"variant": loaded.variant, "label": label, "probs": probs,
               "smoke": loaded.smoke_passed}
    except ReleaseError as e:
        out = {"exit": e.exit_code, "error": str(e), "type": type(e).__name__}
    out["model"], out["seconds"] = model, time.perf_counter() - start
    out["onnx_imported"] = "onnx" in sys.modules
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def server_answers(world: World, tmp_path_factory) -> dict[str, dict]:
    models = ["m-env", "m-parent", "m-absolute", "m-symlink", "m-own", "m-redos"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RELEASE_OFFLINE")}
    cache = tmp_path_factory.mktemp("server-cache")
    with MirrorServer(world.store) as mirror:
        proc = subprocess.run(
            [sys.executable, "-c", _SERVER, mirror.url, str(cache), *models],
            capture_output=True,
            text=True,
            cwd=world.server_dir,
            env=env,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {a["model"]: a | {"stderr": proc.stderr} for a in answers}


def _leaked(answer: dict, secret: bytes) -> bool:
    """Whether the secret's first bytes are in the answer, as text or as probabilities."""
    text = json.dumps(answer)
    values = bytes(int(v) for v in answer.get("probs", {}).values() if 0 <= v < 256 and v == int(v))
    return secret[:N] in values or secret[:N].decode() in text


@pytest.mark.parametrize("case", ["env", "parent", "absolute", "symlink"])
def test_a_graph_naming_a_file_never_reads_it(world: World, server_answers, case: str) -> None:
    answer = server_answers[f"m-{case}"]
    assert not _leaked(answer, world.secrets[case]), answer
    assert answer.get("exit") == 5 and answer["type"] == "IntegrityError", answer
    assert "model_int8.onnx: refusing to load this graph" in answer["error"]
    assert "tensor 'secret': external data, location" in answer["error"]
    assert not answer["onnx_imported"]  # the check holds without the onnx package


def test_the_projects_own_graph_and_tokenizer_load_from_a_plain_mirror(server_answers) -> None:
    answer = server_answers["m-own"]
    assert answer.get("variant") == "onnx", answer
    assert answer["smoke"] > 0 and abs(sum(answer["probs"].values()) - 1) < 1e-5


def test_a_tokenizer_with_a_catastrophic_pattern_is_refused_at_once(server_answers) -> None:
    answer = server_answers["m-redos"]
    assert answer.get("exit") == 5 and answer["type"] == "IntegrityError", answer
    assert "not those of any stock spaCy tokenizer" in answer["error"]
    assert "signed or pinned" in answer["error"]
    assert answer["seconds"] < 10  # a download, a refusal; the pattern never runs


def test_the_cli_says_why_and_exits_5(world: World, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(world.server_dir)
    with MirrorServer(world.store) as mirror:
        args = ["fetch", "m-env", "--variant", "onnx", "--load", "-s", mirror.url]
        result = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 5, result.output
    assert "refusing to load this graph" in result.output and "location '.env'" in result.output
    assert "Traceback" not in result.output and SECRET[:N].decode() not in result.output


def test_a_refused_graph_falls_back_to_the_next_variant(world: World, monkeypatch, tmp_path):
    """Even signed, a graph with external data is refused; the signed pickle loads instead."""
    monkeypatch.chdir(world.server_dir)
    with MirrorServer(world.store) as mirror:
        loaded = load_model(
            "m-signed",
            sources=[MirrorSource(mirror.url)],
            variants=["onnx", "quantized"],
            public_key=KEY.public_pem,
            cache_dir=tmp_path / "c",
        )
    assert loaded.variant == "quantized"
    assert any("refusing to load this graph" in r for r in loaded.fallback_reasons)
    label, probs = loaded.predict("hello there")
    assert SECRET[:N].decode() not in json.dumps(probs)


# -- finding 11: the learn.predict fallback is bounded too, and threads are set per call -------


@pytest.fixture
def fallback(world: World, monkeypatch, tmp_path: Path):
    """The signed release's pickle loaded as a learner the fast Predictor refuses."""
    from pipeline.client import loading
    from pipeline.client.predict import UnsupportedLearner

    def refuse(*_: object, **__: object) -> None:
        raise UnsupportedLearner("refused for this test")

    monkeypatch.setattr(loading, "Predictor", refuse)
    loaded = load_model(
        "m-signed",
        sources=[LocalSource(world.store)],
        variants=["quantized"],
        cache_dir=tmp_path / "c",
    )
    assert loaded.predictor is None
    return loaded


def test_the_learn_predict_fallback_refuses_a_text_over_the_token_limit(fallback) -> None:
    calls = []
    real = fallback.learner.predict
    fallback.learner.predict = lambda *a, **k: calls.append(a) or real(*a, **k)
    # the finding's text: 10,000 characters of `a:` runs (within the character and run limits)
    text = " ".join(("a:" * 500)[:999] for _ in range(10))
    start = time.process_time()
    with pytest.raises(InputTooLarge) as e:
        fallback.predict(text)
    assert e.value.setting == "max_tokens" and e.value.found > 512
    assert calls == []  # the model never ran
    assert time.process_time() - start < 3  # fastai's tokenizer only (spaCy: ~0.5 s here)
    label, probs = fallback.predict("hello there")
    assert label in probs and len(calls) == 1
    # the same limit as the fast path, and None switches it off as there
    fallback.limits = InputLimits(max_tokens=None)
    fallback.predict(" ".join(["hello"] * 600))
    assert len(calls) == 2


@pytest.mark.parametrize("path", ["fast", "fallback"])
def test_every_pickle_predict_runs_at_the_set_threads_and_restores_them(
    world: World, path: str, monkeypatch, tmp_path: Path, request
) -> None:
    import torch

    if path == "fallback":
        loaded = request.getfixturevalue("fallback")
    else:
        loaded = load_model(
            "m-signed",
            sources=[LocalSource(world.store)],
            variants=["quantized"],
            cache_dir=tmp_path / "c",
        )
        assert loaded.predictor is not None
    seen: list[int] = []
    hook = loaded.learner.model.register_forward_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        loaded.predict("hello there")
        assert seen == [1] and torch.get_num_threads() == 2  # 1 inside, the host's after
        loaded.threads = 2
        if loaded.predictor is not None:
            loaded.predictor.threads = 2
        torch.set_num_threads(1)
        loaded.predict("hello there")
        assert seen == [1, 2] and torch.get_num_threads() == 1
    finally:
        hook.remove()
        torch.set_num_threads(before)


def test_the_thread_count_comes_from_the_environment(world: World, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RELEASE_TORCH_THREADS", "2")
    loaded = load_model(
        "m-signed",
        sources=[LocalSource(world.store)],
        variants=["quantized"],
        cache_dir=tmp_path / "c",
    )
    assert loaded.threads == 2 and loaded.predictor.threads == 2
    monkeypatch.setenv("RELEASE_TORCH_THREADS", "zero")
    with pytest.raises(Exception, match=r"\$RELEASE_TORCH_THREADS: expected a whole number"):
        load_model(
            "m-signed",
            sources=[LocalSource(world.store)],
            variants=["quantized"],
            cache_dir=tmp_path / "c",
        )
