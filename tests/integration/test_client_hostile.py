"""The client against hostile HTTP mirrors on 127.0.0.1 (tests/mirror_server.py): every answer a
source can give becomes a typed error and the next source is tried (finding 5), no server holds a
fetch past its deadline (6), names are matched whole and reserved names refused (9), credentials
in a URL never reach a log (10). Issue 11's findings, each with its proof-of-concept turned test.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import (
    BadResponse,
    Http,
    MirrorSource,
    RetryPolicy,
    Unreachable,
)
from pipeline.client import fetch as client_fetch
from pipeline.errors import InputError, RemoteError
from tests.conftest import KEY
from tests.integration.conftest import Waits, mirror
from tests.mirror_server import Fault

# The stores are signed with the tests' key (build_store), which these servers trust.
fetch = functools.partial(client_fetch, public_key=KEY.public_pem)
TRUST_ENV = {"RELEASE_PUBLIC_KEY": KEY.public_pem}

MANIFEST = "/m/1.0.0/manifest.json"
Q = f"/m/1.0.0/{mf.QUANTIZED_FILE}"


def _manifest_with(store_root: Path, **changes) -> bytes:
    data = json.loads((store_root / "m" / "1.0.0" / mf.MANIFEST_NAME).read_bytes())
    data.update(changes)
    return json.dumps(data).encode()


# -- finding 5: every transport and parse failure is typed, and the next source is tried ------


@pytest.mark.parametrize(
    "fault, error, message",
    [
        (Fault.redirect_loop(), RemoteError, "too many redirects"),
        (Fault.bad_encoding(), RemoteError, "does not decode"),
        (Fault.body(b"\xff\xfe not json"), InputError, "not valid JSON"),
        (Fault.body(b"[" * 100_000), InputError, "not valid JSON"),
    ],
    ids=["redirect-loop", "bad-gzip", "not-json", "deeply-nested"],
)
def test_a_broken_answer_is_typed_and_the_next_source_is_used(
    tmp_path: Path, store, hostile, good, fault, error, message, caplog
) -> None:
    hostile.always(MANIFEST, fault)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        r = fetch("m", sources=[mirror(hostile), mirror(good)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{good.url}" and r.path.is_file()
    assert message in caplog.text  # the hostile source's failure, named, then the next one
    with pytest.raises(error, match=message):
        fetch("m", sources=[mirror(hostile)], cache_dir=tmp_path / "c2")


def test_the_http_errors_are_typed(hostile) -> None:
    http = Http(RetryPolicy.for_downloads(max_attempts=1), progress=False)
    for fault, message in (
        (Fault.redirect_loop(), "too many redirects"),
        (Fault.bad_encoding(), "does not decode"),
    ):
        hostile.clear()
        hostile.always(MANIFEST, fault)
        with pytest.raises(BadResponse, match=message):
            http.get_bytes(hostile.url + MANIFEST, what="m")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"golden_queries": 5}, "golden_queries: expected list, found int 5"),
        ({"labels": [1, 2]}, "labels[0]: expected str, found int 1"),
        ({"environment": {"torch": 2}}, "environment.torch: expected str, found int 2"),
        ({"validation": "high"}, "validation: expected dict, found str"),
        ({"files": [7]}, "files[0]: expected an object, found int 7"),
        ({"git_commit": ["x"]}, "git_commit: expected str, found list"),
        ({"schema_version": True}, "schema_version: expected int, found bool"),
    ],
)
def test_a_malformed_manifest_field_is_named_and_the_next_source_is_used(
    tmp_path: Path, store, hostile, good, changes, field
) -> None:
    hostile.always(MANIFEST, Fault.body(_manifest_with(store[0], **changes)))
    r = fetch("m", sources=[mirror(hostile), mirror(good)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{good.url}"
    with pytest.raises(InputError) as e:
        fetch("m", sources=[mirror(hostile)], cache_dir=tmp_path / "c2")
    assert field in str(e.value)


def test_the_cli_exits_with_the_errors_code_not_1(tmp_path: Path, store, hostile) -> None:
    hostile.always(MANIFEST, Fault.body(_manifest_with(store[0], golden_queries=5)))
    args = ["fetch", "m", "-s", hostile.url, "--cache-dir", str(tmp_path / "c"), "--retries", "0"]
    result = CliRunner().invoke(cli, args, env=TRUST_ENV)
    assert result.exit_code == 3, result.output
    assert "golden_queries: expected list, found int 5" in result.output
    hostile.clear()
    hostile.always(MANIFEST, Fault.redirect_loop())
    result = CliRunner().invoke(cli, args, env=TRUST_ENV)
    assert result.exit_code == 6 and "too many redirects" in result.output
    assert "Traceback" not in result.output


# -- finding 6: a deadline inside every streamed read ----------------------------------------


@pytest.mark.parametrize("fault", [Fault.trickle(0.2), Fault.trickle_headers(0.2)])
def test_a_trickling_server_is_cut_off_at_the_deadline(
    tmp_path: Path, store, hostile, fault
) -> None:
    # the proof of concept: one byte every 0.5 s held `--timeout 2 --retries 0` for 15.7 s
    hostile.always(MANIFEST, fault)
    args = ["fetch", "m", "-s", hostile.url, "--cache-dir", str(tmp_path / "c")]
    start = time.monotonic()
    result = CliRunner().invoke(cli, [*args, "--timeout", "2", "--retries", "0"], env=TRUST_ENV)
    elapsed = time.monotonic() - start
    assert result.exit_code == 6, result.output
    assert "not finished within 2 s" in result.output
    assert elapsed < 4.0, elapsed


def test_a_transfer_under_the_minimum_rate_is_dropped_resumed_then_given_up(
    tmp_path: Path, store, hostile
) -> None:
    hostile.always(Q, Fault.slow(4_000))  # 40 kB at 4 kB/s would take 10 s
    waits = Waits()
    source = mirror(hostile, waits, min_rate=20_000, rate_window=0.5, max_total=3, base_delay=0.01)
    start = time.monotonic()
    with pytest.raises(Unreachable) as e:
        fetch("m", sources=[source], cache_dir=tmp_path / "c", variants=["quantized"])
    assert time.monotonic() - start < 6
    assert "too slow" in str(e.value) or "not finished within 3 s" in str(e.value)
    gets = [h for h in hostile.requests(Q) if h.method == "GET"]
    assert len(gets) >= 2 and gets[1].range is not None  # dropped, then resumed where it was
    part = next((tmp_path / "c" / ".partial").glob("*.part"))
    assert 0 < part.stat().st_size < 40_000  # kept for the next run to resume


# -- finding 9: names matched whole; reserved names refused ----------------------------------


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("export_quantized.pkl\n", "files[1].name: expected a plain file name"),
        (mf.SIGNATURE_NAME, "is reserved for the manifest and its signatures"),
        (mf.MANIFEST_NAME, "is reserved for the manifest and its signatures"),
    ],
)
def test_a_manifest_listing_a_bad_or_reserved_name_is_refused(
    tmp_path: Path, store, hostile, good, bad, problem
) -> None:
    data = json.loads(_manifest_with(store[0]))
    assert data["files"][1]["name"] == mf.QUANTIZED_FILE
    data["files"][1]["name"] = bad
    hostile.always(MANIFEST, Fault.body(json.dumps(data).encode()))
    with pytest.raises(InputError, match=re.escape(problem)):
        fetch("m", sources=[mirror(hostile)], cache_dir=tmp_path / "c")
    r = fetch("m", sources=[mirror(hostile), mirror(good)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{good.url}"


def test_a_version_with_a_newline_is_refused(tmp_path: Path, store, hostile) -> None:
    with pytest.raises(InputError, match="version: expected letters"):
        fetch("m", "1.0.0\n", sources=[mirror(hostile)], cache_dir=tmp_path / "c")
    hostile.always(MANIFEST, Fault.body(_manifest_with(store[0], version="1.0.0\n")))
    with pytest.raises(InputError, match="version: expected letters"):
        fetch("m", "1.0.0", sources=[mirror(hostile)], cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "m").exists() or not any((tmp_path / "c" / "m").iterdir())


# -- finding 10: credentials in a URL never reach a log ---------------------------------------


def test_credentials_in_a_mirror_url_go_into_auth_not_into_any_log(
    tmp_path: Path, store, hostile, caplog
) -> None:
    hostile.require_auth("deploy", "s3cr3t-t0ken")
    host = hostile.url.removeprefix("http://")
    url = f"http://deploy:s3cr3t-t0ken@{host}"
    with caplog.at_level(logging.DEBUG):  # httpx logs every request at INFO
        r = fetch(
            "m", sources=[MirrorSource(url, http=Http(progress=False))], cache_dir=tmp_path / "c"
        )
    assert r.path.is_file()
    assert any(rec.name == "httpx" for rec in caplog.records)  # the log it used to leak into
    assert "s3cr3t-t0ken" not in caplog.text and "deploy:" not in caplog.text
    hits = hostile.requests(MANIFEST)
    assert hits and all(h.authorization == "Basic ZGVwbG95OnMzY3IzdC10MGtlbg==" for h in hits)
    # a wrong password: refused, and the error does not carry it either
    bad = f"http://deploy:wr0ng-t0ken@{host}"
    with pytest.raises(RemoteError) as e:
        fetch("m", sources=[MirrorSource(bad, http=Http(progress=False))], cache_dir=tmp_path / "d")
    assert "HTTP 401" in str(e.value) and "wr0ng-t0ken" not in str(e.value)
    assert "wr0ng-t0ken" not in caplog.text


def test_retry_policy_is_the_publishers_and_needs_no_publish_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pipeline.client.network, pipeline.retry\n"
        "assert pipeline.client.network.RetryPolicy is pipeline.retry.RetryPolicy\n"
        "heavy = {'requests', 'github', 'huggingface_hub', 'httpx'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert RetryPolicy.for_downloads().jitter and not RetryPolicy().jitter
