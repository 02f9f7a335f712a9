"""`learn.predict` for one text without fastai's per-call DataLoader.

`learn.predict` builds a test DataLoader, runs the callback machinery of `get_preds` and decodes
a batch on every call, a fixed cost of a few milliseconds. This does the same arithmetic with
the learner's own objects: its tokenizer and numericalizer (the validation transforms from the
first one that accepts a string, as `test_dl` picks them), the DataLoader's own batch
transforms, one forward pass under `torch.inference_mode`, the loss function's activation and
decoding. The results are identical to `learn.predict` (the client checks one golden query at
load time and falls back to `learn.predict` if they ever differ).

Tokenization: fastai's Tokenizer runs spaCy, whose suffix search is quadratic in a run without
whitespace (a 1,000-character run of `)]` costs it about a second). The predictor therefore
tokenizes with the client's linear port (`pipeline.client.tokenizer`), built from the learner's
own rules, spaCy patterns and vocabulary, after checking at construction that it gives fastai's
ids on a set of probe texts; where it does not apply, fastai's transforms are used. Every text is
checked against `InputLimits` first, on either path, and `learner_predict` (plain `learn.predict`,
for learners this fast path does not apply to) checks them too.

Threads: every forward pass here runs with a set number of torch intra-op threads (default 1,
`$RELEASE_TORCH_THREADS` through the client), see `torch_threads`. Measured on this project's
2-core machines, a 512-token predict of the tiny release took 0.25 s at 1 thread and 4.7 s at
torch's default of 2 while other processes competed for the cores: an LSTM over one text is a
chain of small matrix products, where a second thread mostly waits for the first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.client.limits import InputLimits
from pipeline.errors import InputError

log = logging.getLogger("pipeline.client")
DEFAULT_THREADS = (
    1  # torch threads per predict (ClientSettings.torch_threads: RELEASE_TORCH_THREADS)
)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count at `n`, then put back the count the
    calling thread had.

    torch.set_num_threads is not private to a model: with torch's OpenMP backend (the Linux and
    Windows wheels) it sets the calling thread's count and the default that threads starting
    torch work afterwards pick up; with other backends it sets the whole process's. So a host
    application's own torch work in another thread may run at `n` threads while a prediction
    is inside this block; after it, the previous count is back. Measured: setting and restoring
    around each call costs nothing visible next to a prediction (0.24 s with, 0.25 s without,
    for 512 tokens of the tiny release).
    """
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Texts that reach the branches of spaCy's algorithm and fastai's rules: the port must give
# fastai's ids on every one of them before the predictor uses it.
PROBES = (
    "where is the credit check done when an order is released?",
    "Hello WORLD!! it's (e.g.) http://example.com/a?b=1, x@y.com :) a.m. 10km",
    "don't can't 'cause o'clock ''quoted'' “curly” naïve 日本語 😀 <br /> &amp; #tag a/b",
    "the the the the  word  aaaa ERP SQL API's xxbos xxmaj \n\t end...",
)


class _NonGrowingLookup(defaultdict):
    """fastai's `Numericalize.o2i` (a defaultdict) that answers an unknown word without adding it.

    fastai looks every token up with `o2i[token]`, so a defaultdict keeps each unknown word a
    server is ever asked (mapped to xxunk): memory that grows with every distinct typo, ID and
    number in its traffic. Same ids, no growth. Pickles as a plain defaultdict, so a learner
    exported after a Predictor was built on it never needs this module to load.
    """

    def __missing__(self, key: Any) -> Any:
        if self.default_factory is None:
            raise KeyError(key)
        return self.default_factory()

    def __reduce__(self) -> Any:
        return (defaultdict, (self.default_factory,), None, None, iter(self.items()))


def _stop_lookup_growth(transforms: Any) -> None:
    for f in transforms:
        o2i = getattr(f, "o2i", None)
        if type(o2i) is defaultdict:
            f.o2i = _NonGrowingLookup(o2i.default_factory, o2i)


def stop_lookup_growth(learn: Any) -> None:
    """Every vocabulary lookup in `learn`'s data pipeline stops adding the unknown words it is
    asked, whatever predicts with it later (learn.predict included), even for a learner the
    Predictor does not apply to. Walks the train and valid Datasets' transform pipelines (fastai
    shares them with the DataLoaders learn.predict builds)."""
    dls = getattr(learn, "dls", None)
    for ds in (getattr(dls, "train_ds", None), getattr(dls, "valid_ds", None)):
        for tl in getattr(ds, "tls", None) or ([ds] if ds is not None else []):
            fs = getattr(getattr(tl, "tfms", None), "fs", None)
            if fs:
                _stop_lookup_growth(fs)


