"""Model surgery and INT8 quantization for fastai AWD_LSTM classifiers.

The naive recipe (`quantize_dynamic(model, {Linear, LSTM})`) keeps WeightDropout's fp32 `*_raw`
copies and the fp32 embedding, so it barely shrinks or speeds the model. Ours:

1. `strip`: a deep copy in eval mode, each WeightDropout(LSTM) replaced by a plain nn.LSTM that
   holds the raw weights, EmbeddingDropout replaced by the embedding itself (they are the same
   thing at eval), one float parameter kept on the encoder (fastai's `one_param` reads its dtype).
2. `quantize`: dynamic INT8 for LSTM and Linear, 8-bit row-wise (float qparams) for the embedding,
   then the encoder's `encoder_dp` pointed back at the single quantized embedding (stored once),
   behind a `.contiguous()` (see `contiguous_embedding`).

Everything left in the model is a torch or fastai class, so the pickle loads with plain fastai.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

log = logging.getLogger("pipeline.quantize")


def _awd_lstm(learn: Any) -> Any:
    return learn.model[0].module


def _plain_lstm(wd: Any) -> Any:
    """An nn.LSTM equal to WeightDropout(`wd`) at eval, holding the raw (undropped) weights."""
    import torch
    from torch import nn

    inner = wd.module
    lstm = nn.LSTM(
        inner.input_size,
        inner.hidden_size,
        num_layers=inner.num_layers,
        bias=inner.bias,
        batch_first=inner.batch_first,
        bidirectional=inner.bidirectional,
    )
    state = {}
    for name in lstm.state_dict():
        raw = getattr(wd, f"{name}_raw", None)
        src = raw if raw is not None else getattr(inner, name)
        state[name] = src.detach().clone()
    lstm.load_state_dict(state)
    lstm.eval()
    with torch.no_grad():
        lstm.flatten_parameters()
    return lstm


def detach_batch_state(learn: Any) -> None:
    """Detach the last batch's tensors that a learner and its callbacks keep (the learner's
    `pred`/`loss_grad`, fastai's RNNCallback `out`/`raw_out`, ...).

    A validation pass overwrites them with graph-free tensors; after a fit without one
    (`valid_pct = 0`) they still carry the training step's autograd graph, which deepcopy and
    pickling refuse.
    """
    import torch

    def detached(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.grad_fn is not None:
            return v.detach()
        if isinstance(v, (list, tuple)) and any(
            isinstance(x, torch.Tensor) and x.grad_fn is not None for x in v
        ):
            return type(v)(detached(x) for x in v)
        return v

    for obj in (learn, *getattr(learn, "cbs", ())):
        for name, value in list(vars(obj).items()):
            new = detached(value)
            if new is not value:
                setattr(obj, name, new)


def _copy_learner(learn: Any) -> Any:
    """A deep copy of a learner in eval mode, sharing its DataLoaders and without its optimizer."""
    import torch
    from fastai.text.models.awdlstm import WeightDropout

    # After training, WeightDropout leaves non-leaf tensors (dropout of the raw weights) on the
    # wrapped LSTM, which deepcopy refuses; they are recomputed on every forward, so detach them.
    for m in learn.model.modules():
        if isinstance(m, WeightDropout):
            for layer in m.layer_names:
                with torch.no_grad():
                    setattr(m.module, layer, getattr(m, f"{layer}_raw").detach().clone())
    detach_batch_state(learn)
    dls, opt = learn.dls, learn.opt
    learn.dls, learn.opt = None, None
    try:
        new = copy.deepcopy(learn)
    finally:
        learn.dls, learn.opt = dls, opt
    new.dls = dls
    new.model.eval()  # before any forward: dropout masks must never be drawn
    return new


def strip(learn: Any) -> Any:
    """A copy of `learn` without training-only wrappers, in eval mode, float32.

    The optimizer and training callbacks' state are dropped; the DataLoaders are shared (they are
    emptied on export anyway).
    """
    import torch
    from fastai.text.models.awdlstm import EmbeddingDropout, WeightDropout
    from torch import nn

    new = _copy_learner(learn)
    awd = _awd_lstm(new)
    for i, rnn in enumerate(awd.rnns):
        if isinstance(rnn, WeightDropout):
            awd.rnns[i] = _plain_lstm(rnn)
    if isinstance(awd.encoder_dp, EmbeddingDropout):
        awd.encoder_dp = awd.encoder
    # `one_param(awd)` creates the hidden state with its dtype/device: keep one float parameter
    # even when every weight below becomes a packed INT8 buffer.
    if not hasattr(awd, "dtype_anchor"):
        awd.dtype_anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
    awd.reset()
    new.model.eval()
    return new


def naive_quantize(learn: Any) -> Any:
    """The common recipe: dynamic INT8 of LSTM and Linear on the unstripped model (for comparison)."""
    import torch
    from torch import nn

    new = _copy_learner(learn)
    new.model = torch.ao.quantization.quantize_dynamic(
        new.model, {nn.LSTM, nn.Linear}, dtype=torch.qint8
    )
    return new


def select_engine(wanted: str) -> str:
    """Set torch's quantized engine ("auto" picks x86, then fbgemm, then qnnpack) and return it."""
    import torch

    supported = list(torch.backends.quantized.supported_engines)
    if wanted == "auto":
        for name in ("x86", "fbgemm", "qnnpack", "onednn"):
            if name in supported:
                wanted = name
                break
    if wanted not in supported:
        from pipeline.errors import InputError

        raise InputError(
            f"quantize.engine: {wanted!r} is not supported by this torch build (supported: {', '.join(supported)})"
        )
    torch.backends.quantized.engine = wanted
    return wanted


