"""Model bytes from a source nobody vouched for are hostile input (issue 27, findings 1, 2, 11
and the names of 12), without a trained model: crafted onnx graphs, tokenizer files, manifests.

The graphs are crafted with the `onnx` package (a dev dependency); the client reads them with
its own protobuf walker, so the checks hold on a server that has no `onnx` installed
(tests/integration/test_hostile_model.py runs one with `onnx` blocked).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import manifest as mf
from pipeline.client import onnx_graph, tokenizer_format
from pipeline.client.fetching import _check_name
from pipeline.client.loading import run_smoke_test
from pipeline.client.onnx_graph import check_self_contained, external_reference
from pipeline.client.onnx_model import tokenizer_from_bytes
from pipeline.client.tokenizer import TextTokenizer, stock_language
from pipeline.errors import InputError, IntegrityError, ReleaseError
from tests.conftest import make_release_dir
from tests.helpers import tokenizer_spec

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

N = 16  # bytes a crafted graph reads from the file it names
SECRET = b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
POOL = ("pool_max", "pool_sum", "pool_count")


# -- crafted graphs (also used by tests/integration/test_hostile_model.py) --------------------


def external_tensor(name: str, location: str, n: int = N, **fields: Any) -> Any:
    """A uint8 tensor of shape (1, n) whose data onnxruntime reads from `location`."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.UINT8
    t.dims.extend([1, n])
    t.data_location = fields.get("data_location", TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def leaking_graph(location: str, n: int = N, where: str = "initializer") -> bytes:
    """An encoder-step graph as the client drives it (tokens + pooling state in, `probs` + the
    state out) whose `probs` are the first `n` bytes of the file at `location`, as floats. The
    tensor sits where `where` says: a graph initializer, a Constant node's attribute, both
    branches of an If, or a sparse initializer."""
    nodes, inits, sparse = [], [], []
    if where == "initializer":
        inits.append(external_tensor("secret", location, n))
        nodes.append(helper.make_node("Cast", ["secret"], ["probs"], to=TensorProto.FLOAT))
    elif where == "constant":
        nodes.append(
            helper.make_node("Constant", [], ["s"], value=external_tensor("v", location, n))
        )
        nodes.append(helper.make_node("Cast", ["s"], ["probs"], to=TensorProto.FLOAT))
    elif where == "if":
        branches = {}
        for branch in ("then_branch", "else_branch"):
            out = f"{branch}_out"
            branches[branch] = helper.make_graph(
                [helper.make_node("Cast", [f"{branch}_s"], [out], to=TensorProto.FLOAT)],
                branch,
                [],
                [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n])],
                initializer=[external_tensor(f"{branch}_s", location, n)],
            )
        cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
        nodes.append(helper.make_node("Constant", [], ["cond"], value=cond))
        nodes.append(helper.make_node("If", ["cond"], ["probs"], **branches))
    elif where == "sparse":
        values = external_tensor("sp", location, n)
        values.dims[:] = [n]
        idx = helper.make_tensor("sp_idx", TensorProto.INT64, [n], list(range(n)))
        sparse.append(helper.make_sparse_tensor(values, idx, [1, n]))
        nodes.append(helper.make_node("Cast", ["sp"], ["probs"], to=TensorProto.FLOAT))
    else:
        raise ValueError(where)
    nodes += [helper.make_node("Identity", [p], [f"{p}_out"]) for p in POOL]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "length"])]
    inputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, [1, 1]) for p in POOL]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, n])]
    outputs += [helper.make_tensor_value_info(f"{p}_out", TensorProto.FLOAT, [1, 1]) for p in POOL]
    graph = helper.make_graph(
        nodes, "hostile", inputs, outputs, initializer=inits, sparse_initializer=sparse
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _plain_graph() -> bytes:
    """A self-contained graph: the same shape, its tensor inside the file."""
    const = helper.make_tensor("v", TensorProto.FLOAT, [1, 2], [0.25, 0.75])
    nodes = [helper.make_node("Constant", [], ["probs"], value=const)]
    nodes += [helper.make_node("Identity", [p], [f"{p}_out"]) for p in POOL]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "length"])]
    inputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, [1, 1]) for p in POOL]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 2])]
    outputs += [helper.make_tensor_value_info(f"{p}_out", TensorProto.FLOAT, [1, 1]) for p in POOL]
    graph = helper.make_graph(nodes, "plain", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# -- finding 1: a graph with external data is refused before onnxruntime sees it --------------


@pytest.mark.parametrize("where", ["initializer", "constant", "if", "sparse"])
@pytest.mark.parametrize("location", [".env", "../x", "/etc/passwd", "link", "*/_ORT_MEM_ADDR_/*"])
def test_external_data_is_found_wherever_the_tensor_sits(where: str, location: str) -> None:
    why = external_reference(leaking_graph(location, where=where))
    assert why is not None and "external data" in why and repr(location) in why


def test_every_nesting_the_walker_reads_is_checked() -> None:
    # a function body's Constant, a training graph's initializer, a Loop body, a nested If
    ext = external_tensor("deep", ".env")
    const = helper.make_node("Constant", [], ["o"], value=ext)
    func = helper.make_function("custom", "f", [], ["o"], [const], [helper.make_opsetid("", 17)])
    model = onnx.ModelProto.FromString(_plain_graph())
    model.functions.append(func)
    assert "function > node > attribute > tensor 'deep'" in external_reference(
        model.SerializeToString()
    )
    model = onnx.ModelProto.FromString(_plain_graph())
    info = model.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[ext]))
    assert "training > graph > tensor 'deep'" in external_reference(model.SerializeToString())
    inner = helper.make_graph([const], "inner", [], [])
    outer = helper.make_graph([helper.make_node("Loop", [], [], body=inner)], "outer", [], [])
    model = onnx.ModelProto.FromString(_plain_graph())
    model.graph.node.append(helper.make_node("If", ["c"], [], then_branch=outer, else_branch=outer))
    why = external_reference(model.SerializeToString())
    assert "attribute > graph > node > attribute > graph > node > attribute > tensor" in why


