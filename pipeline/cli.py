"""The `release` command. The only module that imports click; maps errors to exit codes."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import ReleaseError

log = logging.getLogger("pipeline")
DEFAULT_CONFIG = "release.toml"


class _State:
    def __init__(self, config: str, debug: bool):
        self.config_path = Path(config)
        self.debug = debug

    def config(self):  # noqa: ANN201
        from pipeline import config

        return config.load(self.config_path)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(message)s" if not verbose else "%(asctime)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pipeline").setLevel(level)


class _Group(click.Group):
    """Runs a command and turns a ReleaseError into its exit code and one clear message."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except ReleaseError as e:
            state = ctx.obj if isinstance(ctx.obj, _State) else None
            if state and state.debug:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:
            state = ctx.obj if isinstance(ctx.obj, _State) else None
            if state and state.debug:
                traceback.print_exc()
            click.echo(
                f"unexpected error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)


class _SettingOption(click.Option):
    """An option that is also a client setting: its environment variable is the one the library
    reads (`pipeline/client/settings.py`, one table), shown by --help, and parsed there, by the
    setting's one parser (`_client_settings`); click itself reads no variable for it.

    `renamed=True`: the option was read from `RELEASE_<COMMAND>_<OPTION>` before (click's automatic
    name), which is still read, with a warning, for one release.
    """

    def __init__(self, *args: Any, setting: str, renamed: bool = True, **kwargs: Any):
        from pipeline.client.settings import BY_FIELD

        self.setting, self.renamed = setting, renamed
        kwargs.update(envvar=BY_FIELD[setting].name, show_envvar=True, allow_from_autoenv=False)
        super().__init__(*args, **kwargs)

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None  # ClientSettings.from_env reads it (and refuses a blank or malformed one)


def _setting(*decls: str, setting: str, renamed: bool = True, **kwargs: Any):  # noqa: ANN202
    """`click.option` for an option that is a client setting (see `_SettingOption`)."""
    return click.option(*decls, cls=_SettingOption, setting=setting, renamed=renamed, **kwargs)


def _force_flag(*aliases: str, help: str) -> Any:
    """`--force` (and `aliases`), the flag that overwrites or replaces: given on the command line
    only, never read from the environment, so no CI variable can turn it on for every run."""
    return click.option(
        "--force", *aliases, "force", is_flag=True, allow_from_autoenv=False, help=help
    )


def _client_settings(ctx: click.Context) -> Any:
    """The client's settings for this command: the environment (read once, each variable by its
    one parser), then the setting options given on the command line on top."""
    from click.core import ParameterSource

    from pipeline.client.settings import ClientSettings

    given: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    command = (ctx.info_name or "").upper()
    for p in ctx.command.params:
        if not isinstance(p, _SettingOption) or p.name is None:
            continue
        if p.renamed:  # click's automatic name of earlier releases: RELEASE_FETCH_PUBLIC_KEY...
            renamed[f"RELEASE_{command}_{p.name.upper()}"] = str(p.envvar)
        if ctx.get_parameter_source(p.name) is ParameterSource.COMMANDLINE:
            given[p.setting] = ctx.params[p.name]
    return ClientSettings.from_env(renamed=renamed).with_values(**given)


@click.group(
    cls=_Group,
    context_settings={"auto_envvar_prefix": "RELEASE", "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "-c",
    default=DEFAULT_CONFIG,
    show_default=True,
    show_envvar=True,
    help="The release config file.",
)
@click.option("-v", "--verbose", count=True, help="More log output (timestamps, debug lines).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--debug", is_flag=True, show_envvar=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="fastai-release")
@click.pass_context
def cli(ctx: click.Context, config: str, verbose: int, quiet: bool, debug: bool) -> None:
    """Build, gate, checksum, publish and fetch fastai text classifiers.

    Exit codes: 0 ok, 1 unexpected, 2 usage, 3 config/input, 4 validation gate failed,
    5 integrity (checksum/signature), 6 remote, 7 partial publish.
    """
    _setup_logging(verbose, quiet)
    ctx.obj = _State(config, debug)


@cli.command()
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your labelled CSV (all rows; an eval CSV is carved from it unless --eval-csv).",
)
@click.option(
    "--eval-csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A held-out labelled CSV (required with --export-pkl).",
)
@click.option(
    "--export-pkl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A learner you trained (learn.export()) to release instead of training one.",
)
@click.option("--name", help="The model name (default: from the file name).")
@click.option("--text-column", help="The text column (default: detected).")
@click.option("--label-column", help="The label column (default: detected).")
@click.option(
    "--eval-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of each class carved into the eval CSV.",
)
@click.option(
    "--drop-overlap",
    is_flag=True,
    help="Leave training rows whose text is also in --eval-csv out of a copy of --csv "
    "(<csv>-no-overlap.csv, counted and listed) and train on it; the build refuses shared texts.",
)
@click.option(
    "--time-budget",
    metavar="DURATION",
    help='Training time you can spend, like "20m" or "1h": init times real training steps on '
    "this machine and writes a recipe that fits (network, epochs, batch size, lr).",
)
@_force_flag(help="Overwrite an existing config and carved CSVs.")
@click.pass_obj
def init(
    state: _State,
    csv_path: Path | None,
    eval_csv: Path | None,
    export_pkl: Path | None,
    name: str | None,
    text_column: str | None,
    label_column: str | None,
    eval_fraction: float,
    drop_overlap: bool,
    time_budget: str | None,
    force: bool,
) -> None:
    """Write a commented starter config (--config, default release.toml) for your own data.

    Detects the text and label columns, counts rows and classes, carves a stratified eval CSV
    (no text shared with train) when there is none, and leaves the GitHub/HF repos as
    placeholders that `publish` refuses until you set them. With --time-budget it also times a
    few real training steps of each candidate network on your rows, on this machine now (a
    busy machine gives a slower estimate), and writes the recipe that fits the budget.
    """
    from pipeline.starter import init_config, summary_lines

    s = init_config(
        state.config_path,
        csv_path=csv_path,
        eval_csv=eval_csv,
        export_pkl=export_pkl,
        name=name,
        text_column=text_column,
        label_column=label_column,
        eval_fraction=eval_fraction,
        force=force,
        drop_overlap=drop_overlap,
        time_budget=time_budget,
    )
    for line in summary_lines(s):
        log.info("%s", line)
    log.info("wrote %s; next: release --config %s build", s.config_path, s.config_path)
    click.echo(str(s.config_path))


@cli.command()
def schema() -> None:
    """Print the JSON Schema of release.toml (draft 4), for editors.

    Taplo and VS Code's Even Better TOML read it: `release schema > release.schema.json`, then
    make `#:schema ./release.schema.json` the first line of release.toml.
    """
    from pipeline.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.command()
@_force_flag(help="Retrain even when the training inputs are unchanged.")
@click.pass_obj
def build(state: _State, force: bool) -> None:
    """Train (or load), strip, quantize, validate, report and checksum a release.

    Writes <build.dir>/<version>/: export.pkl, export_quantized.pkl, report.md, report.json,
    plots and, when every gate passes, manifest.json. Exit 4 when a gate fails.
    """
    from pipeline.build import build as run_build

    manifest = run_build(state.config(), force=force)
    click.echo(str(state.config().build_dir))
    s = manifest.validation["metrics"]
    log.info(
        "release %s %s ready: accuracy %.1f%% (quantized %.1f%%), file %.1fx smaller, network "
        "%.1fx smaller and %.1fx faster",
        manifest.model,
        manifest.version,
        100 * s["accuracy_original"],
        100 * s["accuracy_quantized"],
        s["size_ratio"],
        s.get("network_size_ratio", s["size_ratio"]),
        s.get("network_speedup_p50", s["speedup_p50"]),
    )
    skipped = manifest.validation.get("variants_skipped", {})
    for variant, why in skipped.items():
        log.info("no %s variant: %s", variant, why)


@cli.command()
@click.option(
    "--target",
    "-t",
    "targets",
    multiple=True,
    show_envvar=True,
    help="Where to publish (repeatable); default: [publish] targets in the config. "
    "Available: local, github, huggingface, s3. Tokens: GITHUB_TOKEN (or GH_TOKEN), HF_TOKEN, "
    "S3 credentials from boto3's chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, a role); "
    "endpoints: GITHUB_API_URL, HF_ENDPOINT; signing: RELEASE_SIGNING (key, certificate, "
    "sigstore), RELEASE_SIGNING_KEY, RELEASE_SIGNING_CERTIFICATE.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    show_envvar=True,
    help="Print what would be published, skipped or refused; change nothing.",
)
@_force_flag(
    "--replace",
    help="Replace a published version whose files differ (every target: the local copy, GitHub "
    "assets, the HF tag, the S3 objects); --replace is the same flag.",
)
@click.pass_obj
def publish(state: _State, targets: tuple[str, ...], dry_run: bool, force: bool) -> None:
    """Publish the finished build (building it first if needed) to each target.

    Every target's settings and tokens are checked before anything is uploaded; a target that
    fails does not stop the others (exit 7, each target's state printed); running the same
    command again finishes the job without duplicates.
    """
    from pipeline.publish import publish as run_publish
    from pipeline.publishers.base import describe_plan
    from pipeline.publishers.settings import PublishSettings

    settings = PublishSettings.from_env()  # the only place the tokens are read
    results = run_publish(state.config(), targets, dry_run=dry_run, force=force, settings=settings)
    for r in results:
        click.echo("\n".join(describe_plan(r)) if dry_run else r.line())


def _trust_root_options(f):  # noqa: ANN001, ANN202
    """--public-key / --certificate-chain / --identity / --identity-issuer (one trust root),
    --sigstore-trust-root: client settings (RELEASE_PUBLIC_KEY...)."""
    f = _setting(
        "--sigstore-trust-root",
        setting="sigstore_trust_root",
        help="Sigstore's trusted_root.json (a file), for --keyless / --identity without "
        "network: a server that cannot reach tuf-repo-cdn.sigstore.dev verifies keyless "
        "signatures with it. Default: fetched (and cached) over TUF.",
    )(f)
    f = _setting(
        "--identity-issuer",
        setting="issuer",
        help="The OIDC issuer of --identity / --keyless (default: GitHub Actions').",
    )(f)
    f = _setting(
        "--identity",
        setting="identity",
        help="The signer's certificate identity. Sigstore (keyless): e.g. "
        "https://github.com/OWNER/REPO/.github/workflows/release.yml@refs/tags/v{version}. "
        "With --certificate-chain (required there): the signing certificate's subject "
        "alternative name (URI, e-mail or DNS name) or its subject, e.g. "
        "'CN=release signer,O=Example'. May hold {version} and {model}.",
    )(f)
    f = _setting(
        "--certificate-chain",
        setting="certificate_chain",
        help="Your PKI's root certificate(s), PEM text or a file: the signing certificate must "
        "chain to it, be for code signing, be valid now and have the --identity given.",
    )(f)
    return _setting(
        "--public-key",
        setting="public_key",
        help="The ECDSA public key that signs releases (PEM text, or a file; `release keygen` "
        "makes the pair).",
    )(f)


def _trust(settings: Any, **extra: Any) -> Any:
    """The Trust of the settings' trust root options (and `extra`: max_age...)."""
    from pipeline.client.trust import Trust

    return Trust.from_options(
        settings.public_key,
        certificate_chain=settings.certificate_chain,
        identity=settings.identity,
        issuer=settings.issuer,
        sigstore_trust_root=settings.sigstore_trust_root,  # a path (or the JSON text)
        **extra,
    )


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_trust_root_options
@click.pass_context
def verify(ctx: click.Context, directory: Path, **_settings: Any) -> None:
    """Check every file of a build or release DIRECTORY against its manifest (exit 5 on a
    mismatch); with a trust root, also its model.sig and every file against what was signed."""
    from pipeline import signing
    from pipeline.manifest import verify_dir

    settings = _client_settings(ctx)
    m = verify_dir(directory)
    trust = _trust(settings)
    if trust.root is None:
        click.echo(f"ok: {len(m.files)} files of {m.model} {m.version} match manifest.json")
        return
    root = trust.root_for(None, m.model, m.version)
    assert root is not None
    signing.verify_release_dir(directory, root)
    click.echo(
        f"ok: {len(m.files)} files of {m.model} {m.version} match manifest.json, "
        f"signed by {root.describe()}"
    )


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Directory for release-signing-key.pem (private, mode 600) and release-signing-key.pub.",
)
@_force_flag(help="Overwrite an existing key pair.")
def keygen(out_dir: Path, force: bool) -> None:
    """Write a new ECDSA P-256 key pair for signing releases; print the public key.

    Put the private key file's content into RELEASE_SIGNING_KEY where `release publish` runs
    (kept offline by maintainers, or a CI secret); give the public key to servers
    (`release fetch --public-key release-signing-key.pub`).
    """
    import os

    from pipeline import atomic, signing
    from pipeline.errors import UsageError

    private, public = out_dir / "release-signing-key.pem", out_dir / "release-signing-key.pub"
    if not force and (private.exists() or public.exists()):
        raise UsageError(f"{private}: a key pair is already there; pass --force to replace it")
    pair = signing.generate()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_writer(private, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pair.private_pem)
    atomic.write_text(public, pair.public_pem)
    click.echo(pair.public_pem, nl=False)
    click.echo(
        f"wrote {private} (keep it secret: set RELEASE_SIGNING_KEY to its content) and {public}",
        err=True,
    )


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
def info(state: _State, directory: Path, as_json: bool) -> None:
    """A readable summary of the manifest in a build or release DIRECTORY."""
    from pipeline.manifest import Manifest

    m = Manifest.read(directory)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    s = m.validation.get("metrics", {})
    lines = [
        f"{m.model} {m.version}  ({m.description})" if m.description else f"{m.model} {m.version}",
        f"created {m.created}, git {m.git_commit or 'unknown'}, {m.tool}",
        f"labels: {', '.join(m.labels)}",
        "files:",
        *(
            f"  {f.name:<28} {f.size / 1e6:>8.2f} MB  {f.variant or f.kind:<10} blake3 {f.blake3[:16]}…"
            for f in m.files
        ),
        "environment: " + ", ".join(f"{k} {v}" for k, v in m.environment.items()),
    ]
    if s:
        lines.append(
            f"validation: {'passed' if m.validation.get('passed') else 'FAILED'}; accuracy {100 * s['accuracy_original']:.1f}% / "
            f"quantized {100 * s['accuracy_quantized']:.1f}%, agreement {100 * s['agreement']:.1f}%, "
            f"size {s['size_ratio']:.1f}x, p50 {s['p50_ms_original']:.1f} -> {s['p50_ms_quantized']:.1f} ms ({s['speedup_p50']:.1f}x)"
        )
    lines.append(f"golden queries: {len(m.golden_queries)}")
    click.echo("\n".join(lines))


