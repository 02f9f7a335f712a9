"""[publish.github] and [publish.huggingface]: defaults, every problem at once, targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError, UsageError
from pipeline.publish import publishers_for
from pipeline.publishers.settings import PublishSettings
from tests.helpers import MINIMAL_TOML as MINIMAL

ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, extra: str) -> config.ReleaseConfig:
    p = tmp_path / "release.toml"
    p.write_text(MINIMAL + extra)
    return config.load(p)


def test_defaults_and_tags(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        '[publish.github]\nrepo = "alice/models"\n[publish.huggingface]\nrepo = "acme/m"\n',
    )
    gh, hf = c.publish.github, c.publish.huggingface
    assert (gh.repo, gh.tag("m", "1.0.0"), gh.prerelease, gh.pause_between_writes) == (
        "alice/models",
        "v1.0.0",
        False,
        1.0,
    )
    assert (hf.repo, hf.private, hf.tag("m", "1.0.0"), hf.tags) == ("acme/m", False, "v1.0.0", ())
    c = load(tmp_path, '[publish.github]\nrepo = "a/b"\ntag_pattern = "{model}-v{version}"\n')
    assert c.publish.github.tag("m", "2.0.0") == "m-v2.0.0"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(
            tmp_path,
            """
[publish]
targets = ["local", "github", "huggingface", "ftp"]
[publish.github]
repo = "mymodel"
tag_pattern = "release"
prerelease = "yes"
[publish.huggingface]
repo = "acme/bad--name"
private = 1
""",
        )
    problems = e.value.problems
    assert (
        "release.toml: publish.github.repo: expected \"owner/name\", found str 'mymodel'"
        in problems
    )
    assert any(
        p.startswith("release.toml: publish.github.tag_pattern: expected a tag pattern")
        for p in problems
    )
    assert (
        "release.toml: publish.github.prerelease: expected true or false, found str 'yes'"
        in problems
    )
    assert any(
        p.startswith('release.toml: publish.huggingface.repo: expected "org/name"')
        for p in problems
    )
    assert any(
        p.startswith("release.toml: publish.huggingface.private: expected true or false")
        for p in problems
    )
    assert any(
        p.startswith("release.toml: publish.targets: expected a list of local, github, huggingface")
        for p in problems
    )
    assert len(problems) == 6 and e.value.exit_code == 3


def test_a_target_in_the_list_needs_its_repo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, '[publish]\ntargets = ["github", "huggingface", "s3"]\n')
    assert e.value.problems == [
        'release.toml: publish.github.repo: expected "owner/name" (publish.targets includes github), found nothing; add [publish.github] repo = "owner/name"',
        'release.toml: publish.huggingface.repo: expected "org/name" (publish.targets includes huggingface), found nothing; add [publish.huggingface] repo = "org/name"',
        'release.toml: publish.s3.bucket: expected "bucket-name" (publish.targets includes s3), found nothing; add [publish.s3] bucket = "bucket-name"',
    ]


def test_target_on_the_command_line_needs_its_repo_and_must_exist(tmp_path: Path) -> None:
    c = load(tmp_path, "")
    with pytest.raises(
        ConfigError,
        match=r'publish.github.repo: expected "owner/name" \(needed by --target github\)',
    ):
        publishers_for(c, ("github",), PublishSettings())
    with pytest.raises(UsageError, match="--target ftp: unknown target"):
        publishers_for(c, ("ftp",), PublishSettings())
    with pytest.raises(ConfigError, match=r'publish.s3.bucket: expected "bucket-name"'):
        publishers_for(c, ("s3",), PublishSettings())
    ps = publishers_for(
        load(tmp_path, '[publish.github]\nrepo = "a/b"\n'),
        ("local", "github", "local"),
        PublishSettings(),
    )
    assert [p.name for p in ps] == ["local", "github"]


def test_demo_config_names_both_hosts_but_publishes_locally_by_default() -> None:
    c = config.load(ROOT / "release.toml")
    assert c.publish.targets == ("local",)
    assert c.publish.github.repo and c.publish.huggingface.repo


def test_settings_read_once_and_never_shown() -> None:
    s = PublishSettings.from_env(
        {
            "GH_TOKEN": "ghp_fromgh",
            "HF_TOKEN": "hf_x",
            "GITHUB_API_URL": "https://ghe.example/api/v3/",
            "RELEASE_SIGNING_KEY": "key",
        }
    )
    assert (s.github_token, s.github_token_var, s.github_api_url) == (
        "ghp_fromgh",
        "GH_TOKEN",
        "https://ghe.example/api/v3",
    )
    assert s.hf_endpoint == "https://huggingface.co"
    assert (
        "ghp_fromgh" not in repr(s)
        and "hf_x" not in repr(s)
        and "key" not in repr(s).replace("token_var", "")
    )
    s = PublishSettings.from_env({"GITHUB_TOKEN": "a", "GH_TOKEN": "b", "HF_TOKEN": " "})
    assert (s.github_token, s.github_token_var, s.hf_token) == ("a", "GITHUB_TOKEN", None)


def test_one_check_of_a_remote_target_wherever_it_is_used(tmp_path: Path) -> None:
    from pipeline.publishers.github import GitHubPublisher
    from pipeline.publishers.huggingface import HubPublisher
    from pipeline.publishers.s3 import S3Publisher

    c = load(tmp_path, "")
    for t, publisher, key, example in (
        ("github", GitHubPublisher, "repo", "owner/name"),
        ("huggingface", HubPublisher, "repo", "org/name"),
        ("s3", S3Publisher, "bucket", "bucket-name"),
    ):
        add = f'; add [publish.{t}] {key} = "{example}"'
        with pytest.raises(ConfigError) as e:  # the config, the command line, the publisher
            load(tmp_path, f'[publish]\ntargets = ["{t}"]\n')
        assert e.value.problems == [
            f'release.toml: publish.{t}.{key}: expected "{example}" (publish.targets includes '
            f"{t}), found nothing{add}"
        ]
        with pytest.raises(ConfigError) as e:
            publishers_for(c, (t,), PublishSettings())
        assert str(e.value) == (
            f'release.toml: publish.{t}.{key}: expected "{example}" (needed by --target {t}), '
            f"found nothing{add}"
        )
        with pytest.raises(ConfigError, match=f"needed by the {t} publisher"):
            publisher(c.publish.remote(t), PublishSettings())
    placeholder = config.placeholder_repo("m")
    assert config.is_placeholder(placeholder)
    for target in (config.GitHubTarget(placeholder), config.HubTarget(placeholder)):
        with pytest.raises(ConfigError, match=f"{placeholder!r} is the placeholder"):
            target.require("needed here")
