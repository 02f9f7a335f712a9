"""Day two for a fleet: a channel rollout and rollback to N watching servers, and batch predict.

    python -m benchmarks.fleet [--build-dir DIR] [--rows rollout,batch] [--processes 16] [--every 5]

- rollout: N server processes (`Client.watch(model, channel="stable", every=5)`, the onnx
  variant, a cache each) follow one channel on an HTTP mirror (tests/mirror_server.py: ETag,
  Last-Modified, 304) and on an S3 bucket (moto behind the tests' proxy, the `s3://` source).
  The index is changed the way an operator changes it (`pipeline.channels`: the local store
  behind the mirror, `S3Publisher` for the bucket). Measured: seconds from the end of
  `promote` until every process serves the new version (each reports the moment its
  `version` changes), the same for the rollback, and, over an idle window, the requests and
  response bytes (headers included) per idle poll.
- batch: `predict_batch` at batch sizes 1, 8 and 32 against a loop of `predict`, texts/s, one
  thread, on the quantized pickle and the onnx variant, interleaved rounds, medians.

Uses the demo build (release.toml's build directory) when there is one, else the tiny test
model (tests/fixtures/tiny.toml, built once into artifacts/bench-tiny), and says which.
Used by `python -m benchmarks.run` (rows "rollout" and "batch").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL_CHANNEL = "stable"

SERVER = r"""
import json, sys, threading, time
from pipeline.client import Client, parse_source
source, cache, model, pub, every = sys.argv[1:6]
client = Client([parse_source(source)], public_key=pub, cache_dir=cache, variants=["onnx"])
live = client.watch(model, channel="stable", every=float(every))
def say(**kw):
    print(json.dumps({"t": time.time(), **kw}), flush=True)
say(ready=live.version)
def watch():
    seen, checks = live.version, live.checks
    while True:
        time.sleep(0.02)
        if live.version != seen:
            seen = live.version
            say(version=seen)
        if live.checks != checks:
            checks = live.checks
            say(check=checks, ok=live.health["ok"])
threading.Thread(target=watch, daemon=True).start()
sys.stdin.read()  # until the parent closes it
live.close()
say(done=live.checks)
"""


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def which_build(build_dir: Path | None) -> tuple[Path, str]:
    """(a finished build directory, what it is): the given one, the demo's, or the tiny model."""
    from pipeline import config as cfg
    from pipeline.build import build, current_build

    if build_dir is not None:
        return build_dir, f"the build in {build_dir}"
    demo = cfg.load(ROOT / "release.toml")
    if current_build(demo) is not None:
        return demo.build_dir, f"the demo model ({demo.model.name} {demo.model.version})"
    work = ROOT / "artifacts" / "bench-tiny"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "tiny.toml", work / "release.toml")
    tiny = cfg.load(work / "release.toml")
    if current_build(tiny) is None:
        build(tiny)
    return tiny.build_dir, (
        "the tiny test model (tests/fixtures/tiny.toml): no demo build in artifacts/ "
        "(`make demo` or `release build` makes one)"
    )


# --- rollout -------------------------------------------------------------------------------


def _store(build_dir: Path, root: Path, tmp: Path, signer: Any) -> tuple[str, list[str]]:
    """The build published into `root` as two versions (same files, manifests re-signed)."""
    from pipeline import manifest as mf
    from pipeline.channels import Change, change_index
    from pipeline.publishers.local import LocalStore

    m = mf.Manifest.read(build_dir)
    versions = [f"{m.version}-a", f"{m.version}-b"]
    for v in versions:
        d = tmp / f"build-{v}"
        d.mkdir()
        for name in [f.name for f in m.files]:
            os.link(build_dir / name, d / name)
        new = dataclasses.replace(m, version=v)
        new.write(d)
        (d / mf.SIGNATURE_NAME).write_bytes(signer.sign(d, new))
        LocalStore(root).publish(d, new)
    change_index([LocalStore(root)], m.model, Change("promote", versions[0], MODEL_CHANNEL), signer)
    return m.model, versions


def _raw_response_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> int:
    """Bytes of one response on the wire (status line, headers, body), for a conditional GET."""
    with socket.create_connection((host, port), timeout=10) as s:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        total = 0
        while chunk := s.recv(65536):
            total += len(chunk)
        return total


