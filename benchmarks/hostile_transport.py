"""The client's bounded paths against hostile sources (issue 27, findings 5 and 6): time, peak
memory and stderr of one `release fetch` each, in a fresh process.

    python -m benchmarks.hostile_transport [--gib 1] [--cases gzip,gzip2,s3-trickle,s3-latest]

- gzip2: a mirror whose `latest` is `Content-Encoding: gzip, gzip` of --gib GiB of zeros (a few
  kB on the wire); gzip: the same with one layer (a plain gzip bomb).
- s3-trickle: an s3:// source (moto behind the test proxy) whose manifest sends its 200 bytes
  one every 0.2 s (40 s in all), fetched with `--timeout 3 --retries 0`.
- s3-latest: an s3:// source whose `latest` is 100 MB of "1".

Each case runs `release fetch m -s <source> --retries 0 --timeout T` in its own process; the
peak RSS is that process's (os.wait4), the time is wall time from start to exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bomb(gib: float, layers: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    data = b"".join(c.compress(block) for _ in range(int(gib * 1024))) + c.flush()
    for _ in range(layers - 1):
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = c.compress(data) + c.flush()
    return data


def _run(args: list[str], env: dict[str, str]) -> dict[str, float | int]:
    """One `release` command in a fresh process: exit code, seconds, peak RSS (MB), stderr bytes."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **env},
            cwd=ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        err.seek(0, os.SEEK_END)
        stderr_bytes = err.tell()
        err.seek(0)
        tail = err.read()[-300:].decode("utf-8", "replace").strip().splitlines()[-1:]
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kB
        "stderr_bytes": stderr_bytes,
        "last_line": tail[0][:160] if tail else "",
    }


def gzip_case(layers: int, gib: float, tmp: Path) -> dict:
    from tests.mirror_server import Fault, MirrorServer

    (tmp / "store" / "m").mkdir(parents=True, exist_ok=True)
    (tmp / "store" / "m" / "latest").write_text("1.0.0\n")
    body = _bomb(gib, layers)
    coding = ", ".join(["gzip"] * layers)
    with MirrorServer(tmp / "store") as server:
        server.always("/m/latest", Fault.encoded(body, coding))
        result = _run(
            [
                "fetch",
                "m",
                "-s",
                server.url,
                "--cache-dir",
                str(tmp / f"c{layers}"),
                "--retries",
                "0",
                "--timeout",
                "120",
            ],
            {},
        )
    return {"case": f"latest: {len(body)} bytes, Content-Encoding {coding} of {gib} GiB", **result}


def s3_case(kind: str, tmp: Path) -> dict:
    from tests.emulators.s3 import S3Emulator

    with S3Emulator() as s3:
        s3.create_bucket("releases")
        s3.client().put_object(Bucket="releases", Key="p/m/latest", Body=b"1.0.0\n")
        s3.client().put_object(Bucket="releases", Key="p/m/1.0.0/manifest.json", Body=b"{}")
        if kind == "trickle":
            s3.trickle("GET", r"/releases/p/m/1\.0\.0/manifest\.json", 0.2, size=200)
            timeout, what = "3", "the manifest trickles 200 bytes, one every 0.2 s"
        else:
            s3.huge("GET", r"/releases/p/m/latest", 100 << 20)
            timeout, what = "120", "latest is 100 MB"
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": s3.url,
        }
        result = _run(
            [
                "fetch",
                "m",
                "-s",
                "s3://releases/p",
                "--cache-dir",
                str(tmp / f"s3{kind}"),
                "--retries",
                "0",
                "--timeout",
                timeout,
            ],
            env,
        )
    return {"case": f"s3://: {what} (--timeout {timeout} --retries 0)", **result}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="GiB the gzip bombs decode to")
    ap.add_argument("--cases", default="gzip2,gzip,s3-trickle,s3-latest")
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for case in cases:
            if case in ("gzip", "gzip2"):
                row = gzip_case(2 if case == "gzip2" else 1, args.gib, tmp)
            elif case in ("s3-trickle", "s3-latest"):
                row = s3_case(case.split("-")[1], tmp)
            else:
                raise SystemExit(f"unknown case {case!r}")
            print(
                f"{row['case']}: exit {row['exit']}, {row['seconds']} s, peak RSS "
                f"{row['peak_rss_mb']} MB, stderr {row['stderr_bytes']} bytes\n    {row['last_line']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
