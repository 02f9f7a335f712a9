"""The ONNX variant on a server: onnxruntime + numpy + tokenizer.json, no torch, fastai or pickle.

`model_int8.onnx` is one step of fastai's SentenceEncoder (see pipeline/onnx_export.py): token ids
of one chunk plus the carried state in, class probabilities plus the new state out. `predict`
runs a text through it chunk by chunk, as fastai does, so long texts get fastai's answer too.
Nothing here executes code from the downloaded files: the graph is data for onnxruntime and the
tokenizer file is JSON. Both are hostile input unless the manifest was authenticated: the graph
is refused if any tensor in it points outside its own bytes (`onnx_graph`), and is loaded with
external data resolved only inside an empty private directory; an unauthenticated tokenizer
must be one of spaCy's stock tokenizers (`spacy_stock`), and every tokenizer file is bounded
in size and content (`tokenizer.spec_problems`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.onnx_graph import check_self_contained
from pipeline.client.release import FetchResult, read_verified
from pipeline.client.tokenizer import TextTokenizer, stock_language
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError
from pipeline.manifest import MAX_TOKENIZER_SIZE


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the label, its index and every class's probability."""

    label: str
    index: int
    probs: Any  # numpy array (n_classes,), classes in `OnnxClassifier.labels` order


