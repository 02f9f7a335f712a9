"""A Sigstore instance of our own, offline: a Fulcio-like CA, a CT log key and a Rekor key, the
`trusted_root.json` that describes them, and keyless-shaped bundles they vouch for.

Real keyless signing needs Fulcio and Rekor (the internet). This builds, with `cryptography`, what
they would return for one DSSE envelope: a short-lived code-signing certificate for an identity
(SAN URI + the OIDC issuer extension) with an embedded SCT signed by the CT log key, and a Rekor
v1 `dsse` entry with its inclusion proof (a one-leaf tree), a signed checkpoint and a signed entry
timestamp. sigstore-python verifies such a bundle against the trusted root exactly as it verifies
a real one (chain at the log's time, SCT, identity policy, log entry, envelope signature), which is
what lets the tests prove that `--sigstore-trust-root` verifies keyless bundles with no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

_SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw issuer URL
_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: Any) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _sign(key: Any, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _der_octets(data: bytes) -> bytes:
    """DER OCTET STRING (what an extension's value holds for the SCT list)."""
    n = len(data)
    length = bytes([n]) if n < 128 else bytes([0x82]) + struct.pack(">H", n)
    return b"\x04" + length + data


@dataclass
class FakeSigstore:
    """See the module docstring. `trusted_root()` is the file a server is given."""

    name: str = "fake sigstore"
    ca_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                x509.NameAttribute(NameOID.COMMON_NAME, self.name),
            ]
        )
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )

    def trusted_root(self) -> dict[str, Any]:
        """Sigstore's trusted_root.json for this instance (media type trustedroot 0.1)."""
        start = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: Any, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(_key_id(key))},
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, "https://rekor.invalid")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": self.name, "commonName": self.name},
                    "uri": "https://fulcio.invalid",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log(self.ct_key, "https://ctfe.invalid")],
            "timestampAuthorities": [],
        }

    # -- Fulcio ------------------------------------------------------------------------------

    def certificate(self, key: Any, identity: str, issuer: str, when: datetime) -> x509.Certificate:
        """What Fulcio issues for an OIDC token of `identity` from `issuer`: ten minutes of
        code signing, and an SCT of our CT log embedded."""
        der_issuer = b"\x0c" + bytes([len(issuer)]) + issuer.encode()
        serial = x509.random_serial_number()

        def build(sct_list: bytes) -> x509.Certificate:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.ca.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(when - timedelta(minutes=1))
                .not_valid_after(when + timedelta(minutes=10))
                .add_extension(
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                    critical=False,
                )
                .add_extension(
                    x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                    critical=True,
                )
                .add_extension(
                    x509.UnrecognizedExtension(_ISSUER_V1, issuer.encode()), critical=False
                )
                .add_extension(x509.UnrecognizedExtension(_ISSUER_V2, der_issuer), critical=False)
                .add_extension(
                    x509.UnrecognizedExtension(_SCT_OID, _der_octets(sct_list)), critical=False
                )
                .sign(self.ca_key, hashes.SHA256())
            )

        # the SCT signs the certificate without its SCT extension (the "precertificate")
        tbs = build(b"\x00\x00").tbs_precertificate_bytes
        millis = int(when.timestamp() * 1000)
        issuer_key_id = _key_id(self.ca_key)
        signed = struct.pack(
            f"!BBQH32s3s{len(tbs)}sH",
            0,  # v1
            0,  # certificate_timestamp
            millis,
            1,  # precert_entry
            issuer_key_id,
            struct.pack("!I", len(tbs))[1:],
            tbs,
            0,  # no extensions
        )
        signature = _sign(self.ct_key, signed)
        sct = (
            struct.pack("!B32sQH", 0, _key_id(self.ct_key), millis, 0)
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        return build(sct_list)

    # -- Rekor -------------------------------------------------------------------------------

    def bundle(self, envelope: dict[str, Any], key: Any, identity: str, issuer: str) -> bytes:
        """A Sigstore bundle (v0.3) of `envelope` (a DSSE envelope signed by `key`), as keyless
        signing makes it: the certificate for `identity` and the Rekor entry of the envelope."""
        import rfc8785

        when = datetime.now(UTC).replace(microsecond=0)
        cert = self.certificate(key, identity, issuer, when)
        payload = base64.b64decode(envelope["payload"])
        signatures = [
            {
                "signature": s["sig"],
                "verifier": _b64(cert.public_bytes(serialization.Encoding.PEM)),
            }
            for s in envelope["signatures"]
        ]
        body = json.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": signatures,
                },
            }
        ).encode()
        root_hash = hashlib.sha256(b"\x00" + body).digest()  # a tree of one leaf
        log_id = _key_id(self.rekor_key)
        note = f"rekor.invalid - 1\n1\n{_b64(root_hash)}\n"
        note_sig = _sign(self.rekor_key, note.encode())
        checkpoint = f"{note}\n\u2014 rekor.invalid {_b64(log_id[:4] + note_sig)}\n"
        integrated = int(when.timestamp())
        promise = _sign(
            self.rekor_key,
            rfc8785.dumps(
                {
                    "body": _b64(body),
                    "integratedTime": integrated,
                    "logID": log_id.hex(),
                    "logIndex": 0,
                }
            ),
        )
        entry = {
            "logIndex": "0",
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(promise)},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {
                    "certificate": {
                        "rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))
                    },
                    "tlogEntries": [entry],
                },
                "dsseEnvelope": envelope,
            }
        ).encode()

    def sign_release(self, directory: Any, manifest: Any, identity: str, issuer: str) -> bytes:
        """The model.sig keyless signing would write for a release directory: model-signing's
        own statement and DSSE envelope (signed with a fresh key, as Sigstore's signer does),
        in a bundle this instance vouches for."""
        from pipeline import signing

        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        keyed = json.loads(signing.Signer("key", pem).sign(directory, manifest))
        envelope = keyed["dsseEnvelope"]
        assert envelope["payloadType"] == _PAYLOAD_TYPE
        return self.bundle(envelope, key, identity, issuer)
