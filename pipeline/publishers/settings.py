"""Endpoints and secrets for publishing, read once from the environment at the edge (the CLI).

Nothing else in the package reads these variables; secrets never appear in a repr, a log line,
an error or a file (see `Redactor`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.signing import SIGNING_KEY_ENV

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
        signing_key: RELEASE_SIGNING_KEY, an Ed25519 private key (PEM or raw base64).
    """

    github_token: str | None = field(default=None, repr=False)
    github_token_var: str = "GITHUB_TOKEN"
    github_api_url: str = GITHUB_API_DEFAULT
    hf_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = HF_ENDPOINT_DEFAULT
    signing_key: str | None = field(default=None, repr=False)

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
        )

    def secrets(self) -> tuple[str, ...]:
        """Every secret, for redaction."""
        return tuple(s for s in (self.github_token, self.hf_token, self.signing_key) if s)
