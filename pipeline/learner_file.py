"""The trained learner a build loads instead of training (`train.export_pkl`): a local file or a
remote location, put in the build directory and checked against its pin before anything unpickles
it.

A remote location (`https://`, `hf:`, `github:`, `s3://`; parsed by
`pipeline.config.train.remote_learner`) is downloaded with the client's transport
(`pipeline.client.network.Http`: retries with backoff, a Range resume of a partial download, a
deadline and a minimum rate, redirects checked, and never a byte past `export_pkl_size`) into
`.export.pkl.download` beside the build's `export.pkl`. Its blake3 is then compared with
`export_pkl_blake3`; only a match is renamed to `export.pkl`. A mismatch deletes the download and
raises IntegrityError (exit 5) naming the location, the pinned and the found digest: nothing was
unpickled. An `export.pkl` already in the build directory that matches the pin is used as it is,
without a download.

`hf:`, `github:` and `s3://` go through the client's own sources (`parse_source`), so they read
what a server reads: the Hub's `/resolve/` endpoint with `HF_TOKEN` / `HF_ENDPOINT`, a release
asset with `GITHUB_TOKEN` (through the API for a private repository) and `GITHUB_SERVER_URL` /
`GITHUB_API_URL`, an S3 object through a URL boto3 pre-signs locally (its credentials, region
and endpoint). A local `export_pkl` is copied; with a pin set, the copy is checked the same way.

`load_exported` then unpickles it (the build, `release init --export-pkl`) and refuses what the
pipeline cannot release (not a fastai Learner, not an AWD_LSTM classifier, multi-label).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.checksums import blake3_file
from pipeline.config.train import RemoteLearner, TrainConfig, remote_learner
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError, ReleaseError

if TYPE_CHECKING:
    from pipeline.client.network import Http

log = logging.getLogger("pipeline.build")


@dataclass(frozen=True)
class Pin:
    """What the file must be: its blake3 (lowercase hex) and size, each optional for a local
    file and both required for a remote one (the config's RULES say so)."""

    blake3: str | None
    size: int | None

    @classmethod
    def of(cls, t: TrainConfig) -> Pin:
        return cls((t.export_pkl_blake3 or "").lower() or None, t.export_pkl_size)


def input_digest(t: TrainConfig) -> str | None:
    """What stands for `export_pkl`'s bytes in the build and training keys: a local file's
    blake3, a location's pinned blake3 (nothing is downloaded to compute a key)."""
    if t.export_pkl is None:
        return None
    if isinstance(t.export_pkl, str):
        return Pin.of(t).blake3
    return blake3_file(t.export_pkl)


def learner_name(t: TrainConfig) -> str:
    """`export_pkl` for a message, a log or the report: its path, or its location without a
    query string (which may hold a token, and the report is published)."""
    if isinstance(t.export_pkl, str):
        return remote_learner(t.export_pkl).shown
    return str(t.export_pkl)


def place(
    t: TrainConfig, dest: Path, *, config_name: str = "release.toml", http: Http | None = None
) -> str:
    """Put the learner `t.export_pkl` names at `dest` (atomically), checked against its pin.

    Args:
        dest: the build directory's `export.pkl`.
        config_name: the config file, for the messages.
        http: the transport of a download (tests); None makes the client's default one, with
            the redirect hosts `$RELEASE_ALLOW_REDIRECT_HOSTS` allows.

    Returns:
        The name of the learner for messages: its path or its location (no query string).

    Raises:
        IntegrityError: the file's size or blake3 is not the pinned one (a download is deleted);
            a download longer than the pinned size.
        ArtifactNotFound: nothing at the location.
        RemoteError: the location cannot be reached or refuses (after the retries).
    """
    assert t.export_pkl is not None
    pin = Pin.of(t)
    if isinstance(t.export_pkl, Path):
        _copy(t.export_pkl, dest, pin, config_name)
        return str(t.export_pkl)
    remote = remote_learner(t.export_pkl)
    assert pin.blake3 is not None and pin.size is not None  # the config's RULES
    if dest.is_file() and _matches(dest, pin):
        log.info("%s: already in %s (its blake3 is the pinned one)", remote.shown, dest.parent)
        return remote.shown
    part = dest.with_name(f".{dest.name}.download")
    if part.is_file() and part.stat().st_size >= pin.size and not _matches(part, pin):
        part.unlink()  # a whole file of an earlier, other pin: resuming it would keep it
    _warn_if_clear(remote)
    log.info("downloading %s (%d bytes)", remote.shown, pin.size)
    _download(remote, part, pin.size, http)
    found = blake3_file(part)
    if found != pin.blake3:
        part.unlink(missing_ok=True)
        raise IntegrityError(
            f"train.export_pkl {remote.shown}: blake3 {found}, train.export_pkl_blake3 says "
            f"{pin.blake3} ({pin.size} bytes, as pinned); the download was deleted and nothing "
            "was unpickled. If it is the learner you mean to release, put its blake3 in "
            f"{config_name} (`b3sum export.pkl` where it was trained); otherwise upload the "
            "pinned file there again"
        )
    os.replace(part, dest)
    log.info("%s: %d bytes, blake3 as pinned", remote.shown, pin.size)
    return remote.shown


def _matches(path: Path, pin: Pin) -> bool:
    return path.stat().st_size == pin.size and blake3_file(path) == pin.blake3


def _copy(src: Path, dest: Path, pin: Pin, config_name: str) -> None:
    """`src` copied to `dest` through a temporary file beside it; the copy checked when pinned."""
    size = src.stat().st_size
    if pin.size is not None and size != pin.size:
        raise IntegrityError(
            f"train.export_pkl {src}: {size} bytes, train.export_pkl_size says {pin.size}; "
            f"nothing was unpickled. If it is the learner you mean to release, put its size in "
            f"{config_name} (`wc -c < {src.name}`)"
        )
    tmp = dest.with_name(f".{dest.name}.copy")
    try:
        shutil.copyfile(src, tmp)
        found = blake3_file(tmp) if pin.blake3 else None
        if found != pin.blake3:
            raise IntegrityError(
                f"train.export_pkl {src}: blake3 {found}, train.export_pkl_blake3 says "
                f"{pin.blake3}; nothing was unpickled. If it is the learner you mean to "
                f"release, put its blake3 in {config_name} (`b3sum {src.name}`)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_if_clear(remote: RemoteLearner) -> None:
    """A warning for plain http to another machine: the pin keeps the bytes intact, not private."""
    parts = urlsplit(remote.url)
    if remote.kind != "url" or parts.scheme != "http":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning(
            "%s: plain http: the pin checks the bytes, but they travel in the clear; "
            "use https:// unless the learner is public",
            remote.shown,
        )


def _download(remote: RemoteLearner, part: Path, size: int, http: Http | None) -> None:
    """`part` brought to `size` bytes from `remote` by the client's transport (not verified)."""
    from pipeline.client.network import Http
    from pipeline.client.settings import ClientSettings

    own = http is None
    if http is None:  # the client's settings: $RELEASE_ALLOW_REDIRECT_HOSTS, --timeout's variable
        settings = ClientSettings.from_env()
        http = Http(
            policy=settings.retry_policy(),
            allow_redirect_hosts=settings.allow_redirect_hosts or (),
        )
    what = f"train.export_pkl {remote.shown}"
    try:
        _fetch(remote, part, size, http, what)
    except IntegrityError as e:  # more bytes than pinned
        raise IntegrityError(
            f"{e}; train.export_pkl_size is {size}: is the pin of another file?"
        ) from None
    except ArtifactNotFound as e:
        hint = "check train.export_pkl (was the learner uploaded there?)"
        e.args = (f"{e.args[0]}; {hint}", *e.args[1:])
        raise
    except ReleaseError as e:
        hint = (
            "check train.export_pkl (and the credentials it needs, from the environment); a "
            f"file there shorter than train.export_pkl_size ({size} bytes) ends this way too: "
            "the pin is then of another file"
        )
        e.args = (f"{e.args[0]}; {hint}", *e.args[1:])
        raise
    finally:
        if own:
            http.close()


def _fetch(remote: RemoteLearner, part: Path, size: int, http: Http, what: str) -> None:
    from pipeline.client.sources import (
        GITHUB_DOWNLOAD_HOSTS,
        HF_DOWNLOAD_HOSTS,
        GitHubSource,
        HfSource,
        parse_source,
    )

    if remote.kind == "url":  # GitHub's and the Hub's download URLs redirect to their storage
        hosts = {"github.com": GITHUB_DOWNLOAD_HOSTS}
        hosts |= dict.fromkeys(("huggingface.co", "hf.co"), HF_DOWNLOAD_HOSTS)
        host = urlsplit(remote.url).hostname or ""
        http.download(remote.url, part, size=size, what=what, redirect_hosts=hosts.get(host, ()))
    elif remote.kind == "s3":
        from pipeline.client.s3 import S3Source

        s3 = parse_source(f"s3://{remote.repo}", http=http)
        assert isinstance(s3, S3Source)
        url = s3.presign("get_object", what, Key=remote.name)  # signed here: nothing is sent
        http.download(url, part, size=size, what=what, source=s3.name)
    else:
        # the source's revision (tag) template becomes the location's own revision (tag)
        source = parse_source(f"{remote.kind}:{remote.repo}", http=http)
        if isinstance(source, HfSource):
            source.revision = "{version}"
        elif isinstance(source, GitHubSource):
            source.tag = "{version}"
        source.download("", remote.revision, remote.name, part, size)


# --- what is inside ---------------------------------------------------------------------------


def load_exported(path: Path, name: str | None = None) -> Any:
    """Load an export.pkl and check that it is a fastai text classifier (AWD_LSTM); `name`: what
    the messages call it (default the path).

    Raises:
        InputError: the file does not unpickle as a fastai Learner holding an AWD_LSTM classifier.
    """
    import warnings

    import torch
    from fastai.learner import Learner

    where = name or str(path)

    # fastai's load_learner, with the type checked before it touches `.dls` (so that a pickle of
    # something else gets a clear message instead of an AttributeError).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{where}: not a loadable fastai export ({type(e).__name__}: {e})") from e
    if not isinstance(learn, Learner):
        raise InputError(
            f"{where}: expected a fastai Learner, found {type(learn).__module__}.{type(learn).__name__}"
        )
    learn.dls.cpu()
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import SentenceEncoder

    enc = getattr(learn.model, "__getitem__", None) and learn.model[0]
    if not isinstance(enc, SentenceEncoder) or not isinstance(enc.module, AWD_LSTM):
        found = (
            type(enc.module).__name__
            if isinstance(enc, SentenceEncoder)
            else type(learn.model).__name__
        )
        raise InputError(
            f"{where}: the model is {found}, not an AWD_LSTM text classifier; fastai-release "
            "quantizes and exports AWD_LSTM only: train it with "
            "text_classifier_learner(dls, AWD_LSTM, ...)"
        )
    if _is_multi_label(learn):
        raise InputError(
            f"{where}: a multi-label learner (MultiCategoryBlock, one or more labels per text) is "
            "not supported: the eval CSV, the gates and the client answer one label per text; "
            "train it with CategoryBlock (one label per row)"
        )
    return learn


def _is_multi_label(learn: Any) -> bool:
    from fastai.data.transforms import MultiCategorize

    tfms = getattr(getattr(learn.dls, "tfms", None), "__getitem__", None)
    labels = learn.dls.tfms[1] if tfms and len(learn.dls.tfms) > 1 else []
    fs = getattr(labels, "fs", labels)
    return (
        any(isinstance(t, MultiCategorize) for t in fs) or "BCE" in type(learn.loss_func).__name__
    )
    return learn


def labels_of(learn: Any) -> list[str]:
    """The class names of a classifier learner, in output order."""
    return [str(x) for x in learn.dls.vocab[1]]