def _transport_options(f):  # noqa: ANN001, ANN202
    """--retries / --timeout / --source-deadline / --allow-redirect-host (fetch and list)."""
    f = _setting(
        "--allow-redirect-host",
        "allow_redirect_hosts",
        setting="allow_redirect_hosts",
        renamed=False,
        multiple=True,
        metavar="HOST",
        help="A host a source may redirect to beyond its own origin (repeatable; HOST, "
        "HOST:PORT or *.DOMAIN; the variable: separated by spaces or commas). github: and hf: "
        "already follow their own download hosts. Never a way from a public source to a "
        "loopback, private or link-local address, and no credential follows a redirect to "
        "another origin.",
    )(f)
    f = _setting(
        "--source-deadline",
        setting="source_deadline",
        renamed=False,
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help="Seconds one fetch (or listing) may spend on one source, every request, retry "
        "and wait included (latest, manifest, signature, files); then the next source is "
        "tried. Default: 3600.",
    )(f)
    f = _setting(
        "--timeout",
        setting="timeout",
        default=900.0,
        show_default=True,
        type=click.FloatRange(min=1),
        help="Seconds one file may take, retries and waits included (every source: "
        "http(s), github:, hf:, s3://).",
    )(f)
    return _setting(
        "--retries",
        setting="retries",
        default=5,
        show_default=True,
        type=click.IntRange(0),
        help="Retries of a request that timed out, was reset, or got a 5xx/429 (with "
        "backoff; every source: http(s), github:, hf:, s3://).",
    )(f)