def test_a_data_location_other_than_default_is_refused_even_without_entries() -> None:
    t = helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    model = onnx.ModelProto.FromString(_plain_graph())
    model.graph.initializer.append(t)
    assert "data_location 1" in external_reference(model.SerializeToString())
    # a varint that an int32 enum truncates to 1 (EXTERNAL): refused as any non-zero value
    raw = t.SerializeToString().replace(b"\x70\x01", b"\x70\x81\x80\x80\x80\x10")
    assert raw != t.SerializeToString()
    model = onnx.ModelProto.FromString(_plain_graph())
    model.graph.initializer.append(TensorProto.FromString(raw))
    assert "data_location" in external_reference(model.SerializeToString())


def test_an_epcontext_node_malformed_bytes_and_bombs_are_refused() -> None:
    model = onnx.ModelProto.FromString(_plain_graph())
    model.graph.node.append(helper.make_node("EPContext", [], [], domain="com.microsoft"))
    assert "EPContext node" in external_reference(model.SerializeToString())
    good = _plain_graph()
    assert external_reference(good) is None
    assert "not a readable ONNX model" in external_reference(good[:-3])
    assert "not a readable ONNX model" in external_reference(b"\x0b\x00")  # a group
    # subgraphs nested deeper than the bound: If inside If inside ...
    g = helper.make_graph([], "g", [], [])
    for _ in range(onnx_graph.MAX_DEPTH // 3 + 2):
        g = helper.make_graph([helper.make_node("If", ["c"], [], then_branch=g)], "g", [], [])
    model = onnx.ModelProto.FromString(_plain_graph())
    model.graph.node.append(helper.make_node("If", ["c"], [], then_branch=g))
    assert "deep" in external_reference(model.SerializeToString())


def test_the_walker_bounds_its_own_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # a hostile file of a million one-byte fields costs a bounded, measured time
    data = b"\x08\x00" * 200_000  # ModelProto.ir_version = 0, 200,000 times (the bound)
    start = time.process_time()
    assert external_reference(data) is None
    assert time.process_time() - start < 2
    monkeypatch.setattr(onnx_graph, "MAX_FIELDS", 1000)
    assert "more than 1,000 protobuf fields" in external_reference(data)


def test_the_refusal_is_an_integrity_error_naming_the_tensor_and_the_next_step() -> None:
    with pytest.raises(IntegrityError) as e:
        check_self_contained(leaking_graph(".env"), "model_int8.onnx")
    message = str(e.value)
    assert message.startswith("model_int8.onnx: refusing to load this graph")
    assert "'secret'" in message and "location '.env'" in message
    assert "configure trust" in message and e.value.exit_code == 5


def test_onnxruntime_never_reads_the_working_directory_even_past_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second layer: with the walker switched off, onnxruntime looks for external data in
    an empty private directory, so the graph fails to load instead of reading `.env`."""
    pytest.importorskip("onnxruntime")
    from pipeline.client import onnx_model

    (tmp_path / ".env").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    spec = _spec(labels=[f"b{i}" for i in range(N)])
    tok = TextTokenizer(spec)
    with pytest.raises(IntegrityError, match="external data"):
        onnx_model.OnnxClassifier(leaking_graph(".env"), tok)
    monkeypatch.setattr(onnx_model, "check_self_contained", lambda *a: None)
    with pytest.raises(Exception, match="External data path does not exist") as e:
        onnx_model.OnnxClassifier(leaking_graph(".env"), tok)
    assert SECRET[:N].decode() not in str(e.value)
    assert not list(Path(tempfile.gettempdir()).glob("onnx-no-external-data-*"))


# -- finding 2: tokenizer.json is data, bounded, and only spaCy's own when unauthenticated -----

FASTAI_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]


@pytest.fixture(scope="module")
def english() -> dict[str, Any]:
    """What the exporter writes for fastai's default tokenizer: spaCy's blank English plus
    fastai's special tokens as special cases."""
    pytest.importorskip("spacy")
    import spacy
    from spacy.symbols import ORTH

    from pipeline.onnx_export import spacy_rules_spec

    nlp = spacy.blank("en")
    for w in FASTAI_SPECIALS:
        nlp.tokenizer.add_special_case(w, [{ORTH: w}])
    return spacy_rules_spec(nlp)


def _spec(tok: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """fastai's default rules, a stock spaCy part (or `tok`) and a 5-word vocabulary."""
    fields: dict[str, Any] = {
        "format_version": 2,
        "rules": ["fix_html", "replace_rep", "spec_add_spaces", "rm_useless_spaces", "lowercase"],
        "tokenizer": tok or {"type": "spacy", "special_cases": {}},
        "special_tokens": [],
        "vocab": ["xxunk", "xxpad", "xxbos", "ab", "hello"],
        "unmapped_tokens": [],
    }
    return tokenizer_spec(**{**fields, **overrides})


def _bytes(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec).encode()


# the finding's pattern: 4.5 s on a 53-character word, ~4x per 4 more characters
REDOS = {"pattern": "(?:(?:ab)+)+$", "flags": 0}


def test_stock_english_is_recognised_and_loads_unauthenticated(english) -> None:
    assert stock_language(english) is not None
    assert stock_language(english).startswith("en")
    tok = tokenizer_from_bytes(_bytes(_spec(english)), "tokenizer.json", stock_only=True)
    assert tok.tokens("Hello, world!") == ["xxbos", "hello", ",", "world", "!"]


@pytest.mark.parametrize(
    "change",
    [
        {"token_match": REDOS},
        {"suffix_search": {"pattern": "(a|aa)+$", "flags": 0}},
        {"special_cases": {"ab": ["a", "b"]}},  # one more special case than spaCy's
        {"faster_heuristics": False},
    ],
    ids=["redos-token-match", "redos-suffix", "extra-special-case", "other-heuristics"],
)
def test_an_unauthenticated_tokenizer_other_than_spacys_is_refused_at_once(english, change) -> None:
    hostile = {**english, **change}
    if "special_cases" in change:
        hostile["special_cases"] = {**english["special_cases"], **change["special_cases"]}
    start = time.perf_counter()
    with pytest.raises(IntegrityError) as e:
        tokenizer_from_bytes(_bytes(_spec(hostile)), "tokenizer.json", stock_only=True)
    assert time.perf_counter() - start < 1.0  # nothing compiled, nothing run
    assert "not those of any stock spaCy tokenizer" in str(e.value)
    assert "signed or pinned: configure trust" in str(e.value) and e.value.exit_code == 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"vocab": ["w"] * 11}, "vocab: 11 entries, more than the 10 allowed"),
        ({"aliases": {f"w{i}": 0 for i in range(11)}}, "aliases: 11 entries, more than the 10"),
        ({"labels": ["l"] * 11}, "labels: 11 entries, more than the 10 allowed"),
        ({"rules": ["lowercase"] * 65}, "rules: 65 entries, more than the 64 allowed"),
        ({"rules": [{"name": "lowercase", "kwargs": {"add_eos": "yes"}}]}, "options are true or"),
        ({"rules": [7]}, "a rule is a name or {name, kwargs}"),
        ({"chunking": {"bptt": 0, "max_len": None}}, "chunking.bptt: expected 1 to 100,000"),
        ({"chunking": {"bptt": 72, "max_len": -1}}, "chunking.max_len: expected null or"),
        ({"unknown_id": 99}, "unknown_id: expected an id inside the vocabulary"),
        ({"vocab": ["x" * 10_001]}, "vocab[0]: expected a word of at most 10,000 characters"),
    ],
)
def test_tokenizer_bounds_hold_in_every_mode(
    monkeypatch: pytest.MonkeyPatch, overrides, message
) -> None:
    for name in ("MAX_VOCAB", "MAX_ALIASES", "MAX_LABELS"):
        monkeypatch.setattr(tokenizer_format, name, 10)
    with pytest.raises(InputError, match="malformed tokenizer file|a rule is|options are") as e:
        tokenizer_from_bytes(_bytes(_spec(**overrides)), "tokenizer.json")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"token_match": {"pattern": "a", "flags": 128}}, "token_match.flags: expected"),  # DEBUG
        ({"url_match": {"pattern": "a" * 4_000_001, "flags": 0}}, "url_match: expected"),
        ({"max_cache_size": 10**12}, "max_cache_size: expected 0 to 100,000"),
        ({"special_cases": {"a" * 257: ["a" * 257]}}, "special_cases['aaaa"),
        ({"special_cases": {"ab": ["a"] * 65}}, "expected 1 to 64 strings"),
        ({"special_cases": {f"s{i}": [f"s{i}"] for i in range(100_001)}}, "100,001 entries"),
    ],
)
def test_spacy_part_bounds_hold_in_every_mode(change, message) -> None:
    with pytest.raises(InputError) as e:
        TextTokenizer(_spec({"type": "spacy", "special_cases": {}, **change}))
    assert message in str(e.value)


