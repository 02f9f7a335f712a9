"""Release signatures as OpenSSF Model Signing bundles (the `model-signing` library).

`model.sig` is a Sigstore bundle whose DSSE envelope holds an in-toto statement listing the
sha256 of every file of the release, `manifest.json` included (model-signing's "files"
serialization). It is what `model_signing sign` writes and what `model_signing verify` reads, so
a release downloaded in full verifies with the library's own command line. (The digests are
sha256 although model-signing can hash with blake3: its 1.1.1 command line verifies with sha256
only and reports a blake3 bundle as a hash mismatch. `manifest.json` keeps blake3 for every
file; a server hashes only `manifest.json` with sha256.)

Three ways to sign, one format:

- key: an ECDSA P-256/P-384/P-521 private key (PEM), kept offline by maintainers;
- certificate: that key plus its X.509 certificate (and intermediates) from your own PKI;
- sigstore: keyless, with the OIDC identity of the CI job (GitHub Actions' `id-token: write`),
  a Fulcio certificate and a Rekor entry; no secret at all.

A server verifies the bundle's signature against its trust root (a public key, a certificate
chain and the signer's identity in it, or a Sigstore identity and issuer), then checks
`manifest.json` against the bundle's
digest of it, and every file it fetches against `manifest.json`: it needs none of the other
files. Key and certificate bundles are checked here the way model-signing checks them, with
`cryptography` (and pyOpenSSL for the chain), because importing model-signing costs about a
second per server start; Sigstore bundles with model-signing's own verifier. model-signing itself
is imported only to sign, and to check a Sigstore bundle.

A certificate chain alone is not enough: every certificate the CA issued chains to it (a TLS
server certificate, a colleague's). The signing certificate must also be for code signing
(extended key usage 1.3.6.1.5.5.7.3.3), valid now (its dates are checked at verification time,
not at its own not-before), and name the configured identity: a subject alternative name (URI,
e-mail or DNS name, as Sigstore's identities are) or the whole subject (RFC 4514).

Keyless verification needs Sigstore's trust root (Fulcio's CA, Rekor's and the CT logs' keys).
By default model-signing fetches it over TUF (tuf-repo-cdn.sigstore.dev); a server that cannot
reach it is given the file instead (`trusted_root.json`, what `sigstore` and `cosign` call the
trusted root, or a whole client trust config), checked when configured, before any network.

The package, by side (every name is re-exported here: `from pipeline.signing import Signer,
TrustRoot, ...` as before):

- `keys`: PEM key material, key ids, `generate`, the names both sides share;
- `sign`: `Signer` (what `release publish` signs with);
- `verify`: `TrustRoot` and the checks of a bundle, a manifest and a release directory (what a
  server imports, without model-signing);
- `certificates`: what a signing certificate must be and name (both sides check it).
"""

from __future__ import annotations

from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME
from pipeline.signing.certificates import (
    CODE_SIGNING_EKU,
    certificate_identities,
)
from pipeline.signing.keys import (
    GITHUB_ISSUER,
    HASH_ALGORITHM,
    METHODS,
    RELEASE_WORKFLOW,
    SIGNING_CERTIFICATE_ENV,
    SIGNING_KEY_ENV,
    SIGNING_METHOD_ENV,
    KeyPair,
    generate,
    github_identity,
    key_id,
    load_private_key,
    load_public_key,
    read_material,
    release_files,
)
from pipeline.signing.sign import Signer
from pipeline.signing.verify import (
    TrustRoot,
    check_manifest,
    read_sigstore_trust_root,
    sha256_file,
    signed_digests_unverified,
    verify_release_dir,
)

__all__ = [
    "CODE_SIGNING_EKU",
    "GITHUB_ISSUER",
    "HASH_ALGORITHM",
    "MANIFEST_NAME",
    "METHODS",
    "RELEASE_WORKFLOW",
    "SIGNATURE_NAME",
    "SIGNING_CERTIFICATE_ENV",
    "SIGNING_KEY_ENV",
    "SIGNING_METHOD_ENV",
    "KeyPair",
    "Signer",
    "TrustRoot",
    "certificate_identities",
    "check_manifest",
    "generate",
    "github_identity",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_material",
    "read_sigstore_trust_root",
    "release_files",
    "sha256_file",
    "signed_digests_unverified",
    "verify_release_dir",
]