def _sources_option(verb: str, what: str):  # noqa: ANN202
    """--source (repeatable), a client setting (RELEASE_SOURCES)."""
    return _setting(
        "--source",
        "-s",
        "sources",
        setting="sources",
        multiple=True,
        help=f"{what} (repeatable): hf:ORG/NAME, github:OWNER/REPO, an http(s):// mirror URL, "
        "s3://BUCKET/PREFIX (boto3: the [s3] extra), or a local release-store directory; the "
        f"variable: separated by spaces or commas. Default: [publish.local] root of the config "
        f"(for {verb}).",
    )


def _sources(state: _State, settings: Any, command: str, http: Any = None) -> list[Any]:
    """The sources of a command, parsed: the settings' (--source, RELEASE_SOURCES), or the
    config's local store when none was given.

    Raises:
        UsageError: a source that is not one of the forms (the message lists them).
    """
    from pipeline.client import parse_source
    from pipeline.errors import UsageError

    specs = settings.sources or _local_root(state, command)
    try:
        return [parse_source(s, http=http, settings=settings) for s in specs]
    except ValueError as e:
        raise UsageError(f"--source {e}") from e


def _local_root(state: _State, command: str) -> tuple[str, ...]:
    """The config's local store, for a command given no source."""
    from pipeline.errors import UsageError

    if not state.config_path.is_file():
        raise UsageError(
            f"{command}: no --source given (nor RELEASE_SOURCES) and no {state.config_path} to "
            "take [publish.local] root from: give --source, or run where release.toml is "
            "(or --config PATH)"
        )
    return (str(state.config().publish.local_root),)


