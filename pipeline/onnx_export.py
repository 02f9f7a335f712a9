"""The ONNX variant, build side: the tokenizer file, the encoder-step graph, INT8, and parity.

`tokenizer.json` is read from the learner itself (`pipeline/client/learner_spec.py`, which the
client uses too: its fastai Tokenizer transform, the pickled spaCy tokenizer inside it, its
Numericalize vocabulary), never from defaults, so it describes the model being released. The graph is one step of fastai's SentenceEncoder loop (see `EncoderStep`):
the client feeds a text chunk by chunk, carrying the LSTM states and the pooling sums, which is
what fastai does for texts of any length.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.learner_spec import (  # the tokenizer file's content, read off a learner
    spacy_rules_spec,
    tokenizer_spec,
    tokenizer_transforms,
)
from pipeline.client.tokenizer import TextTokenizer
from pipeline.errors import InputError

log = logging.getLogger("pipeline.onnx")
OPSET = 17
__all__ = ["spacy_rules_spec", "tokenizer_spec"]  # re-exported: the build imports them from here


def unsupported_reason(learn: Any) -> str | None:
    """Why the onnx variant cannot reproduce this learner (one sentence), or None when it can.

    Checks what the export needs: fastai's SpacyTokenizer with fastai's own rules, a vocabulary
    the client can index, and fastai's PoolingLinearClassifier head over plain LSTM layers.
    """
    from fastai.text.models.core import PoolingLinearClassifier

    try:
        tokenizer_spec(learn)
    except InputError as e:
        return str(e)
    head = learn.model[1]
    if not isinstance(head, PoolingLinearClassifier):
        return (
            f"the classifier head is {type(head).__name__}; the onnx graph reproduces fastai's "
            "PoolingLinearClassifier only"
        )
    for rnn in learn.model[0].module.rnns:
        inner = getattr(rnn, "module", rnn)
        if getattr(inner, "bidirectional", False):
            return "the AWD_LSTM is bidirectional; the onnx graph carries one direction only"
    return None


def reference_ids(learn: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids as fastai computes them in `learn.predict` (Tokenizer.encodes, Numericalize)."""
    tok, num = tokenizer_transforms(learn)
    return [[int(i) for i in num(tok(t))] for t in texts]


@dataclass(frozen=True)
class ParityDifference:
    index: int
    text: str
    fastai_tokens: list[str]
    client_tokens: list[str]
    fastai_ids: list[int]
    client_ids: list[int]

    def describe(self) -> str:
        """One readable line: the text and the first position where the tokens differ."""
        a, b = self.fastai_tokens, self.client_tokens
        k = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        return (
            f"text {self.index} {self.text[:80]!r}: token {k}: fastai {a[k : k + 3]!r} "
            f"(ids {self.fastai_ids[k : k + 3]}), client {b[k : k + 3]!r} (ids {self.client_ids[k : k + 3]})"
        )


def token_parity(
    learn: Any, tokenizer: TextTokenizer, texts: Sequence[str]
) -> list[ParityDifference]:
    """Every text whose client token ids differ from fastai's, in input order."""
    tok, num = tokenizer_transforms(learn)
    out = []
    for i, text in enumerate(texts):
        ref_tokens = [str(t) for t in tok(text)]
        ref = [int(x) for x in num(ref_tokens)]
        mine = tokenizer.ids(text)
        if mine != ref:
            out.append(ParityDifference(i, text, ref_tokens, tokenizer.tokens(text), ref, mine))
    return out


# --- the graph --------------------------------------------------------------------------------


def _encoder_step(stripped_model: Any) -> Any:
    """An nn.Module for one SentenceEncoder chunk plus the classifier head (see module doc)."""
    import torch
    from torch import nn

    awd = stripped_model[0].module
    head = stripped_model[1]
    for rnn in awd.rnns:
        if not isinstance(rnn, nn.LSTM):
            raise InputError(
                f"expected plain nn.LSTM layers after stripping, found {type(rnn).__name__}"
            )

    class EncoderStep(nn.Module):
        """tokens (1, L) + per-layer (h, c) + pooling state -> probs + new states.

        fastai's SentenceEncoder runs AWD_LSTM on chunks of bptt tokens, carrying the hidden
        state, and PoolingLinearClassifier pools [last output, max, mean] over the outputs it
        kept. Here the max and the sum/count of outputs are carried between calls like the LSTM
        state, so the probabilities after the last chunk are fastai's, for any length.
        """

        def __init__(self) -> None:
            super().__init__()
            self.embedding = awd.encoder
            self.rnns = nn.ModuleList(awd.rnns)
            self.layers = head.layers

        def forward(self, tokens, *state):  # noqa: ANN001, ANN202
            n = len(self.rnns)
            hs, cs = state[0 : 2 * n : 2], state[1 : 2 * n : 2]
            pool_max, pool_sum, pool_count = state[2 * n :]
            x = self.embedding(tokens)  # dropouts are identities at eval: left out
            new_state = []
            for rnn, h, c in zip(self.rnns, hs, cs, strict=True):
                x, (h2, c2) = rnn(x, (h, c))
                new_state += [h2, c2]
            new_max = torch.maximum(pool_max, x.max(dim=1).values)
            new_sum = pool_sum + x.sum(dim=1)
            new_count = pool_count + x.shape[1]
            pooled = torch.cat([x[:, -1], new_max, new_sum / new_count], dim=1)
            probs = torch.softmax(self.layers(pooled), dim=-1)
            return (probs, *new_state, new_max, new_sum, new_count)

    step = EncoderStep()
    step.eval()
    return step