def test_a_tokenizer_file_over_its_size_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.client import onnx_model

    monkeypatch.setattr(onnx_model, "MAX_TOKENIZER_SIZE", 100)
    with pytest.raises(InputError, match="more than the 100 a tokenizer file may have"):
        tokenizer_from_bytes(b" " * 101, "tokenizer.json")


# -- golden queries and the smoke test ----------------------------------------------------------


def _manifest_data(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    m = make_release_dir(tmp_path / "r")
    return {**m.to_dict(), **changes}


def test_a_manifest_with_too_many_or_too_long_golden_queries_is_refused(tmp_path: Path) -> None:
    q = {"text": "hello", "expected": "a"}
    start = time.perf_counter()
    with pytest.raises(InputError, match="golden_queries: 1,001 queries, more than the 1,000"):
        mf.Manifest.from_dict(_manifest_data(tmp_path, golden_queries=[q] * 1001))
    assert time.perf_counter() - start < 0.5
    assert (
        len(
            mf.Manifest.from_dict(
                _manifest_data(tmp_path, golden_queries=[q] * 1000)
            ).golden_queries
        )
        == 1000
    )
    long = {"text": "x" * 10_001, "expected": "a"}
    with pytest.raises(InputError, match=r"golden_queries\[0\]: a text of 10,001 characters"):
        mf.Manifest.from_dict(_manifest_data(tmp_path, golden_queries=[long]))


def test_a_manifest_declaring_a_tokenizer_over_its_size_is_refused(tmp_path: Path) -> None:
    data = _manifest_data(tmp_path)
    data["files"].append(
        {
            "name": mf.TOKENIZER_FILE,
            "size": mf.MAX_TOKENIZER_SIZE + 1,
            "blake3": "0" * 64,
            "variant": "onnx",
            "kind": "tokenizer",
        }
    )
    with pytest.raises(InputError, match="for a tokenizer file, more than the 67,108,864"):
        mf.Manifest.from_dict(data)


class FakeClock:
    """Each reading is `step` seconds after the last: a query costs `step` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_smoke_test_stops_at_its_budget(caplog: pytest.LogCaptureFixture) -> None:
    golden = [mf.GoldenQuery(f"q{i}", "a") for i in range(1000)]
    asked: list[str] = []

    def label_of(text: str) -> str:
        asked.append(text)
        return "a"

    # a query "costs" 0.3 s (a 512-token pickle predict at 1 thread): 1,000 would be 5 minutes
    passed = run_smoke_test(label_of, golden, budget=10.0, clock=FakeClock(0.3))
    assert passed == len(asked) == 34
    assert "stopped after 34 of 1000 golden queries" in caplog.text
    assert run_smoke_test(label_of, golden[:14], budget=10.0, clock=FakeClock(0.01)) == 14
    # the first query is always asked, and a wrong label still fails the load
    assert run_smoke_test(label_of, golden[:3], budget=0.0, clock=FakeClock(1.0)) == 1
    with pytest.raises(ReleaseError, match="smoke test: 'q0' gave 'a', the manifest expects 'b'"):
        run_smoke_test(label_of, [mf.GoldenQuery("q0", "b")], clock=FakeClock(0.1))


# -- finding 12: reserved names in any case, `latest` is not a version -------------------------


@pytest.mark.parametrize(
    "name", ["MODEL.SIG", "Manifest.json", "MANIFEST.JSON.sig", "model.sig.", "manifest.json."]
)
def test_reserved_names_are_refused_in_any_case(tmp_path: Path, name: str) -> None:
    data = _manifest_data(tmp_path)
    data["files"][0]["name"] = name
    with pytest.raises(InputError, match=re.escape(f"{name!r} is reserved for the manifest")):
        mf.Manifest.from_dict(data)


def test_names_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    data = _manifest_data(tmp_path)
    data["files"].append({**data["files"][0], "name": data["files"][0]["name"].upper()})
    with pytest.raises(InputError, match="differ only in case"):
        mf.Manifest.from_dict(data)


@pytest.mark.parametrize("version", ["latest", "LATEST", "Latest"])
def test_latest_is_not_a_version(tmp_path: Path, version: str) -> None:
    with pytest.raises(InputError, match="is the name of the pointer to the newest version"):
        mf.Manifest.from_dict(_manifest_data(tmp_path, version=version))
    assert not mf.is_safe_version(version)
    with pytest.raises(InputError, match="names the pointer to the newest version"):
        _check_name("version", version)
    assert _check_name("model", version) == version  # a model may be called that