def _http(settings: Any):  # noqa: ANN202
    """The one HTTP client of a command: its retries, time bounds and redirect hosts."""
    from pipeline.client import Http

    return Http(settings.retry_policy(), allow_redirect_hosts=settings.allow_redirect_hosts)


@cli.command()
@click.argument("model")
@click.option(
    "--version", "version", default="latest", show_default=True, help="A version, or 'latest'."
)
@_sources_option("fetch", "Where to fetch from, tried in order")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(["quantized", "original", "onnx"]),
    help="Variants in order of preference (repeatable). Default: by what is installed: "
    "quantized, original (then onnx if onnxruntime is installed); onnx first without torch.",
)
@_setting(
    "--cache-dir",
    setting="cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: the platform cache dir.",
)
@_trust_root_options
@_setting(
    "--keyless",
    setting="keyless",
    is_flag=True,
    default=None,
    help="Sigstore: trust what a github: source's release workflow signed (its identity).",
)
@_setting(
    "--pin",
    setting="pin",
    help="Accept only the manifest.json with this blake3 (64 hex digits).",
)
@_setting(
    "--allow-unverified",
    setting="allow_unverified",
    is_flag=True,
    default=None,
    help="Load pickles from a remote source even when nothing authenticates their manifest "
    "(a WARNING on every load). Without it they are refused (exit 5) unless onnx can be used.",
)
@_setting(
    "--max-age-days",
    setting="max_age_days",
    type=click.FloatRange(min=0, min_open=True),
    help="Refuse a 'latest' whose signed manifest is older than this (a frozen mirror).",
)
@_setting(
    "--offline",
    setting="offline",
    is_flag=True,
    default=None,
    help="Use only the cache; 'latest' is the newest cached version.",
)
@_setting(
    "--channel",
    setting="channel",
    renamed=False,
    help="With --version latest: the channel of the model index to follow (canary, stable, ...; "
    "default latest). Yanked versions are skipped; an exact --version of one is served with a "
    "warning.",
)
@_setting(
    "--index-identity",
    setting="index_identity",
    renamed=False,
    help="With a Sigstore trust root (--identity, --keyless): the identity that signs the model "
    "index (the workflow that runs promote and yank). Without it the index is not used.",
)
@_transport_options
@click.option(
    "--load",
    is_flag=True,
    help="Also load the model (fastai, or onnxruntime for the onnx variant) and run the "
    "manifest's golden queries.",
)
@click.pass_context
def fetch(
    ctx: click.Context,
    model: str,
    version: str,
    variants: tuple[str, ...],
    load: bool,
    **_settings: Any,
) -> None:
    """Fetch MODEL's verified files into the cache and print the model file's path.

    A pickle variant from a remote source needs an authenticated manifest (a trust root or a
    pin); a local directory is integrity-only. Exit 5 when only corrupt or untrusted copies
    could be found, 6 when no source could be reached and nothing usable is cached.
    """
    import dataclasses

    from pipeline.client import Client
    from pipeline.errors import UsageError

    settings = _client_settings(ctx)
    http = _http(settings)
    sources = _sources(ctx.obj, settings, "fetch", http)
    channel = settings.channel if version == "latest" else None
    if channel is not None and not channel.strip():
        raise UsageError("--channel: empty; give a channel name or leave the option out")
    client = Client.from_settings(
        dataclasses.replace(settings, channel=None),  # the channel goes with `latest` only
        sources=sources,
        http=http,
        variants=variants or None,
    )
    if load:
        loaded = client.load_model(model, version, channel=channel)
        click.echo(str(loaded.fetched.path))
        click.echo(
            f"loaded {loaded.fetched.variant} variant; smoke test {loaded.smoke_passed}/"
            f"{len(loaded.fetched.manifest.golden_queries)} golden queries passed",
            err=True,
        )
        return
    click.echo(str(client.fetch(model, version, channel=channel).path))


