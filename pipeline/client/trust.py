"""What makes a manifest trusted: an Ed25519 signature by a pinned public key, or a pinned blake3."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import signing
from pipeline.checksums import blake3_bytes
from pipeline.errors import ConfigError, IntegrityError
from pipeline.manifest import SIGNATURE_NAME

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Trust:
    """The checks a manifest must pass before any of its files is downloaded or unpickled.

    With neither a key nor a pin, a manifest is taken as the source serves it (the files are
    still checked against it); say so in production by passing one of them.
    """

    public_key: Any = None  # an Ed25519PublicKey
    pin: str | None = None  # blake3 of the exact manifest.json bytes

    @classmethod
    def from_options(cls, public_key: Any = None, pin: str | None = None) -> Trust:
        """Build from user input: a key object, a path to a key file, or the key text itself.

        Raises:
            ConfigError: the key cannot be read, or the pin is not 64 hex digits.
        """
        key = None
        if public_key is not None and not isinstance(public_key, str | bytes | Path):
            key = public_key
        elif public_key:
            text: str | bytes = public_key
            candidate = Path(public_key) if not isinstance(public_key, bytes) else None
            if candidate is not None and len(str(candidate)) < 4096 and candidate.is_file():
                text = candidate.read_bytes()
                what = f"public key file {candidate}"
            else:
                what = "public key"
            key = signing.load_public_key(text, what)
        if pin is not None:
            pin = pin.strip().lower()
            if not _HEX64.fullmatch(pin):
                raise ConfigError(
                    f"manifest pin: expected the 64 hex digits of blake3(manifest.json), found {pin!r}"
                )
        return cls(key, pin or None)

    @property
    def wants_signature(self) -> bool:
        return self.public_key is not None

    def describe(self) -> str:
        if self.public_key is not None:
            return f"signed by {signing.public_key_b64(self.public_key)}"
        if self.pin:
            return f"pinned blake3 {self.pin[:16]}…"
        return "not checked: no public key or pin configured"

    def check(self, manifest_bytes: bytes, signature: bytes | None, where: str) -> None:
        """Refuse a manifest that is unsigned, badly signed or not the pinned one.

        Raises:
            IntegrityError: names the manifest's location, what was expected and what was found.
        """
        if self.pin is not None:
            found = blake3_bytes(manifest_bytes)
            if found != self.pin:
                raise IntegrityError(
                    f"{where}: blake3 {found[:16]}…, the pinned manifest is {self.pin[:16]}…; "
                    "this is not the release you pinned: do not use it"
                )
        if self.public_key is not None:
            if signature is None:
                raise IntegrityError(
                    f"{where}: no {SIGNATURE_NAME} beside it, and a public key is configured: "
                    "refusing an unsigned manifest"
                )
            signing.verify(manifest_bytes, signature, self.public_key, f"{where}.sig")
