"""What servers import to fetch and load a release. Imports neither click, torch nor fastai until a
model is actually loaded."""

from pipeline.client.cache import default_cache_dir
from pipeline.client.fetching import FetchResult, fetch
from pipeline.client.loading import LoadedModel, load_model
from pipeline.client.sources import LocalSource, parse_source

__all__ = [
    "FetchResult",
    "LoadedModel",
    "LocalSource",
    "default_cache_dir",
    "fetch",
    "load_model",
    "parse_source",
]