@cli.command("list")
@click.argument("model")
@_sources_option("list", "A source to list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_transport_options
@click.pass_context
def list_versions(ctx: click.Context, model: str, as_json: bool, **_settings: Any) -> None:
    """The versions of MODEL each source offers, which one `latest` names, which are signed.

    A static mirror cannot list: it is asked for `latest` and probed for the versions the other
    sources name. A listing is capped (pages, versions, probes; said under the source when a cap
    is reached) and everything a source sent is printed escaped. Exit 6 when no source answered.
    """
    from pipeline.client.listing import list_sources
    from pipeline.client.network import DEFAULT_SOURCE_DEADLINE, source_deadlines
    from pipeline.client.printable import printable
    from pipeline.errors import RemoteError

    settings = _client_settings(ctx)
    parsed = _sources(ctx.obj, settings, "list", _http(settings))
    with source_deadlines(settings.source_deadline or DEFAULT_SOURCE_DEADLINE):
        listings = list_sources(parsed, model)
    if as_json:
        click.echo(
            json.dumps({"model": model, "sources": [x.to_dict() for x in listings]}, indent=2)
        )
    else:
        for x in listings:
            name = printable(x.source)
            if x.error:
                click.echo(f"{name}: unavailable: {printable(x.error, 300)}")
                continue
            latest = printable(x.latest, 60) if x.latest else "(none)"
            head = f"{name}: latest {latest}"
            if not x.listed:
                head += " (cannot list: probed for the versions the other sources name)"
            click.echo(head)
            for v in x.ordered():
                signed = {True: "signed", False: "unsigned", None: "?"}[x.versions[v]]
                mark = "<- latest" if v == x.latest else ""
                click.echo(f"  {printable(v, 60):<16} {signed:<9}{mark}".rstrip())
            if not x.versions:
                click.echo(f"  no version of {printable(model, 60)}")
            for note in x.notes:
                click.echo(f"  ({printable(note, 200)})")
    if all(x.error for x in listings):
        raise RemoteError(f"list {model}: no source answered")


def _index_options(f):  # noqa: ANN001, ANN202
    """--target (repeatable), --dry-run, --expires-days: what every index command takes."""
    f = click.option(
        "--expires-days",
        type=click.FloatRange(min=0, min_open=True),
        help="Give the new index an expiry this many days ahead (servers refuse it afterwards: "
        "re-issue it before, `release reissue`). Default: keep the index's expiry (none at first).",
    )(f)
    f = click.option(
        "--dry-run",
        is_flag=True,
        show_envvar=True,
        help="Print what each target's index would become; change nothing.",
    )(f)
    return click.option(
        "--target",
        "-t",
        "targets",
        multiple=True,
        help="Whose index to change (repeatable): local, github, huggingface, s3; default: "
        "[publish] targets in the config. Signing: RELEASE_SIGNING_KEY (and _CERTIFICATE), or "
        "RELEASE_SIGNING=sigstore in CI, as for publish.",
    )(f)


def _change_index(
    state: _State,
    model: str,
    change,  # noqa: ANN001
    targets: tuple[str, ...],
    dry_run: bool,
) -> None:
    from pipeline import channels
    from pipeline.publish import check_all, publishers_for
    from pipeline.publishers.settings import PublishSettings

    settings = PublishSettings.from_env()  # the only place the tokens and the key are read
    publishers = publishers_for(state.config(), targets, settings)
    signer = settings.signer()
    check_all(publishers)
    plan, results = channels.change_index(publishers, model, change, signer, dry_run=dry_run)
    if dry_run:
        click.echo("\n".join(channels.describe(plan)))
        return
    for line in plan.summary():
        log.info("%s", line)
    for r in results:
        click.echo(r.line())


@cli.command()
@click.argument("model")
@click.argument("version")
@click.option(
    "--channel",
    required=True,
    help="The channel to point at VERSION (e.g. canary, stable, latest).",
)
@_index_options
@click.pass_obj
def promote(
    state: _State,
    model: str,
    version: str,
    channel: str,
    targets: tuple[str, ...],
    dry_run: bool,
    expires_days: float | None,
) -> None:
    """Point CHANNEL of MODEL at VERSION on every target: the next index sequence, signed.

    Also how a fleet rolls back: promote the older version (its sequence is still the higher
    one). VERSION must be published on every target. Idempotent; a re-run after a kill
    finishes the targets the first run missed (exit 7 when some fail).
    """
    from pipeline.channels import Change
    from pipeline.index import check_channel, expiry_in_days

    change = Change(
        "promote", version, check_channel(channel), expires_in=expiry_in_days(expires_days)
    )
    _change_index(state, model, change, targets, dry_run)


@cli.command()
@click.argument("model")
@click.argument("version")
@click.option(
    "--reason", help="Why (shown to every server that is pinned to it). Required unless --undo."
)
@click.option("--undo", is_flag=True, help="Withdraw the yank.")
@_index_options
@click.pass_obj
def yank(
    state: _State,
    model: str,
    version: str,
    reason: str | None,
    undo: bool,
    targets: tuple[str, ...],
    dry_run: bool,
    expires_days: float | None,
) -> None:
    """Mark VERSION of MODEL yanked on every target (PEP 592): channels skip it (serving the
    newest older version that is not yanked), an exact pin still gets it, with a warning that
    carries REASON. `--undo` withdraws the yank."""
    from pipeline.channels import Change
    from pipeline.errors import UsageError
    from pipeline.index import MAX_REASON, expiry_in_days

    if undo:
        if reason:
            raise UsageError("yank --undo takes no --reason")
        change = Change("unyank", version, expires_in=expiry_in_days(expires_days))
    else:
        if not reason or not reason.strip():
            raise UsageError("yank: --reason is required (servers pinned to the version see it)")
        if len(reason) > MAX_REASON:
            raise UsageError(f"--reason: {len(reason)} characters, at most {MAX_REASON}")
        change = Change(
            "yank", version, reason=reason.strip(), expires_in=expiry_in_days(expires_days)
        )
    _change_index(state, model, change, targets, dry_run)


@cli.command()
@click.argument("model")
@_index_options
@click.pass_obj
def reissue(
    state: _State, model: str, targets: tuple[str, ...], dry_run: bool, expires_days: float | None
) -> None:
    """Sign MODEL's index again, unchanged, under the next sequence and a new issue time (and
    --expires-days): for servers that refuse an old index (--max-age-days) or past its expiry."""
    from pipeline.channels import Change
    from pipeline.index import expiry_in_days

    _change_index(
        state, model, Change("reissue", expires_in=expiry_in_days(expires_days)), targets, dry_run
    )


@cli.command()
@click.argument("model")
@_sources_option("status", "A source to read")
@_trust_root_options
@_setting(
    "--index-identity",
    setting="index_identity",
    renamed=False,
    help="With a Sigstore trust root: the identity that signs the model index.",
)
@_setting(
    "--max-age-days",
    setting="max_age_days",
    type=click.FloatRange(min=0, min_open=True),
    help="Report an index issued longer ago than this as refused (as servers with it would).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, model: str, as_json: bool, **_settings: Any) -> None:
    """MODEL's index on each source: channels and what they serve, versions, yanked versions
    with their reasons, sequence, signed (and verified, with a trust root), age.

    Exit 6 when no source answered, 5 when a trust root is given and no source's index verifies.
    """
    from pipeline.client.index_status import status as read_status
    from pipeline.errors import IntegrityError, RemoteError

    settings = _client_settings(ctx)
    parsed = _sources(ctx.obj, settings, "status")
    days = settings.max_age_days
    trust = _trust(settings, max_age=None if days is None else days * 86400)
    rows = read_status(parsed, model, trust=trust, index_identity=settings.index_identity)
    if as_json:
        click.echo(json.dumps({"model": model, "sources": [r.to_dict() for r in rows]}, indent=2))
    else:
        for r in rows:
            if r.sequence is None:
                click.echo(
                    f"{r.source}: {r.problem}" + (f"; latest {r.latest}" if r.latest else "")
                )
                continue
            signed = r.verified or (
                "signed (not checked: no trust root given)" if r.signed else "UNSIGNED"
            )
            click.echo(
                f"{r.source}: sequence {r.sequence}, issued {r.issued} ({r.age_days:.1f} days ago), "
                f"expires {r.expires or 'never'}; {signed}"
            )
            if r.problem:
                click.echo(f"  REFUSED by servers: {r.problem}")
            for name in sorted(r.channels):
                served = r.serves.get(name)
                note = (
                    "" if served == r.channels[name] else f" (yanked: serves {served or 'nothing'})"
                )
                click.echo(f"  channel {name:<12} {r.channels[name]}{note}")
            for v in reversed(r.versions):
                y = f"  YANKED: {r.yanked[v]}" if v in r.yanked else ""
                click.echo(f"  {v}{y}")
            if r.latest is not None and r.latest != r.serves.get("latest"):
                click.echo(f"  latest pointer (older clients): {r.latest}")
    answered = [
        r for r in rows if r.sequence is not None or (r.problem or "").startswith("no index")
    ]
    if not answered:
        raise RemoteError(f"status {model}: no source answered")
    if trust.root is not None and not any(r.verified for r in rows):
        raise IntegrityError(f"status {model}: no source has an index signed by {trust.describe()}")


@cli.group()
def cache() -> None:
    """Inspect and clean the client's cache (--cache-dir, $RELEASE_CACHE_DIR or the platform dir)."""


_cache_dir_option = _setting(
    "--cache-dir",
    setting="cache_dir",
    renamed=False,
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: the platform cache dir.",
)


def _cache(ctx: click.Context) -> Any:
    """The Cache of a `cache` command: --cache-dir, RELEASE_CACHE_DIR or the platform's."""
    from pipeline.client import Cache, default_cache_dir

    return Cache(default_cache_dir(_client_settings(ctx)))


@cache.command("list")
@_cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cache_list(ctx: click.Context, cache_dir: Path | None, as_json: bool) -> None:
    """Cached models and versions, their files and sizes (nothing is verified: see verify)."""
    c = _cache(ctx)
    rows = []
    for model in c.models():
        for version in c.versions(model):
            cv = c.read_version(model, version)
            if cv is not None:
                rows.append(
                    {
                        "model": model,
                        "version": version,
                        "signed": cv.signature is not None,
                        "files": cv.files,
                    }
                )
    if as_json:
        click.echo(json.dumps({"root": str(c.root), "versions": rows, **c.usage()}, indent=2))
        return
    click.echo(f"cache {c.root}")
    for r in rows:
        files = ", ".join(f"{n} {s / 1e6:.1f} MB" for n, s in r["files"].items())
        click.echo(
            f"  {r['model']} {r['version']}{' (signed)' if r['signed'] else ''}: {files or 'no model file'}"
        )
    u = c.usage()
    click.echo(
        f"{u['blobs'] / 1e6:.1f} MB in files, {u['partial'] / 1e6:.1f} MB in partial downloads"
    )


@cache.command("verify")
@_cache_dir_option
@click.pass_context
def cache_verify(ctx: click.Context, cache_dir: Path | None) -> None:
    """Check every cached file against its manifest (exit 5 on a mismatch; the next fetch
    replaces a damaged file)."""
    from pipeline.errors import IntegrityError

    c = _cache(ctx)
    problems = c.verify()
    if problems:
        raise IntegrityError(
            f"{c.root}: {len(problems)} cached file(s) do not match their manifest:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nThe next fetch of these versions downloads them again."
        )
    n = sum(len(c.versions(m)) for m in c.models())
    click.echo(f"ok: {n} cached version(s) in {c.root} match their manifests")


@cache.command("prune")
@_cache_dir_option
@click.option(
    "--keep", default=1, show_default=True, type=click.IntRange(0), help="Versions kept per model."
)
@click.option("--model", help="Only this model.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@click.pass_context
def cache_prune(
    ctx: click.Context, cache_dir: Path | None, keep: int, model: str | None, dry_run: bool
) -> None:
    """Remove all but the newest --keep versions, unused files and interrupted downloads.

    A version the model's remembered index names in a channel (after a rollback, an older one)
    is kept too.
    """
    removed = _cache(ctx).prune(keep=keep, model=model, dry_run=dry_run)
    for r in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {r}")
    if not removed:
        click.echo("nothing to remove")


def main() -> None:
    cli(prog_name="release")