class OnnxClassifier:
    """A text classifier served by onnxruntime.

    Args:
        model_path: the release's model_int8.onnx, or its verified bytes.
        tokenizer: the release's tokenizer (or a path to its tokenizer.json).
        threads: onnxruntime intra-op threads (1 is best for one query at a time).

    Raises:
        IntegrityError: the graph has a tensor whose data lives outside it (external data).
        InputError: the graph's inputs are not the encoder-step graph this client drives.
    """

    def __init__(
        self, model_path: Path | bytes, tokenizer: TextTokenizer | Path, *, threads: int = 1
    ) -> None:
        import numpy as np
        import onnxruntime as ort

        self._np = np
        t0 = time.perf_counter()
        self.tokenizer = (
            tokenizer
            if isinstance(tokenizer, TextTokenizer)
            else TextTokenizer.from_file(tokenizer)
        )
        name = "model_int8.onnx" if isinstance(model_path, bytes) else str(model_path)
        model = model_path if isinstance(model_path, bytes) else Path(model_path).read_bytes()
        check_self_contained(model, name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The bytes are an ONNX protobuf (never onnxruntime's own format, which the check above
        # does not read), and should anything still name external data, onnxruntime looks for
        # it in an empty directory of our own, not in the working directory.
        opts.add_session_config_entry("session.load_model_format", "ONNX")
        nowhere = tempfile.mkdtemp(prefix="onnx-no-external-data-")
        try:
            opts.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", nowhere
            )
            self.session = ort.InferenceSession(
                model, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        finally:
            shutil.rmtree(nowhere, ignore_errors=True)
        self.labels = self.tokenizer.labels
        self._init_state(name)
        self.load_seconds = time.perf_counter() - t0

    def _init_state(self, model_path: Path | str) -> None:
        np = self._np
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "tokens" not in inputs or "pool_count" not in inputs:
            raise InputError(
                f"{model_path}: inputs {sorted(inputs)} are not those of a fastai-release "
                "encoder-step graph (tokens, h_i/c_i, pool_*)"
            )
        self._state_names = [n for n in inputs if n != "tokens"]
        # graphs built before batches (batch axis fixed at 1) run a batch one text at a time
        self._batch_axes = [
            next((i for i, d in enumerate(inputs[n].shape) if not isinstance(d, int)), None)
            for n in self._state_names
        ]
        self.batched = (
            not isinstance(inputs["tokens"].shape[0], int) and None not in self._batch_axes
        )
        outputs = [o.name for o in self.session.get_outputs()]
        expected = ["probs", *(f"{n}_out" for n in self._state_names)]
        if outputs != expected:
            raise InputError(f"{model_path}: outputs {outputs}, expected {expected}")
        self._initial = []
        for name in self._state_names:
            shape = [d if isinstance(d, int) else 1 for d in inputs[name].shape]
            fill = -np.inf if name == "pool_max" else 0.0
            self._initial.append(np.full(shape, fill, dtype=np.float32))
        n_pool = 3
        self._n_carried = len(self._state_names) - n_pool
        if len(self.labels) != self.session.get_outputs()[0].shape[-1]:
            raise InputError(
                f"{model_path}: {self.session.get_outputs()[0].shape[-1]} classes, the tokenizer "
                f"file names {len(self.labels)}"
            )

    def probabilities(self, ids: Sequence[int]) -> Any:
        """Class probabilities for one text's token ids (fastai's SentenceEncoder loop): a batch
        of one, on either graph."""
        np = self._np
        return self.probabilities_same_length(np.asarray(ids, dtype=np.int64).reshape(1, -1))[0]

    def probabilities_same_length(self, rows: Sequence[Sequence[int]]) -> Any:
        """Class probabilities of several texts of the same number of tokens, in one run of
        the graph per chunk (more than one: the batch-axis-dynamic graph; see `batched`):
        (n, n_classes). Chunks more than max_len tokens from the end carry the LSTM state and
        restart the pooling, as fastai drops their outputs."""
        np = self._np
        ids = np.asarray(rows, dtype=np.int64)
        n, sl = ids.shape
        if sl == 0:
            raise InputError("an empty token sequence has no prediction")
        bptt, max_len = self.tokenizer.chunking.bptt, self.tokenizer.chunking.max_len
        initial = self._initial  # a batch of one runs on either graph
        if n > 1:
            initial = [
                np.repeat(s, n, axis=axis)
                for s, axis in zip(self._initial, self._batch_axes, strict=True)
            ]
        state, k, probs = list(initial), self._n_carried, None
        for i in range(0, sl, bptt):
            feed = dict(zip(self._state_names, state, strict=True))
            feed["tokens"] = ids[:, i : i + bptt]
            out = self.session.run(None, feed)
            probs = out[0]
            if max_len is None or sl - i <= max_len:
                state = out[1:]
            else:
                state = [*out[1 : 1 + k], *initial[k:]]
        return probs

    def predict_batch(
        self, texts: Sequence[str], *, batch_size: int = 64
    ) -> list[tuple[str, dict[str, float]]]:
        """`self(text)` for every text, in input order. With a batch-axis-dynamic graph, texts
        of the same number of tokens run together, `batch_size` at most (the graph pools every
        token it reads, so padding would change the answer); an older graph runs them one by
        one. Each text is checked against the tokenizer's input limits first.

        Raises:
            InputTooLarge: a text is over the limits (nothing was run).
        """
        ids = [self.tokenizer.ids(t) for t in texts]
        out: list[Any] = [None] * len(ids)
        if not self.batched:
            for i, row in enumerate(ids):
                out[i] = self.probabilities(row)
        else:
            by_length: dict[int, list[int]] = {}
            for i, row in enumerate(ids):
                by_length.setdefault(len(row), []).append(i)
            step = max(1, batch_size)
            for group in by_length.values():
                for start in range(0, len(group), step):
                    rows = group[start : start + step]
                    if len(rows) == 1:
                        out[rows[0]] = self.probabilities(ids[rows[0]])
                        continue
                    probs = self.probabilities_same_length([ids[i] for i in rows])
                    for j, i in enumerate(rows):
                        out[i] = probs[j]
        answers = []
        for p in out:
            i = int(p.argmax())
            answers.append(
                (self.labels[i], dict(zip(self.labels, (float(x) for x in p), strict=True)))
            )
        return answers

    def predict(self, text: str) -> Prediction:
        """The label, index and probabilities for `text`."""
        probs = self.probabilities(self.tokenizer.ids(text))
        i = int(probs.argmax())
        return Prediction(self.labels[i], i, probs)

    def __call__(self, text: str) -> tuple[str, dict[str, float]]:
        """`(label, {label: probability})`, the shape of the client's `LoadedModel.predict`."""
        p = self.predict(text)
        return p.label, dict(zip(self.labels, (float(x) for x in p.probs), strict=True))


def load_verified(fetched: FetchResult, *, threads: int = 1) -> OnnxClassifier:
    """The onnx variant of a fetched release, from the very bytes checked against the manifest
    (each file is read once, hashed, and parsed from that buffer).

    An unauthenticated manifest's tokenizer must be a stock spaCy one (see `spacy_stock`); an
    authenticated or local one may hold the publisher's own patterns.

    Raises:
        IntegrityError: the graph or the tokenizer file no longer matches the manifest, the
            graph reads data from outside itself, or the manifest is not authenticated and the
            tokenizer is not a stock one.
        ArtifactNotFound: the release lists no tokenizer for the onnx variant.
        InputError: the files are not an encoder-step graph and tokenizer this client drives.
    """
    manifest = fetched.manifest
    entries = [manifest.variant(fetched.variant), *manifest.companions(fetched.variant)]
    paths = {p.name: p for p in (fetched.path, *fetched.companions)}
    tokenizer = next((e for e in entries if e.kind == "tokenizer"), None)
    if tokenizer is None or tokenizer.name not in paths:
        raise ArtifactNotFound(
            f"{manifest.model} {manifest.version}: the onnx variant has no tokenizer file in the "
            "manifest; it was built by an older fastai-release: rebuild the release"
        )
    data: dict[str, bytes] = {}
    for entry in entries:
        path = paths.get(entry.name)
        if path is None:
            raise IntegrityError(f"{entry.name}: not fetched; refusing to load the onnx variant")
        if entry.kind == "tokenizer" and entry.size > MAX_TOKENIZER_SIZE:
            raise InputError(
                f"{entry.name}: {entry.size:,} bytes, more than the {MAX_TOKENIZER_SIZE:,} a "
                "tokenizer file may have; refusing to load the onnx variant"
            )
        data[entry.name] = read_verified(path, entry)
    tok = tokenizer_from_bytes(
        data[tokenizer.name],
        str(paths[tokenizer.name]),
        stock_only=not (fetched.authenticated or fetched.local),
    )
    return OnnxClassifier(data[fetched.path.name], tok, threads=threads)


def tokenizer_from_bytes(data: bytes, source: str, *, stock_only: bool = False) -> TextTokenizer:
    """A tokenizer from the verified bytes of its tokenizer.json; with `stock_only`, only one
    whose spaCy part is a stock spaCy tokenizer (for a manifest nobody vouched for).

    Raises:
        InputError: not valid JSON, too large, or not a tokenizer file this version reads.
        IntegrityError: `stock_only` and the spaCy part is not one of spaCy's own (exit 5).
    """
    if len(data) > MAX_TOKENIZER_SIZE:
        raise InputError(
            f"{source}: {len(data):,} bytes, more than the {MAX_TOKENIZER_SIZE:,} a tokenizer "
            "file may have"
        )
    try:
        spec = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{source}: not a readable tokenizer file ({e})") from e
    if not isinstance(spec, dict):
        raise InputError(f"{source}: expected a JSON object")
    tok = spec.get("tokenizer")
    if stock_only and isinstance(tok, dict) and stock_language(tok) is None:
        raise IntegrityError(
            f"{source}: its spaCy patterns and special cases are not those of any stock spaCy "
            "tokenizer this client knows, and its manifest is not authenticated: refusing to "
            "run its regular expressions on queries (one could take hours). A release "
            "tokenized by a customized spaCy loads when its manifest is signed or pinned: "
            "configure trust (--public-key, --certificate-chain, --keyless or --identity, "
            "--pin), or fetch it from a directory of your own"
        )
    try:
        return TextTokenizer(spec, source)
    except (KeyError, TypeError, AttributeError, re.error) as e:
        raise InputError(f"{source}: malformed tokenizer file ({type(e).__name__}: {e})") from e