class UnsupportedLearner(Exception):
    """The learner is not a single-input text classifier this fast path understands."""


class Predictor:
    """`predict(text) -> (label, {label: probability})` for a fastai text classifier.

    Thread-safe: the forward pass is serialised, since AWD_LSTM keeps its hidden state on
    the module (as `learn.predict` does; it is not thread-safe at all). Each forward pass runs
    at `threads` torch intra-op threads (default 1), set for the call and restored after it:
    see `torch_threads` for what that means to a host application's own torch work.

    Raises:
        UnsupportedLearner: from the constructor, when the learner's data pipeline is not a
            single text input with categorical labels.
    """

    def __init__(
        self, learn: Any, *, limits: InputLimits | None = None, threads: int = DEFAULT_THREADS
    ):
        import torch

        self._torch = torch
        dls = learn.dls
        ds = getattr(dls, "valid_ds", None)
        if getattr(dls, "n_inp", 1) != 1 or not hasattr(ds, "tls") or not ds.tls:
            raise UnsupportedLearner("expected a Datasets with one text input")
        tl = ds.tls[0]
        try:
            start = tl.infer_idx("a text")
        except Exception as e:
            raise UnsupportedLearner(f"no transform of the input accepts a str: {e}") from e
        encode = tl._new([], split_idx=1)  # what test_set() builds for learn.predict
        encode.tfms.fs = encode.tfms.fs[start:]
        self._encode = encode.tfms
        _stop_lookup_growth(self._encode.fs)  # fastai's path (and learn.predict) too
        self.limits = InputLimits() if limits is None else limits
        self.threads = threads  # torch intra-op threads of every forward pass (torch_threads)
        self._learn = learn
        self._port_state: tuple[Any] | None = None  # (port or None,) once built, on first use
        self._port_lock = threading.Lock()
        self._dl = dls.valid
        self._model = learn.model
        loss = learn.loss_func
        self._activation = getattr(loss, "activation", None) or (lambda x: torch.softmax(x, -1))
        self._decodes = getattr(loss, "decodes", None) or (lambda x: x.argmax(-1))
        vocab = dls.vocab
        labels = vocab[-1] if len(vocab) and isinstance(vocab[0], list | tuple) else vocab
        self.labels = tuple(str(x) for x in labels)
        if len(self.labels) < 2:
            raise UnsupportedLearner(f"expected class labels, found {self.labels!r}")
        self._lock = threading.Lock()

    @property
    def port(self) -> Any:
        """The linear tokenizer this predictor uses, or None (fastai's transforms are used).
        Built on first use (about 60-120 ms of CPU for the demo model), not at load."""
        if self._port_state is None:
            with self._port_lock:
                if self._port_state is None:
                    self._port_state = (self._linear_port(self._learn),)
        return self._port_state[0]

    def _linear_port(self, learn: Any) -> Any:
        """The client's tokenizer when it reproduces this learner's Tokenizer + Numericalize on
        the probes, else None (fastai's transforms are used)."""
        from fastai.text.core import Tokenizer
        from fastai.text.data import Numericalize

        from pipeline.client.learner_spec import tokenizer_spec
        from pipeline.client.tokenizer import TextTokenizer

        fs = list(self._encode.fs)
        kinds = [type(f) for f in fs]
        if kinds != [Tokenizer, Numericalize]:  # exactly these two, in this order
            return None
        tok, num = fs
        o2i = num.o2i
        unk = o2i.default_factory() if getattr(o2i, "default_factory", None) else 0
        try:
            # fastai's Numericalize looks words up in a defaultdict, which adds every unknown
            # word it is asked (mapped to xxunk): a learner that has predicted holds them. The
            # spec leaves them out (they change no id), and the check below looks up without
            # adding any.
            spec = tokenizer_spec(learn)
            port = TextTokenizer(spec, "the learner's tokenizer", limits=InputLimits.unlimited())
        except (InputError, KeyError, TypeError, ValueError) as e:
            log.info("the linear tokenizer does not apply (%s); fastai's tokenizes", e)
            return None
        for text in PROBES:
            want = [int(o2i.get(t, unk)) for t in tok(text)]
            if port.ids(text) != want:
                log.warning(
                    "the linear tokenizer differs from fastai's on %r; fastai's tokenizes", text
                )
                return None
        return port

    def encode(self, text: str) -> Any:
        """The model input for `text`: fastai's TensorText of token ids.

        Raises:
            InputTooLarge: `text` is over `self.limits` (nothing is tokenized).
        """
        self.limits.check(text)
        port = self.port
        if port is None:
            x = self._encode(text)
        else:
            from fastai.text.data import TensorText

            x = TensorText(self._torch.tensor(port.ids(text), dtype=self._torch.long))
        self.limits.check_tokens(len(x))
        return x

    def probabilities(self, text: str) -> Any:
        """The activation of the model's output for `text` (a 1-D tensor, one per label).

        Raises:
            InputTooLarge: `text` is over `self.limits`.
        """
        return self._probabilities_of(self.encode(text))

    def __call__(self, text: str) -> tuple[str, dict[str, float]]:
        return self._answer(self.probabilities(text))

    def _answer(self, probs: Any) -> tuple[str, dict[str, float]]:
        index = int(self._decodes(probs[None])[0])
        values = probs.tolist()
        if len(values) != len(self.labels):
            raise UnsupportedLearner(
                f"the model gives {len(values)} outputs for {len(self.labels)} labels"
            )
        return self.labels[index], dict(zip(self.labels, values, strict=True))

    # -- batches -------------------------------------------------------------------------------

    def _chunked(self) -> int | None:
        """The encoder's bptt when batches can be made so that each text gets exactly its own
        answer (fastai's Pad_Chunk, padding first, chunks of the encoder's bptt), else None."""
        fs = list(getattr(self._dl.before_batch, "fs", []) or [])
        encoder = self._model[0] if hasattr(self._model, "__getitem__") else None
        bptt = getattr(encoder, "bptt", None)
        if len(fs) != 1 or type(fs[0]).__name__ != "Pad_Chunk" or not isinstance(bptt, int):
            return None
        pad = fs[0]
        if not getattr(pad, "pad_first", False) or getattr(pad, "seq_len", None) != bptt:
            return None
        return bptt

    def probabilities_batch(self, texts: Sequence[str], *, batch_size: int = 64) -> list[Any]:
        """`probabilities` of every text, in input order, by batches of at most `batch_size`.

        Texts are bucketed by their number of 72-token chunks (the encoder's bptt) and sorted
        longest first, then each batch is padded by fastai's own `before_batch` (Pad_Chunk). In
        a bucket the padding is shorter than a chunk and all of it follows the text, where the
        SentenceEncoder's pooling masks it, so every text's outputs and pooling are the ones it
        gets alone. Across buckets that does not hold: fastai pads a short text with whole
        chunks in front, and the "last output" its `masked_concat_pool` picks (it counts the
        padding of the last bptt positions) then lands in that leading padding, which is why
        fastai's own `get_preds` disagrees with `predict` (by up to 0.65 in probability on the
        tiny test model). What remains is the batch-wide scale of the quantized model's dynamic
        INT8 activations. A learner whose batches are not padded this way runs one text at a
        time.

        Raises:
            InputTooLarge: a text is over `self.limits` (checked for every text before the
                model runs at all).
        """
        xs = [self.encode(t) for t in texts]
        bptt = self._chunked()
        if bptt is None:
            return [self._probabilities_of(x) for x in xs]
        out: list[Any] = [None] * len(xs)
        buckets: dict[int, list[int]] = {}
        for i in sorted(range(len(xs)), key=lambda i: -len(xs[i])):
            buckets.setdefault(-(-len(xs[i]) // bptt), []).append(i)
        step = max(1, batch_size)
        for rows_of_bucket in buckets.values():
            for start in range(0, len(rows_of_bucket), step):
                rows = rows_of_bucket[start : start + step]
                samples = self._dl.before_batch([(xs[i],) for i in rows])
                probs = self._forward(self._dl.after_batch(self._dl.create_batch(samples))[0])
                for j, i in enumerate(rows):
                    out[i] = probs[j]
        return out

    def _probabilities_of(self, x: Any) -> Any:
        batch = self._dl.after_batch(self._dl.create_batch(self._dl.before_batch([(x,)])))
        return self._forward(batch[0])[0]

    def _forward(self, xb: Any) -> Any:
        """The activation of the model's output for a batch of ids (one row per text)."""
        torch = self._torch
        if isinstance(xb, torch.Tensor):
            xb = xb.as_subclass(torch.Tensor)  # as fastai's CastToTensor callback does
        with (
            self._lock,
            torch_threads(self.threads),
            torch.inference_mode(),
            _contiguous_embeddings(self._model),
        ):
            if self._model.training:
                self._model.eval()
            if hasattr(self._model, "reset"):
                self._model.reset()  # fastai's ModelResetter does this before inference
            out = self._model(xb)
            if isinstance(out, tuple | list):  # RNN models return (logits, raw, dropped)
                out = out[0]
            return self._activation(out)

    def predict_batch(
        self, texts: Sequence[str], *, batch_size: int = 64
    ) -> list[tuple[str, dict[str, float]]]:
        """`self(text)` for every text, in input order, run in batches (see
        probabilities_batch).

        Raises:
            InputTooLarge: a text is over `self.limits` (nothing was run).
        """
        return [self._answer(p) for p in self.probabilities_batch(texts, batch_size=batch_size)]


def _contiguous(module: Any, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


@contextlib.contextmanager
def _contiguous_embeddings(model: Any) -> Iterator[None]:
    """Hand every embedding contiguous ids while the block runs. fastai's SentenceEncoder
    feeds a batch chunk by chunk as `input[:real_bs, i:i + bptt]`, a view that is not
    contiguous when the batch has several rows and texts longer than one chunk, and the 8-bit
    embedding of the quantized model (`quantized::embedding_byte`) refuses such ids. The hooks
    are removed afterwards, so the learner pickles as it was."""
    handles = [
        m.register_forward_pre_hook(_contiguous)
        for m in model.modules()
        if "Embedding" in type(m).__name__
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def token_count(learn: Any, text: str) -> int | None:
    """How many tokens `learn.predict(text)` would give its model: the inputs of the test item
    fastai builds for it (`test_set` over the validation transforms, as `test_dl` does;
    tokenization included), summed over the learner's inputs. None when the learner's data is
    not fastai's Datasets / TfmdLists (then nothing can be counted before predicting)."""
    from fastai.data.core import Datasets, TfmdLists, test_set

    ds = getattr(learn.dls, "valid_ds", None)
    if not isinstance(ds, Datasets | TfmdLists):
        return None
    item = test_set(ds, [text])[0]
    item = item if isinstance(item, tuple | list) else (item,)
    n_inp = getattr(learn.dls, "n_inp", 1) or 1
    return sum(len(x) for x in item[:n_inp] if hasattr(x, "__len__"))


def learner_predict(
    learn: Any, text: str, limits: InputLimits, *, threads: int = DEFAULT_THREADS
) -> tuple[str, dict[str, float]]:
    """`learn.predict(text)` within `limits` and at `threads` torch threads: for a learner the
    Predictor does not apply to. The text is tokenized once more than learn.predict does, to
    count its tokens (with fastai's tokenizer: for a text over the limit the spaCy cost is
    paid, the model's is not).

    Raises:
        InputTooLarge: `text` (its characters, a run, or its tokens) is over `limits`.
    """
    limits.check(text)
    if limits.max_tokens is not None and (n := token_count(learn, text)) is not None:
        limits.check_tokens(n)
    with learn.no_bar(), torch_threads(threads):
        label, _, probs = learn.predict(text)
    names = [str(x) for x in learn.dls.vocab[-1]]
    return str(label), dict(zip(names, probs.tolist(), strict=True))


_predictors: weakref.WeakKeyDictionary[Any, Predictor] = weakref.WeakKeyDictionary()
_predictors_lock = threading.Lock()


def predict(learn: Any, text: str) -> tuple[str, dict[str, float]]:
    """`Predictor(learn)(text)`, with the Predictor built once per learner and kept while the
    learner lives.

    Raises:
        UnsupportedLearner: the learner is not a single-input text classifier.
    """
    with _predictors_lock:
        predictor = _predictors.get(learn)
        if predictor is None:
            predictor = _predictors[learn] = Predictor(learn)
    return predictor(text)
