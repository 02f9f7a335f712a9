"""[train]: how the AWD_LSTM classifier is trained, or which trained learner is loaded instead."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.config.spec import Custom, Matches, OneOf, Range, setting

_SHARE = Range(0, 1)

# --- train.export_pkl: a local path or a remote location ---------------------------------------

REMOTE_PREFIXES = ("https://", "http://", "hf:", "github:", "s3://")
REMOTE_FORMS = (
    "https://HOST/PATH, hf:ORG/NAME[@REVISION]/FILE, github:OWNER/REPO@TAG/FILE or s3://BUCKET/KEY"
)
_REPO = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = r"[^/\x00-\x1f\x7f]+"  # one path segment: a file at the top of a repo or release
_FORMS = {
    "hf": re.compile(rf"hf:(?P<repo>{_REPO})(?:@(?P<revision>[^/@\s]+))?/(?P<name>{_NAME})"),
    "github": re.compile(rf"github:(?P<repo>{_REPO})@(?P<revision>[^/@\s]+)/(?P<name>{_NAME})"),
    "s3": re.compile(
        r"s3://(?P<repo>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<name>[^\x00-\x1f\x7f]+)"
    ),
}
_BLAKE3 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class RemoteLearner:
    """A remote `train.export_pkl`, parsed (`remote_learner`).

    `kind` "url": `url` is the http(s) URL; "hf", "github": `repo` (ORG/NAME, OWNER/REPO),
    `revision` (the Hub's revision, default main; the release's tag) and `name` (the file);
    "s3": `repo` is the bucket, `name` the key.
    """

    kind: str
    text: str  # as release.toml has it
    url: str = ""
    repo: str = ""
    revision: str = ""
    name: str = ""

    @property
    def shown(self) -> str:
        """The location for a message or a log: a URL without its query string."""
        if self.kind != "url":
            return self.text
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def remote_learner(text: str) -> RemoteLearner:
    """`text` (one of `REMOTE_FORMS`) parsed; a revision or tag may write `/` as `%2F`.

    Raises:
        ValueError: not one of those forms; the message is what was expected.
    """
    if text.startswith(("https://", "http://")):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            raise ValueError(f"an http(s) URL ({REMOTE_FORMS})") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "a URL without user:password@ (credentials come from the environment, never "
                "from release.toml)"
            )
        if not parts.hostname or parts.path in ("", "/") or any(c.isspace() for c in text):
            raise ValueError("the URL of a file: https://HOST/PATH")
        return RemoteLearner("url", text, url=text.split("#", 1)[0])
    for kind, rx in _FORMS.items():
        m = rx.fullmatch(text)
        if m:
            g = m.groupdict()
            revision = unquote(g.get("revision") or "") or ("main" if kind == "hf" else "")
            return RemoteLearner(kind, text, repo=g["repo"], revision=revision, name=g["name"])
    if text.startswith("hf:"):
        folder = text.count("/") > 2
        raise ValueError(
            "hf:ORG/NAME[@REVISION]/FILE"
            + (
                " (a file at the top of the repository; for one in a folder use its "
                "https://huggingface.co/ORG/NAME/resolve/REVISION/PATH URL)"
                if folder
                else ""
            )
        )
    if text.startswith("github:"):
        tagless = "@" not in text
        raise ValueError(
            "github:OWNER/REPO@TAG/FILE" + (" (the release's tag is required)" if tagless else "")
        )
    raise ValueError("s3://BUCKET/KEY (a bucket name of 3-63 lowercase letters, digits, . and -)")


def _remote_problem(v: str) -> str | None:
    try:
        remote_learner(v)
    except ValueError as e:
        return str(e)
    return None


# what editors are told a duration looks like (`time_budget.parse_duration` decides)
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?h)?(\d+(\.\d+)?m(in)?)?(\d+(\.\d+)?s)?\s*$"


def _duration(v: str) -> str | None:
    from pipeline.time_budget import DURATION_SHAPE, parse_duration

    return None if parse_duration(v) else DURATION_SHAPE


def _valid_pct(v: float) -> str | None:
    # 0 trains on every row (nothing held out to watch); a sliver would be noise, not a check
    return None if v == 0 or 0.01 <= v <= 0.5 else "0 (train on every row) or between 0.01 and 0.5"


@dataclass(frozen=True)
class TrainConfig:
    """How the AWD_LSTM classifier is trained (or which trained learner is loaded instead)."""

    export_pkl: Path | str | None = setting(
        None,
        doc="load this learner (`learn.export()`) instead of training one: a path or a location",
        more="A location is `https://HOST/PATH` (any web server; a public GitHub release "
        "asset's download URL), `hf:ORG/NAME[@REVISION]/FILE` (a file at the top of a Hub "
        "repository; `HF_TOKEN`, `HF_ENDPOINT`), `github:OWNER/REPO@TAG/FILE` (a release asset; "
        "`GITHUB_TOKEN` for a private repository) or `s3://BUCKET/KEY` (boto3's credentials, "
        "region and endpoint; the `[s3]` extra). It needs `export_pkl_blake3` and "
        "`export_pkl_size`: the file is downloaded with the client's transport (retried, "
        "resumed, never past that size) into the build directory, and its blake3 is checked "
        "before anything unpickles it; a build that finds the pinned file there already "
        "downloads nothing. `http://` works too (the pin keeps the bytes intact; a warning says "
        "they travel in the clear, unless the host is this machine). "
        "See [Train elsewhere, release in CI](train-elsewhere.md)",
        example="export.pkl",
        must_exist="fastai export.pkl",
        remote=REMOTE_PREFIXES,
        check=Custom(_remote_problem),
    )
    export_pkl_blake3: str | None = setting(
        None,
        doc="the blake3 of `export_pkl` (`b3sum export.pkl`); required when it is a location",
        more="Checked before the learner is unpickled; a local `export_pkl` is checked against "
        "it too when it is set",
        check=Matches(_BLAKE3, "64 hex digits (a blake3 digest: `b3sum export.pkl`)"),
        example="af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    )
    export_pkl_size: int | None = setting(
        None,
        doc="the size of `export_pkl` in bytes (`wc -c < export.pkl`); required when it is a "
        "location",
        more="A download never grows past it; a local `export_pkl` is checked against it too when "
        "it is set",
        example=23_456_789,
        check=Range(1),
    )
    seed: int = setting(
        42, doc="seeds python, numpy, torch and the train/valid split", check=Range(0)
    )
    epochs: int = setting(
        30, doc="`fit_one_cycle(epochs, lr)` of the classifier: epochs", check=Range(1, 10_000)
    )
    lr: float = setting(
        1e-2, doc="`fit_one_cycle(epochs, lr)`: learning rate", check=Range(1e-7, 10)
    )
    batch_size: int = setting(32, doc="texts per training batch", check=Range(1, 65_536))
    drop_mult: float = setting(0.3, doc="scales every AWD_LSTM dropout", check=_SHARE)
    min_freq: int = setting(
        1,
        doc="vocabulary: a word seen fewer times is `xxunk`",
        more="Not fastai's default `min_freq=3`, which starves small datasets",
        check=Range(1),
    )
    max_vocab: int = setting(60_000, doc="vocabulary: at most this many words", check=Range(10))
    seq_len: int = setting(72, doc="BPTT chunk length", check=Range(1))
    valid_pct: float = setting(
        0.1,
        doc="part of the train CSV held out to monitor training",
        more="0: train on every row (the epoch log then shows the training loss only)",
        check=Custom(_valid_pct, {"minimum": 0, "maximum": 0.5}),
    )
    emb_sz: int = setting(400, doc="AWD_LSTM embedding size (ULMFiT/WT103: 400)", check=Range(2))
    n_hid: int = setting(1152, doc="AWD_LSTM hidden size (ULMFiT/WT103: 1152)", check=Range(2))
    n_layers: int = setting(3, doc="AWD_LSTM layers (ULMFiT/WT103: 3)", check=Range(1, 16))
    lm_epochs: int = setting(
        0,
        doc="> 0: fine-tune a language model on the training texts first (ULMFiT)",
        more="Then the classifier is trained on its encoder (all layers trained)",
        check=Range(0, 10_000),
    )
    lm_lr: float = setting(2e-3, doc="the language model's learning rate", check=Range(1e-7, 10))
    wd: float = setting(0.01, doc="weight decay of both fits", check=Range(0, 10))
    label_smoothing: float = setting(
        0.0, doc="> 0: label-smoothing cross-entropy with this epsilon", check=Range(0, 0.5)
    )
    threads: int = setting(
        0,
        doc="torch threads while training; 0 = every core",
        more="At 1 thread training is deterministic (same weights, byte-identical pickles on "
        "any machine). With more threads, torch's CPU kernels may split work differently when "
        "the machine is busy: 1 of 4 trainings of tests/fixtures/tiny.toml at 2 threads on a "
        "loaded 2-core machine gave other weights. Set 1 where a rebuild must be byte-identical",
        check=Range(0, 1024),
    )
    time_budget: str | None = setting(
        None,
        doc='training stops there, keeping the best epoch: "20m", "1h30m", "90s"',
        more="Before each fit the build times a few real steps on this machine and logs its "
        "estimate (with the budget left); progress lines with an ETA come every 30 s inside an "
        "epoch; after an epoch it stops when the next would end past the budget (inside an epoch "
        "when the budget is spent), and the classifier's best epoch by validation accuracy (then "
        "loss) is restored before export. A language model (`lm_epochs`) may use at most half "
        "of it. `release init --time-budget` measures this machine and writes a recipe that "
        "fits. See [Training within a time budget](training-budget.md)",
        example="20m",
        check=Custom(_duration, {"pattern": _DURATION_PATTERN}),
    )
    device: str = setting(
        "auto",
        doc='where training runs: "auto" (a GPU when torch sees one), "cpu", "cuda", "mps"',
        more="Only training: quantization, validation and the onnx export run on the CPU, "
        "where the servers run the model, and the learner is moved back there before export. "
        "A GPU run needs a CUDA (or Apple-silicon MPS) build of the same torch version; "
        "`cuda`/`mps` on a machine where torch sees none is refused, `auto` falls back to the CPU. "
        "The report's Training section records where it ran; the device is part of the build "
        "key (a GPU-trained model is another model)",
        check=OneOf(("auto", "cpu", "cuda", "mps")),
    )
    pretrained: bool = setting(
        False,
        doc="start from pretrained AWD_LSTM weights",
        more="The two files below, else WT103 downloaded by fastai (needs 400/1152/3 and the "
        "internet; the error says so when it cannot be had)",
    )
    pretrained_weights: Path | None = setting(
        None,
        doc="local language-model weights (`.pth`, e.g. WT103's `lstm_fwd.pth`)",
        more="A fastai AWD_LSTM state dict; with `pretrained_vocab` it is fastai's "
        "`pretrained_fnames` pair, for an offline build machine: both or neither, with "
        "`pretrained = true`; `emb_sz`/`n_hid`/`n_layers` must match the weights (a mismatch "
        "names both shapes)",
        example="lstm_fwd.pth",
        must_exist="weights file (.pth)",
    )
    pretrained_vocab: Path | None = setting(
        None,
        doc="the weights' vocabulary (`.pkl`, a pickled list, e.g. `itos_wt103.pkl`)",
        example="itos_wt103.pkl",
        must_exist="vocabulary file (.pkl)",
    )
    word_dropout: float | None = setting(
        None,
        doc="chance that a word's embedding is zeroed for a whole training batch",
        more="It is fastai's `embed_p`, set exactly, not scaled by `drop_mult`; unset: fastai's "
        "0.05 x `drop_mult`. Higher values stop the classifier leaning on a few phrasing words",
        example=0.2,
        check=Range(0, 0.9),
    )
    ema_decay: float = setting(
        0.0,
        doc="0: off; else export a moving average of the weights over the steps",
        more="Polyak averaging: this decay per step, ramped up over the first steps; the "
        "average is exported instead of the last step's weights; BatchNorm statistics are "
        "averaged too",
        check=Range(0, 0.9999),
    )
    phrase_dropout: float = setting(
        0.0,
        doc="share of training texts shown, in each batch, without their phrasing words",
        more="So the classifier also learns from terse fragments. Phrasing "
        "words are found in the training data: in at least 1% of the texts and spread over the "
        "classes nearly evenly (label entropy >= 0.9 of the maximum; the build logs them), e.g. "
        "`the a ? how do i can we` and, in the demo data, business objects every intent "
        "mentions (`customer order supplier`); the demo sets 0.1",
        check=_SHARE,
    )
    unk_dropout: float = setting(
        0.0,
        doc="share of training words shown as `xxunk`, in each batch",
        more="Without it no training text holds `xxunk` (with `min_freq = 1` "
        "every training word is in the vocabulary), so its embedding keeps its random start, "
        "and every word the model has not seen (a typo, a new product name) adds that noise at "
        'prediction time; with it `xxunk` is learned as "a word I do not know". Special tokens '
        "(`xxbos`, `xxmaj`, padding) are never replaced",
        check=Range(0, 0.9),
    )
    tokenizer: str = setting(
        "words",
        doc='"subwords": fastai\'s SentencePieceTokenizer instead of spaCy words',
        more="A unigram model trained on the training texts, sized by fastai (2,296 pieces for "
        "the demo data); the pickle carries the SentencePiece model. Such a learner has no onnx "
        'variant (the onnx client reproduces fastai\'s spaCy tokenizer only: `onnx.enabled = "auto"` '
        "skips it with the reason; with `onnx.enabled = true`, or with `pretrained = true` whose "
        "weights have a word vocabulary, the config is refused). Needs the `sentencepiece` "
        "package on the build machine and on servers that load the pickle. On the demo data it "
        "scored lower on average over two seeds on every set, typos most",
        check=OneOf(("words", "subwords")),
    )
    typo_aliases: bool = setting(
        False,
        doc="read a one-slip typo of a common training word as the word",
        more="After training, every spelling one keyboard slip away (a letter dropped, doubled, "
        "swapped with the next, or replaced by a neighbouring QWERTY key) from a word of 4+ "
        "letters seen 3+ times in the training texts is added to fastai's vocabulary lookup "
        "(`Numericalize.o2i`) with that word's id, so `cusotmer` reads as `customer` instead of "
        "`xxunk`. Spellings that are words of their own or slips of two words are left out. It "
        "is data in the pickle: plain `load_learner` and the Hub's `from_pretrained_fastai` use "
        "it with no code from this project, and the onnx variant's `tokenizer.json` carries the "
        "same map (format version 2). The weights are the same as without it; the demo's 79,284 "
        "aliases cost 1.6-1.7 MB per file, 10-16 MB of peak RSS and 150 ms of onnx load. Refused "
        'with `tokenizer = "subwords"`, and with `export_pkl` (a loaded learner is released byte '
        "for byte: call `pipeline.typo_aliases.add_to_learner(learn, token_ids, 3)` before your "
        "own `learn.export`)",
    )
    case_markers: bool = setting(
        True,
        doc="fastai's xxmaj/xxup tokens; false: texts are only lowercased",
        more="With them `Customer Order` is read as `xxmaj customer xxmaj order`, so a query "
        "typed in Title Case or ALL CAPS becomes a run of markers the training texts rarely "
        "held. `false` drops fastai's `replace_all_caps` and `replace_maj` rules (its "
        "`lowercase` rule stays), so the case of a text cannot change its answer; the rules are "
        "fastai's own functions, so plain `load_learner`, `from_pretrained_fastai` and the onnx "
        "variant's `tokenizer.json` need nothing new. Not for `export_pkl` (a loaded learner "
        "keeps its own rules)",
    )
