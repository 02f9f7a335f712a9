"""Pretrained AWD_LSTM weights for training (`train.pretrained`): local files
(`train.pretrained_weights` / `train.pretrained_vocab`) or fastai's WT103 download, their shape
checked against the configured network before they are loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import ReleaseConfig
from pipeline.errors import InputError

WT103_HINT = (
    "set train.pretrained_weights and train.pretrained_vocab to local copies of the WT103 files "
    "(lstm_fwd.pth, itos_wt103.pkl), or set train.pretrained = false to train from scratch"
)

WT103_SHAPE = (400, 1152, 3)  # emb_sz, n_hid, n_layers of fastai's WT103 AWD_LSTM


def pretrained_files(config: ReleaseConfig) -> tuple[Path, Path]:
    t = config.train
    if t.pretrained_weights and t.pretrained_vocab:
        return t.pretrained_weights, t.pretrained_vocab
    if (t.emb_sz, t.n_hid, t.n_layers) != WT103_SHAPE:
        raise InputError(
            "train.pretrained: the WT103 weights need emb_sz=400, n_hid=1152, n_layers=3; "
            f"found {t.emb_sz}, {t.n_hid}, {t.n_layers}"
        )
    from fastai.data.external import URLs, untar_data

    try:
        path = untar_data(URLs.WT103_FWD, c_key="model")
        return next(path.glob("*.pth")), next(path.glob("*.pkl"))
    except Exception as e:  # no network, proxy, disk: all mean the same to the user
        raise InputError(
            f"train.pretrained: the WT103 weights could not be downloaded from {URLs.WT103_FWD} "
            f"({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e


def pretrained_shape(weights: Path) -> tuple[int, int, int]:
    """(emb_sz, n_hid, n_layers) of an AWD_LSTM language model's saved weights (fastai's `.pth`).

    Raises:
        InputError: the file is not a state dict of a fastai AWD_LSTM language model.
    """
    import torch

    try:
        wgts = torch.load(weights, map_location="cpu", weights_only=True)
        wgts = wgts.get("model", wgts)
        emb = wgts["0.encoder.weight"]
        layers = sorted(
            int(k.split(".")[2])
            for k in wgts
            if k.startswith("0.rnns.") and k.endswith("weight_hh_l0_raw")
        )
        n_hid = wgts["0.rnns.0.weight_hh_l0_raw"].shape[1] if len(layers) > 1 else emb.shape[1]
        return int(emb.shape[1]), int(n_hid), len(layers)
    except Exception as e:
        raise InputError(
            f"train.pretrained_weights: {weights} is not the state dict of a fastai AWD_LSTM language "
            f"model ({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e


def load_pretrained(learn: Any, files: tuple[Path, Path], model: Any, t: Any) -> None:
    found = pretrained_shape(files[0])
    # one layer: fastai sizes it emb_sz -> emb_sz and never uses n_hid
    if found != (t.emb_sz, t.n_hid if t.n_layers > 1 else found[1], t.n_layers):
        raise InputError(
            f"train.pretrained_weights: {files[0]} holds an AWD_LSTM with emb_sz={found[0]}, "
            f"n_hid={found[1]}, n_layers={found[2]}; the config asks for {t.emb_sz}, {t.n_hid}, "
            f"{t.n_layers}: set train.emb_sz, n_hid and n_layers to the weights' shape"
        )
    try:
        learn.load_pretrained(*files, model=model)
    except Exception as e:
        raise InputError(
            f"train.pretrained_weights: {files[0]} / {files[1]} are not WT103-style AWD_LSTM weights and "
            f"vocabulary ({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e
    learn.unfreeze()  # fastai freezes the encoder after loading; the whole model is fine-tuned
