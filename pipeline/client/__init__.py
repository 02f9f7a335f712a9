"""What servers import to fetch and load a release: `Client` (sources, trust, cache, HTTP,
offline), or the one-call `fetch()` / `load_model()`. Imports neither click, torch nor fastai until
a model is actually loaded (httpx and huggingface_hub only when a source first needs them,
model-signing only to check a keyless signature)."""

from pipeline.client.cache import Cache, CacheBusy, default_cache_dir
from pipeline.client.client import Client, fetch, load_model
from pipeline.client.errors import BadResponse, CacheError, DiskFull, Unreachable
from pipeline.client.fetching import resolve
from pipeline.client.github import GitHubSource
from pipeline.client.hf import HfSource
from pipeline.client.limits import InputLimits, InputTooLarge
from pipeline.client.loading import EnvironmentMismatch, LoadedModel, check_environment
from pipeline.client.network import Http, RetryPolicy
from pipeline.client.predict import Predictor, predict  # the function shadows the module name
from pipeline.client.release import FetchResult, Release
from pipeline.client.sources import LocalSource, MirrorSource, Source, parse_source
from pipeline.client.trust import Trust, Untrusted

__all__ = [
    "BadResponse",
    "Cache",
    "CacheBusy",
    "CacheError",
    "Client",
    "DiskFull",
    "EnvironmentMismatch",
    "FetchResult",
    "GitHubSource",
    "HfSource",
    "Http",
    "InputLimits",
    "InputTooLarge",
    "LoadedModel",
    "LocalSource",
    "MirrorSource",
    "Predictor",
    "Release",
    "RetryPolicy",
    "Source",
    "Trust",
    "Unreachable",
    "Untrusted",
    "check_environment",
    "default_cache_dir",
    "fetch",
    "load_model",
    "parse_source",
    "predict",
    "resolve",
]
