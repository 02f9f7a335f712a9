"""One client settings reader (issue 28, item 4): one table of variables shared by the library
and the command line, one parser per variable, the environment read once, and no flag that
switches a safeguard off from the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import _SettingOption, cli
from pipeline.client import Client, GitHubSource, HfSource, fetch, parse_source
from pipeline.client.settings import (
    BY_FIELD,
    SETTINGS,
    BadSetting,
    ClientSettings,
    settings_markdown,
)
from pipeline.errors import ConfigError, InputError
from tests.conftest import KEY, make_release_dir, sign_dir

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_TYPO = r"\$RELEASE_OFFLINE: expected 1/0, true/false, yes/no or on/off, found 'ture'"


def run(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def commands(group: click.Group = cli, path: str = "release") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((f"{path} {name}", cmd))
        if isinstance(cmd, click.Group):
            out += commands(cmd, f"{path} {name}")
    return out


def test_an_invalid_boolean_is_an_error_naming_the_variable_everywhere(
    tmp_path: Path, monkeypatch
) -> None:
    """`RELEASE_OFFLINE=ture` had two readings: Client.from_env refused it, a plain Client (and
    so `load_model`, `fetch`) took it as "online". One parser now, the same answer on every path."""
    with pytest.raises(BadSetting, match=OFFLINE_TYPO):
        ClientSettings.from_env({"RELEASE_OFFLINE": "ture"})
    store = tmp_path / "store"
    d = store / "m" / "1.0.0"
    make_release_dir(d)
    (store / "m" / "latest").write_text("1.0.0\n")
    monkeypatch.setenv("RELEASE_OFFLINE", "ture")
    with pytest.raises(BadSetting, match=OFFLINE_TYPO):
        fetch("m", sources=[str(store)], cache_dir=tmp_path / "c")
    with pytest.raises(BadSetting, match=OFFLINE_TYPO):
        Client.from_env()
    r = run("fetch", "m", "-s", str(store), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 3 and "$RELEASE_OFFLINE: expected 1/0" in r.output
    for ok, offline in (("1", True), ("off", False), (" Yes ", True)):
        assert ClientSettings.from_env({"RELEASE_OFFLINE": ok}).offline is offline


def test_every_bad_variable_is_reported_at_once_and_is_a_value_error() -> None:
    with pytest.raises(BadSetting) as e:
        ClientSettings.from_env(
            {
                "RELEASE_PIN": " ",
                "RELEASE_MAX_AGE_DAYS": "-1",
                "RELEASE_TORCH_THREADS": "zero",
                "RELEASE_CHANNEL": "Stable!",
                "RELEASE_ALLOW_REDIRECT_HOSTS": "https://x/",
                "RELEASE_MAX_INPUT_TOKENS": "0",
            }
        )
    text = str(e.value)
    for line in (
        "$RELEASE_PIN: set but empty; an empty value never turns a check off",
        "$RELEASE_MAX_AGE_DAYS: expected a number of days > 0, found '-1'",
        "$RELEASE_TORCH_THREADS: expected a whole number >= 1, found 'zero'",
        "$RELEASE_CHANNEL: expected a channel name",
        "$RELEASE_ALLOW_REDIRECT_HOSTS: redirect host 'https://x/': expected HOST",
        "$RELEASE_MAX_INPUT_TOKENS: expected a whole number >= 1, or 'none' for no limit",
    ):
        assert line in text, text
    assert len(e.value.problems) == 6
    # what InputLimits and the thread counts raised before, and what callers catch
    assert isinstance(e.value, ConfigError) and isinstance(e.value, InputError)
    assert isinstance(e.value, ValueError) and e.value.exit_code == 3


def test_values_parse_into_the_fields_and_unset_keeps_the_defaults() -> None:
    s = ClientSettings.from_env(
        {
            "RELEASE_SOURCES": "hf:a/b, /srv/releases  https://cdn.test/r",
            "RELEASE_MAX_INPUT_CHARS": "none",
            "RELEASE_MAX_INPUT_RUN": "64",
            "RELEASE_RETRIES": "0",
            "RELEASE_TIMEOUT": "30",
            "RELEASE_ONNX_THREADS": "2",
            "GITHUB_TOKEN": "",  # another tool's variable: empty means unset
            "GH_TOKEN": "gh-secret",
            "HF_TOKEN": "",
        }
    )
    assert s.sources == ("hf:a/b", "/srv/releases", "https://cdn.test/r")
    assert (s.input_limits.max_chars, s.input_limits.max_run, s.input_limits.max_tokens) == (
        None,
        64,
        512,
    )
    assert (s.retries, s.timeout, s.onnx_threads, s.torch_threads) == (0, 30.0, 2, 1)
    assert s.retry_policy().max_attempts == 1 and s.retry_policy().max_total == 30.0
    assert s.github_token == "gh-secret" and s.hf_token is None
    assert "gh-secret" not in repr(s)  # tokens stay out of logs and tracebacks
    assert ClientSettings.from_env({}) == ClientSettings()


def test_sources_take_tokens_and_endpoints_from_the_settings_not_the_environment(
    monkeypatch,
) -> None:
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "HF_TOKEN", "HF_ENDPOINT", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    s = ClientSettings(
        github_token="t0ken",
        github_api_url="http://127.0.0.1:9/api/v3",
        hf_token="hf_x",
        hf_endpoint="http://127.0.0.1:8",
    )
    gh = parse_source("github:acme/m", settings=s)
    assert isinstance(gh, GitHubSource) and gh.token == "t0ken"
    assert gh.api_url == "http://127.0.0.1:9/api/v3"
    hf = parse_source("hf:acme/m", settings=s)
    assert isinstance(hf, HfSource) and hf.endpoint == "http://127.0.0.1:8"
    assert hf.headers() == {"Authorization": "Bearer hf_x"}
    client = Client(["github:acme/m"], settings=s, cache_dir="c")
    assert client.sources[0].token == "t0ken"


def test_the_command_line_declares_the_librarys_variables() -> None:
    """Each client option of `release` shows and uses the variable of the settings table, the
    one Client.from_env reads; no other variable names a setting."""
    seen = set()
    for path, cmd in commands():
        for p in cmd.params:
            if isinstance(p, _SettingOption):
                assert p.envvar == BY_FIELD[p.setting].name, (path, p.name)
                assert p.resolve_envvar_value(click.Context(cmd)) is None  # parsed by settings
                seen.add(p.setting)
    assert {"public_key", "offline", "sources", "cache_dir", "retries"} <= seen
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


def test_the_command_line_and_the_library_read_the_same_public_key(tmp_path: Path) -> None:
    d = tmp_path / "release"
    sign_dir(d, make_release_dir(d))
    r = run("verify", str(d), env={"RELEASE_PUBLIC_KEY": KEY.public_pem})
    assert r.exit_code == 0 and "signed by key" in r.output
    client = Client.from_env({"RELEASE_PUBLIC_KEY": KEY.public_pem}, cache_dir=tmp_path / "c")
    assert client.trust.root is not None and client.trust.root.kind == "key"


def test_the_old_command_line_names_are_read_with_a_warning_for_one_release(
    tmp_path: Path,
) -> None:
    d = tmp_path / "release"
    sign_dir(d, make_release_dir(d))
    r = run("verify", str(d), env={"RELEASE_VERIFY_PUBLIC_KEY": KEY.public_pem})
    assert r.exit_code == 0 and "signed by key" in r.output
    assert (
        "$RELEASE_VERIFY_PUBLIC_KEY is deprecated and read for this release only: rename it "
        "$RELEASE_PUBLIC_KEY" in r.output
    )
    other = "-----BEGIN PUBLIC KEY-----\nother\n-----END PUBLIC KEY-----"
    r = run(
        "verify",
        str(d),
        env={"RELEASE_VERIFY_PUBLIC_KEY": other, "RELEASE_PUBLIC_KEY": KEY.public_pem},
    )
    assert r.exit_code == 3 and "both set, to different values; keep $RELEASE_PUBLIC_KEY" in (
        r.output
    )


def test_force_and_replace_never_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    """RELEASE_PUBLISH_FORCE=1 used to switch off version immutability for every publish."""
    for path, cmd in commands():
        for p in cmd.params:
            if p.name == "force":
                assert not p.allow_from_autoenv and p.envvar is None, path
    config = tmp_path / "release.toml"
    config.write_text((ROOT / "tests" / "fixtures" / "tiny.toml").read_text())
    seen: list[bool] = []

    def fake_publish(cfg, targets, *, dry_run, force, settings):  # noqa: ANN001, ANN202
        seen.append(force)
        return []

    monkeypatch.setattr("pipeline.publish.publish", fake_publish)
    env = {"RELEASE_PUBLISH_FORCE": "1", "RELEASE_PUBLISH_REPLACE": "1"}
    assert run("--config", str(config), "publish", "--dry-run", env=env).exit_code == 0
    assert run("--config", str(config), "publish", "--dry-run", "--replace").exit_code == 0
    assert seen == [False, True]


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = []
    for path in sorted((ROOT / "pipeline" / "client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{path.name}:{node.lineno}")
    assert {r.split(":")[0] for r in readers} == {"settings.py"}, readers


def test_the_docs_table_is_the_settings_table() -> None:
    page = (ROOT / "docs" / "serving.md").read_text()
    assert settings_markdown() in page, (
        "docs/serving.md's settings table is out of step with pipeline/client/settings.py: "
        "paste `python -c 'from pipeline.client.settings import settings_markdown as m; "
        "print(m())'` over it"
    )
