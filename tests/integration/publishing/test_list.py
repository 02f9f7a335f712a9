"""`release list MODEL --source ...`: five sources side by side (local store, HTTP mirror, S3,
GitHub, HF Hub), each holding what `release publish` put there: 0.0.1 signed, 0.0.2 unsigned on
every target but GitHub, which only got 0.0.1."""

from __future__ import annotations

import dataclasses
import json

from click.testing import CliRunner

from pipeline import config as cfg
from pipeline import signing
from pipeline.cli import cli
from pipeline.publish import publish
from tests.integration.publishing.conftest import (
    AWS_ENV,
    BUCKET,
    GH_REPO,
    HF_REPO,
    make_build,
    s3_toml,
    write_project,
)
from tests.mirror_server import MirrorServer

MODEL = "tiny-intent"


def test_list_shows_every_sources_versions_latest_and_signatures(
    gh, hub, s3, settings, policy, tmp_path, monkeypatch
) -> None:
    extra = s3_toml(s3.url) + (
        f'[publish.github]\nrepo = "{GH_REPO}"\npause_between_writes = 0.0\n'
        f'[publish.huggingface]\nrepo = "{HF_REPO}"\n'
    )
    config = write_project(tmp_path / "p", extra)
    make_build(config)
    signed = dataclasses.replace(settings, signing_key=signing.generate().private_pem)
    publish(config, ("local", "github", "huggingface", "s3"), settings=signed, policy=policy)
    config.path.write_text(
        config.path.read_text().replace('version = "0.0.1"', 'version = "0.0.2"')
    )
    config = cfg.load(config.path)
    make_build(config, payload=b"2")
    publish(config, ("local", "huggingface", "s3"), settings=settings, policy=policy)

    for k, v in {
        **AWS_ENV,
        "AWS_ENDPOINT_URL_S3": s3.url,
        "HF_ENDPOINT": hub.url,
        "GITHUB_API_URL": gh.api_url,
        "GITHUB_SERVER_URL": gh.url,
    }.items():
        monkeypatch.setenv(k, v)
    with MirrorServer(config.publish.local_root) as mirror:
        sources = [
            str(config.publish.local_root),
            mirror.url,
            f"s3://{BUCKET}/team/models",
            f"github:{GH_REPO}",
            f"hf:{HF_REPO}",
            "s3://no-such-bucket",
        ]
        args = ["list", MODEL, "--json"] + [a for s in sources for a in ("--source", s)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        listings = json.loads(result.stdout)["sources"]  # stdout only: the JSON document
        text = CliRunner().invoke(cli, args[:2] + args[3:]).output
    both = [{"version": "0.0.2", "signed": False}, {"version": "0.0.1", "signed": True}]
    by_source = {x["source"]: x for x in listings}
    assert [x["versions"] for x in listings[:3]] == [both, both, both]
    assert [x["latest"] for x in listings[:5]] == ["0.0.2", "0.0.2", "0.0.2", "0.0.1", "0.0.2"]
    assert listings[1]["listed"] is False  # the mirror was probed
    assert by_source[f"github:{GH_REPO}"]["versions"] == both[1:]
    assert by_source[f"hf:{HF_REPO}"]["versions"] == both
    assert listings[5]["error"] and listings[5]["versions"] == []
    assert f"s3://{BUCKET}/team/models: latest 0.0.2" in text
    assert "  0.0.2            unsigned <- latest" in text
    assert "  0.0.1            signed" in text
    assert "s3://no-such-bucket: unavailable:" in text