class _Fleet:
    """N server processes and the lines they print."""

    def __init__(self, n: int, source: str, caches: Path, model: str, pub: str, every: float, env):
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.procs = []
        for i in range(n):
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SERVER,
                    source,
                    str(caches / f"c{i}"),
                    model,
                    pub,
                    str(every),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=ROOT,
            )
            self.procs.append(p)
            threading.Thread(target=self._read, args=(i, p), daemon=True).start()

    def _read(self, i: int, p: subprocess.Popen) -> None:
        for line in p.stdout:  # type: ignore[union-attr]
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append((i, event))

    def wait(self, what: str, value: Any, since: float, timeout: float = 600) -> list[float]:
        """The time each process reported `what` == `value` after `since` (all of them)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                got = {
                    i: e["t"] for i, e in self.events if e.get(what) == value and e["t"] >= since
                }
            if len(got) == len(self.procs):
                return sorted(got.values())
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a server process died")
            time.sleep(0.05)
        raise TimeoutError(f"not every process reported {what}={value} within {timeout} s")

    def checks_between(self, a: float, b: float) -> int:
        with self.lock:
            return sum(1 for _, e in self.events if "check" in e and a <= e["t"] < b)

    def stop(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def rollout(
    build_dir: Path, processes: int = 16, every: float = 5.0, idle: float = 20.0
) -> dict[str, Any]:
    """See the module docstring (row "rollout")."""
    import tests.conftest  # noqa: F401  (the HF environment, no real credentials)
    from pipeline import signing
    from pipeline.channels import Change, change_index
    from pipeline.config import S3Target
    from pipeline.manifest import Manifest
    from pipeline.publishers.local import LocalStore
    from pipeline.publishers.s3 import S3Publisher
    from tests.emulators.s3 import FAKE_AWS_ENV, S3Emulator
    from tests.mirror_server import MirrorServer

    os.environ.update(FAKE_AWS_ENV)
    pair = signing.generate()
    signer = signing.Signer("key", pair.private_pem.encode())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp_s:
        tmp = Path(tmp_s)
        root = tmp / "store"
        model, versions = _store(build_dir, root, tmp, signer)
        with MirrorServer(root) as mirror, S3Emulator() as s3:
            s3.create_bucket("releases")
            target = S3Target("releases", "fleet", s3.url, "us-east-1")
            publisher = S3Publisher(target)
            for v in versions:
                publisher.publish(root / model / v, Manifest.read(root / model / v))
            local = LocalStore(root)
            kinds = [
                (
                    "HTTP mirror",
                    mirror.url,
                    local,
                    lambda: list(mirror.hits),
                    "/" + model + "/index.json",
                ),
                (
                    "S3 (s3:// source)",
                    "s3://releases/fleet",
                    publisher,
                    lambda: list(s3.log),
                    f"/releases/fleet/{model}/index.json",
                ),
            ]
            for kind, spec, pub, hits, index_path in kinds:
                change_index([pub], model, Change("promote", versions[0], MODEL_CHANNEL), signer)
                env = {
                    **os.environ,
                    "OMP_NUM_THREADS": "1",
                    "AWS_ENDPOINT_URL_S3": s3.url,
                    "PYTHONWARNINGS": "ignore",
                }
                fleet = _Fleet(
                    processes, spec, tmp / f"caches-{kind[:2]}", model, pair.public_pem, every, env
                )
                try:
                    started = time.time()
                    fleet.wait("ready", versions[0], 0)
                    ready = time.time() - started
                    # idle: every poll of every process, and what the host answered meanwhile
                    a = time.time()
                    n0 = len(hits())
                    time.sleep(idle)
                    b = time.time()
                    window = hits()[n0:]
                    polls = fleet.checks_between(a, b)
                    statuses = sorted({getattr(h, "status", None) for h in window})
                    results = {}
                    for step, v in (("promote", versions[1]), ("rollback", versions[0])):
                        change_index([pub], model, Change("promote", v, MODEL_CHANNEL), signer)
                        t0 = time.time()
                        times = fleet.wait("version", v, t0)
                        results[step] = {
                            "all_s": times[-1] - t0,
                            "median_s": statistics.median(times) - t0,
                        }
                finally:
                    fleet.stop()
                import httpx

                base = mirror.url if spec.startswith("http") else s3.url
                if not spec.startswith("http"):
                    s3.make_public("releases")  # an anonymous probe of the same object
                etag = httpx.get(base + index_path).headers.get("ETag", "")
                host, port = base.removeprefix("http://").split(":")
                wire = _raw_response_bytes(host, int(port), index_path, {"If-None-Match": etag})
                rows.append(
                    {
                        "source": kind,
                        "processes": processes,
                        "every_s": every,
                        "ready_s": ready,
                        "idle_window_s": b - a,
                        "idle_polls": polls,
                        "idle_requests": len(window),
                        "requests_per_poll": len(window) / polls if polls else None,
                        "statuses": statuses,
                        "response_bytes_304": wire,
                        "promote": results["promote"],
                        "rollback": results["rollback"],
                    }
                )
    return {"rows": rows}


def rollout_table(r: dict[str, Any], what: str) -> list[str]:
    lines = [
        f"Model: {what}; onnx variant; {r['rows'][0]['processes']} server processes, one cache "
        f"each, `Client.watch(channel='stable', every={r['rows'][0]['every_s']:g})` (+-10% jitter). "
        f"Load average before: {r.get('load_before', '?')}, after: {r.get('load_after', '?')} "
        f"(2 cores, shared).",
        "",
        "| source | all serve the new version after promote (median) | after the rollback (median) | requests per idle poll | statuses while idle | bytes per idle response (304, headers included) |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        per = f"{x['requests_per_poll']:.2f}" if x["requests_per_poll"] is not None else "n/a"
        lines.append(
            f"| {x['source']} | {x['promote']['all_s']:.1f} s ({x['promote']['median_s']:.1f} s) | "
            f"{x['rollback']['all_s']:.1f} s ({x['rollback']['median_s']:.1f} s) | {per} "
            f"({x['idle_requests']} requests / {x['idle_polls']} polls in {x['idle_window_s']:.0f} s) | "
            f"{', '.join(str(s) for s in x['statuses'])} | {x['response_bytes_304']} |"
        )
    return lines


# --- batch ---------------------------------------------------------------------------------


def texts(n: int = 256) -> list[str]:
    import csv

    with open(ROOT / "pipeline" / "data" / "eval.csv", newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return (rows * (n // len(rows) + 1))[:n]


def batch(build_dir: Path, rounds: int = 3, n: int = 256) -> dict[str, Any]:
    """See the module docstring (row "batch")."""
    import torch

    from pipeline import manifest as mf
    from pipeline.client import Client, LocalSource
    from pipeline.publishers.local import LocalStore

    torch.set_num_threads(1)
    os.environ.setdefault("RELEASE_ONNX_THREADS", "1")
    data = texts(n)
    out: dict[str, Any] = {"texts": len(data), "rounds": rounds, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp_s:
        tmp = Path(tmp_s)
        m = mf.Manifest.read(build_dir)
        LocalStore(tmp / "store").publish(build_dir, m)
        client = Client([LocalSource(tmp / "store")], cache_dir=tmp / "cache")
        for variant in ("quantized", "onnx"):
            if not any(f.variant == variant for f in m.files):
                out["variants"][variant] = {"skipped": "not in this build"}
                continue
            model = client.load_model(m.model, variants=[variant])
            runs: dict[str, list[float]] = {"loop": [], "1": [], "8": [], "32": []}
            for _ in range(rounds):
                for key in runs:
                    t0 = time.perf_counter()
                    if key == "loop":
                        for t in data:
                            model.predict(t)
                    else:
                        model.predict_batch(data, batch_size=int(key))
                    runs[key].append(len(data) / (time.perf_counter() - t0))
            one = [model.predict(t) for t in data]
            b32 = model.predict_batch(data, batch_size=32)
            out["variants"][variant] = {
                "texts_per_s": {k: statistics.median(v) for k, v in runs.items()},
                "spread": {k: [min(v), max(v)] for k, v in runs.items()},
                "label_agreement_32": sum(a[0] == b[0] for a, b in zip(one, b32, strict=True))
                / len(one),
                "max_prob_diff_32": max(
                    abs(a[1][k] - b[1][k]) for a, b in zip(one, b32, strict=True) for k in a[1]
                ),
                "graph_batched": getattr(model.predictor, "batched", None),
            }
    return out


def batch_table(r: dict[str, Any], what: str) -> list[str]:
    lines = [
        f"Model: {what}; {r['texts']} eval texts, one thread, {r['rounds']} interleaved rounds "
        f"(median texts/s, min-max). Load average before: {r.get('load_before', '?')}, after: "
        f"{r.get('load_after', '?')} (2 cores, shared).",
        "",
        "| variant | loop of predict | batch 1 | batch 8 | batch 32 | batch 32 vs loop | labels equal (32) | max prob diff (32) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, x in r["variants"].items():
        if "skipped" in x:
            lines.append(f"| {v} | {x['skipped']} | | | | | | |")
            continue
        t, s = x["texts_per_s"], x["spread"]
        cells = [f"{t[k]:.0f} ({s[k][0]:.0f}-{s[k][1]:.0f})" for k in ("loop", "1", "8", "32")]
        note = "" if x["graph_batched"] in (None, True) else " (graph of batch 1: one by one)"
        lines.append(
            f"| {v}{note} | " + " | ".join(cells) + f" | {t['32'] / t['loop']:.2f}x | "
            f"{100 * x['label_agreement_32']:.1f}% | {x['max_prob_diff_32']:.1e} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", type=Path)
    ap.add_argument("--rows", default="rollout,batch")
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle polling measured")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    build_dir, what = which_build(args.build_dir)
    rows = {x.strip() for x in args.rows.split(",")}
    out: dict[str, Any] = {"model": what}
    if "batch" in rows:
        before = load_average()
        r = batch(build_dir, args.rounds)
        r["load_before"], r["load_after"] = before, load_average()
        out["batch"] = r
        print("\n".join(batch_table(r, what)) + "\n")
    if "rollout" in rows:
        before = load_average()
        r = rollout(build_dir, args.processes, args.every, args.idle)
        r["load_before"], r["load_after"] = before, load_average()
        out["rollout"] = r
        print("\n".join(rollout_table(r, what)) + "\n")
    print(json.dumps(out, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