def state_names(n_layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the carried state, in graph order."""
    ins = [f"{k}_{i}" for i in range(n_layers) for k in ("h", "c")]
    ins += ["pool_max", "pool_sum", "pool_count"]
    return ins, [f"{n}_out" for n in ins]


def export_fp32(stripped: Any, path: Path) -> Path:
    """Export the stripped learner's model as the float32 encoder-step graph (opset 17)."""
    import torch

    step = _encoder_step(stripped.model)
    n = len(step.rnns)
    state = []
    for rnn in step.rnns:
        state += [torch.zeros(1, 1, rnn.hidden_size), torch.zeros(1, 1, rnn.hidden_size)]
    out_sz = step.rnns[-1].hidden_size  # the last layer's outputs are what is pooled
    state += [torch.full((1, out_sz), float("-inf")), torch.zeros(1, out_sz), torch.zeros(1, 1)]
    # any ids inside every vocabulary (xxbos, xxunk); the length and batch axes are dynamic
    tokens = torch.tensor([[2, 0, 0, 0]], dtype=torch.long)
    ins, outs = state_names(n)
    # the batch axis is dynamic too, so a server can run texts of one length together
    # (client/onnx_model.py predict_batch); one text at a time gives the same numbers as before
    batch = {name: {1 if name[0] in "hc" else 0: "batch"} for name in (*ins, *outs)}
    dynamic = {"tokens": {0: "batch", 1: "length"}, "probs": {0: "batch"}, **batch}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            (tokens, *state),
            str(path),
            input_names=["tokens", *ins],
            output_names=["probs", *outs],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return path


def quantize_int8(fp32: Path, int8: Path) -> Path:
    """Dynamic INT8 quantization of the graph's weights with onnxruntime's quantizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs a generic "consider pre-processing" advice on the root logger; measured
    # here, pre-processing changes neither size, agreement nor speed of this graph.
    root = logging.getLogger()
    quiet = _DropMessage("pre-processing before quantization")
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    return int8


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


# --- the stock tokenizers an unauthenticated tokenizer.json may be ---------------------------

STOCK_TABLE = Path(__file__).parent / "client" / "spacy_stock.py"


def stock_tokenizer_digests() -> dict[str, str]:
    """`stock_digest` -> "lang (spaCy x.y.z)" for every language whose blank spaCy tokenizer
    this exporter can write (those needing another library, e.g. Japanese, are left out)."""
    import pkgutil

    import spacy
    import spacy.lang

    from pipeline.client.tokenizer import stock_digest

    langs: dict[str, list[str]] = {}
    for module in sorted(pkgutil.iter_modules(spacy.lang.__path__), key=lambda m: m.name):
        if not module.ispkg:
            continue
        try:
            spec = spacy_rules_spec(spacy.blank(module.name))
        except (ImportError, InputError):
            continue
        langs.setdefault(stock_digest(spec), []).append(module.name)
    return {k: f"{', '.join(v)} (spaCy {spacy.__version__})" for k, v in langs.items()}


def write_stock_table(path: Path = STOCK_TABLE) -> Path:
    """Add this spaCy's stock tokenizers to pipeline/client/spacy_stock.py (entries of other
    spaCy versions stay: servers may load releases built with them)."""
    from pipeline import atomic
    from pipeline.client.spacy_stock import STOCK

    table = {**STOCK, **stock_tokenizer_digests()}
    lines = "".join(f'    "{k}": "{v}",\n' for k, v in sorted(table.items(), key=lambda kv: kv[1]))
    head = path.read_text(encoding="utf-8").split("STOCK: dict[str, str] = {")[0]
    atomic.write_text(path, head + "STOCK: dict[str, str] = {\n" + lines + "}\n")
    return path
