"""fastai-release: build, gate, checksum, publish and fetch fastai text classifiers."""

__version__ = "0.1.0"
