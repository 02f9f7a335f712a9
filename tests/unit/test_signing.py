from __future__ import annotations

import pytest

from pipeline import signing
from pipeline.errors import ConfigError, IntegrityError


def test_sign_and_verify_roundtrip_with_pem_and_raw_keys() -> None:
    pair = signing.generate()
    priv = signing.load_private_key(pair.private_pem)
    sig = signing.sign(b'{"model": "m"}\n', priv)
    signing.verify(b'{"model": "m"}\n', sig, signing.load_public_key(pair.public_b64))
    with pytest.raises(IntegrityError, match="does not match"):
        signing.verify(b'{"model": "n"}\n', sig, signing.load_public_key(pair.public_b64))
    other = signing.load_public_key(signing.generate().public_b64)
    with pytest.raises(IntegrityError, match="signed with another key"):
        signing.verify(b'{"model": "m"}\n', sig, other)


def test_bad_keys_are_config_errors_that_do_not_echo_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        signing.load_private_key("c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0")
    assert "c2VjcmV0" not in str(e.value)
    with pytest.raises(ConfigError):
        signing.load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_malformed_signature_file() -> None:
    key = signing.load_public_key(signing.generate().public_b64)
    with pytest.raises(IntegrityError, match="not a base64 signature"):
        signing.verify(b"x", b"!!!", key)