def quantize(stripped: Any, modules: tuple[str, ...]) -> Any:
    """INT8 copy of a stripped learner. `modules` is a subset of ("lstm", "linear", "embedding")."""
    import torch
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig

    new = strip(stripped)  # a fresh deep copy (strip is idempotent on a stripped learner)
    awd = _awd_lstm(new)
    shared_dp = awd.encoder_dp is awd.encoder
    if shared_dp:
        del awd.encoder_dp  # quantize the embedding once, then alias it again
    spec: dict[Any, Any] = {}
    if "lstm" in modules:
        spec[nn.LSTM] = default_dynamic_qconfig
    if "linear" in modules:
        spec[nn.Linear] = default_dynamic_qconfig
    if "embedding" in modules:
        spec[nn.Embedding] = float_qparams_weight_only_qconfig
    model = torch.ao.quantization.quantize_dynamic(new.model, spec, dtype=torch.qint8)
    awd = model[0].module
    if shared_dp:
        awd.encoder_dp = (
            contiguous_embedding(awd.encoder) if "embedding" in modules else awd.encoder
        )
    awd.reset()
    model.eval()
    new.model = model
    return new


def contiguous_embedding(embedding: Any) -> Any:
    """`embedding` behind a `.contiguous()` of its indices, built from torch and fastai classes.

    fastai's SentenceEncoder feeds a text longer than `seq_len` to the AWD_LSTM in slices
    `input[:real_bs, i:i + seq_len]` of the batch: for a batch of several texts such a slice is
    not contiguous, and the quantized embedding's op (`quantized::embedding_byte`) refuses it
    ("Expect weight, indices, and offsets to be contiguous"); one text at a time (a 1-row slice)
    happens to be contiguous. A subclass of ours would make the pickle need this package to
    load, so the wrapper is `nn.Sequential(fastai.layers.Lambda(torch.Tensor.contiguous), emb)`:
    plain `load_learner` reads it, and the embedding is the same object (pickled once).
    """
    import torch
    from fastai.layers import Lambda
    from torch import nn

    return nn.Sequential(Lambda(torch.Tensor.contiguous), embedding)


def float_tensor_bytes(model: Any) -> int:
    """Bytes of every distinct tensor storage a float model holds: parameters, buffers and plain
    tensor attributes (WeightDropout keeps its dropped-out copies as attributes, outside the
    state dict, and they are pickled too)."""
    import torch

    seen: set[int] = set()
    total = 0
    for m in model.modules():
        tensors = [*m._parameters.values(), *m._buffers.values()]
        tensors += [v for v in vars(m).values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            if t is None or t.is_quantized:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
