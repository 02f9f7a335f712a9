"""Endpoints and secrets for publishing, read once from the environment at the edge (the CLI).

Nothing else in the package reads these variables; secrets never appear in a repr, a log line,
an error or a file (see `Redactor`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.signing import (
    SIGNING_CERTIFICATE_ENV,
    SIGNING_KEY_ENV,
    SIGNING_METHOD_ENV,
    Signer,
)

GITHUB_API_DEFAULT = "https://api.github.com"
HF_ENDPOINT_DEFAULT = "https://huggingface.co"


@dataclass(frozen=True)
class PublishSettings:
    """What `release publish` needs from the environment.

    Attributes:
        github_token: from GITHUB_TOKEN, else GH_TOKEN (as the gh CLI and GitHub Actions use).
        github_token_var: which of the two it came from, for messages.
        github_api_url: GITHUB_API_URL (set by GitHub Actions; `https://HOST/api/v3` on GitHub
            Enterprise Server), default https://api.github.com.
        hf_token: HF_TOKEN.
        hf_endpoint: HF_ENDPOINT, default https://huggingface.co.
        signing_key: RELEASE_SIGNING_KEY, an ECDSA private key (PEM) that signs releases.
        signing_certificate: RELEASE_SIGNING_CERTIFICATE, its certificate and chain (PEM).
        signing_method: RELEASE_SIGNING: key, certificate or sigstore (keyless, in CI); default
            key (or certificate) when RELEASE_SIGNING_KEY is set, else no signature.
    """

    github_token: str | None = field(default=None, repr=False)
    github_token_var: str = "GITHUB_TOKEN"
    github_api_url: str = GITHUB_API_DEFAULT
    hf_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = HF_ENDPOINT_DEFAULT
    signing_key: str | None = field(default=None, repr=False)
    signing_certificate: str | None = None
    signing_method: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PublishSettings:
        """Read the variables once (empty values count as unset)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        gh_var = "GITHUB_TOKEN" if get("GITHUB_TOKEN") else "GH_TOKEN"
        return cls(
            github_token=get(gh_var),
            github_token_var=gh_var if get(gh_var) else "GITHUB_TOKEN",
            github_api_url=(get("GITHUB_API_URL") or GITHUB_API_DEFAULT).rstrip("/"),
            hf_token=get("HF_TOKEN"),
            hf_endpoint=(get("HF_ENDPOINT") or HF_ENDPOINT_DEFAULT).rstrip("/"),
            signing_key=env.get(SIGNING_KEY_ENV) or None,
            signing_certificate=env.get(SIGNING_CERTIFICATE_ENV) or None,
            signing_method=get(SIGNING_METHOD_ENV),
        )

    def signer(self) -> Signer | None:
        """How releases are signed, checked (key readable, certificate matching), or None.

        Raises:
            ConfigError: an unknown method, or a method without its key or certificate.
        """
        env = {
            SIGNING_METHOD_ENV: self.signing_method or "",
            SIGNING_KEY_ENV: self.signing_key or "",
            SIGNING_CERTIFICATE_ENV: self.signing_certificate or "",
        }
        return Signer.from_env(env)

    def secrets(self) -> tuple[str, ...]:
        """Every secret, for redaction."""
        return tuple(s for s in (self.github_token, self.hf_token, self.signing_key) if s)
