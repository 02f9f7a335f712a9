"""Server start with the client, against the bare minimum, on a local HTTP server.

    python -m benchmarks.serverstart [--build-dir artifacts/build/1.0.0] [--rows start,concurrent,fleet,predict]
    python -m benchmarks.serverstart --rows warm [--compare-with /path/to/older/checkout]

- start: a cold start (empty cache) of `load_model` against `curl` of the same bytes plus a
  bare `fastai.learner.load_learner`; a warm start (cached, pinned version: verify + load, no
  network) against a bare `load_learner` of the cached file. Every run is a fresh interpreter,
  baseline and client interleaved; the wall time of the whole process and, inside it, the time
  of the call alone (libraries already imported) are reported.
- concurrent: N processes forked from one interpreter that imported fastai (as a pre-forking
  server does) start `load_model` at once on one empty cache; the server counts the downloads.
- fleet: the concurrent cold start against an HTTP mirror and an S3 bucket (moto behind a
  proxy, `s3://` source) side by side, on one cache and on a cache per process.
- predict: the client's `predict()` against `learn.predict` on the quantized model, interleaved,
  one thread; p50/p95 and the largest probability difference.
- warm: warm starts only, side by side: a bare `load_learner` of the cached file, this tree's
  `load_model` with the release signed (model.sig, a fresh ECDSA key) and checked with
  `public_key=`, and, with `--compare-with`, another checkout's `load_model` of the same cache
  (e.g. the code before signatures) in the same fresh-process, interleaved way.

Used by `python -m benchmarks.run` (rows "start", "concurrent" and "fleet").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.manifest import QUANTIZED_FILE, Manifest

ROOT = Path(__file__).resolve().parent.parent


class StaticServer:
    """A static file server on 127.0.0.1 that counts GET requests per path."""

    def __init__(self, root: Path):
        counts: dict[str, int] = {}
        lock = threading.Lock()

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    counts[self.path] = counts.get(self.path, 0) + 1
                super().do_GET()

        self.counts = counts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def mirror_of(build_dir: Path, where: Path) -> tuple[Path, Manifest]:
    """A release-store layout (<model>/<version>/<files>, <model>/latest) of a build, by hard
    links, signed with a fresh key (model.sig; its public half in `where`/release.pub): servers
    take pickles from a mirror only with an authenticated manifest."""
    from pipeline import signing

    m = Manifest.read(build_dir)
    d = where / m.model / m.version
    d.mkdir(parents=True)
    for name in [f.name for f in m.files] + ["manifest.json"]:
        os.link(build_dir / name, d / name)
    (where / m.model / "latest").write_text(m.version + "\n")
    pair = signing.generate()
    (d / "model.sig").write_bytes(signing.Signer("key", pair.private_pem.encode()).sign(d, m))
    (where / "release.pub").write_text(pair.public_pem)
    return where, m


def _python(
    code: str, *args: str, tree: Path = ROOT, **env_extra: str
) -> tuple[float, dict[str, Any]]:
    """Run `code` in a fresh interpreter (importing `pipeline` from `tree`); return its wall time
    and the JSON it printed last."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore", **env_extra}
    t0 = time.perf_counter()
    proc = subprocess.run(  # cwd: `python -c` puts the working directory first on sys.path
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tree,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


BARE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from fastai.learner import load_learner
import spacy  # unpickling a text learner imports it (~1 s): imported first in both
t = time.perf_counter()
learn = load_learner(sys.argv[1])
print(json.dumps({"call": time.perf_counter() - t}))
"""

CLIENT = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import fastai.learner, spacy  # imported first in both: the call's time is the client's own work
from pipeline.client import MirrorSource, load_model
t = time.perf_counter()
trust = {"public_key": sys.argv[6]} if len(sys.argv) > 6 else {}  # none: an older checkout
loaded = load_model(sys.argv[1], sys.argv[2], sources=[MirrorSource(sys.argv[3])],
                    cache_dir=sys.argv[4], variants=["quantized"], smoke_test=sys.argv[5] == "1",
                    **trust)
print(json.dumps({"call": time.perf_counter() - t, "hit": loaded.fetched.cache_hit,
                  "smoke": loaded.smoke_passed}))
"""


def _ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):.0f} ms ({1000 * min(xs):.0f}-{1000 * max(xs):.0f})"


def cold_and_warm(build_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Cold and warm server starts, client against baseline (see the module docstring)."""
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("the cold-start baseline needs curl")
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp_s:
        tmp = Path(tmp_s)
        store, m = mirror_of(Path(build_dir), tmp / "store")
        q = m.variant("quantized")
        url = f"/{m.model}/{m.version}/{q.name}"
        rows: dict[str, dict[str, list[float]]] = {}

        def add(name: str, wall: float, call: float | None) -> None:
            r = rows.setdefault(name, {"wall": [], "call": []})
            r["wall"].append(wall)
            if call is not None:
                r["call"].append(call)

        with StaticServer(store) as server:
            warm = tmp / "warm-cache"
            key = str(store / "release.pub")
            _python(CLIENT, m.model, m.version, server.url, str(warm), "0", key)  # fill it once
            cached = warm / m.model / m.version / q.name
            for i in range(repeats):
                order = ["baseline", "client", "client-nosmoke"]
                for name in order if i % 2 == 0 else order[::-1]:
                    cache = tmp / f"cold-{name}-{i}"
                    if name == "baseline":
                        cache.mkdir()
                        t0 = time.perf_counter()
                        subprocess.run(
                            [curl, "-sf", "-o", str(cache / q.name), server.url + url], check=True
                        )
                        t_curl = time.perf_counter() - t0
                        wall, out = _python(BARE, str(cache / q.name))
                        add("cold: curl + bare load_learner", t_curl + wall, out["call"])
                        add("cold: curl alone", t_curl, None)
                    else:
                        smoke = "1" if name == "client" else "0"
                        wall, out = _python(
                            CLIENT, m.model, "latest", server.url, str(cache), smoke, key
                        )
                        assert not out["hit"]
                        label = "smoke test on" if smoke == "1" else "no smoke test"
                        add(f"cold: load_model, {label}", wall, out["call"])
                    shutil.rmtree(cache, ignore_errors=True)
                for name in order if i % 2 else order[::-1]:
                    if name == "baseline":
                        wall, out = _python(BARE, str(cached))
                        add("warm: bare load_learner of the cached file", wall, out["call"])
                    else:
                        smoke = "1" if name == "client" else "0"
                        wall, out = _python(
                            CLIENT, m.model, m.version, server.url, str(warm), smoke, key
                        )
                        assert out["hit"]
                        label = "smoke test on" if smoke == "1" else "verify + load"
                        add(f"warm: load_model ({label})", wall, out["call"])
            downloads = server.counts.get(url, 0)
    base_wall = {
        "cold": statistics.median(rows["cold: curl + bare load_learner"]["wall"]),
        "warm": statistics.median(rows["warm: bare load_learner of the cached file"]["wall"]),
    }
    base_call = statistics.median(rows["warm: bare load_learner of the cached file"]["call"])
    table = [
        f"{q.name} ({q.size / 1e6:.1f} MB) of {m.model} {m.version}; {repeats} fresh processes each, "
        "interleaved; median (min-max).",
        "",
        "| start | process wall time | ratio vs baseline | the call alone (libraries imported) |",
        "|---|---|---|---|",
    ]
    results: dict[str, Any] = {"repeats": repeats, "downloads": downloads, "rows": rows}
    for name, r in rows.items():
        ratio = statistics.median(r["wall"]) / base_wall[name.split(":")[0]]
        call = _ms(r["call"]) if r["call"] else "-"
        if name.startswith("warm: load_model"):
            call += f" (+{1000 * (statistics.median(r['call']) - base_call):.0f} ms vs bare)"
        table.append(f"| {name} | {_ms(r['wall'])} | {ratio:.2f}x | {call} |")
    results["table"] = table
    return results


SIGNED = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import fastai.learner, spacy  # imported first in all rows: the call's time is the client's own work
from pipeline.client import MirrorSource, load_model
t = time.perf_counter()
loaded = load_model(sys.argv[1], sys.argv[2], sources=[MirrorSource(sys.argv[3])],
                    cache_dir=sys.argv[4], variants=["quantized"], smoke_test=False,
                    public_key=sys.argv[5])
print(json.dumps({"call": time.perf_counter() - t, "hit": loaded.fetched.cache_hit,
                  "authenticated": loaded.fetched.authenticated}))
"""


def warm_rows(
    build_dir: Path, repeats: int = 5, compare_with: Path | None = None
) -> dict[str, Any]:
    """Warm starts side by side: bare load_learner, this tree with a signature check, and another
    checkout's load_model (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp_s:
        tmp = Path(tmp_s)
        store, m = mirror_of(Path(build_dir), tmp / "store")
        key = store / "release.pub"
        q = m.variant("quantized")
        rows: dict[str, dict[str, list[float]]] = {}
        with StaticServer(store) as server:
            cache = tmp / "cache"
            _python(SIGNED, m.model, m.version, server.url, str(cache), str(key))  # fill it
            cached = cache / m.model / m.version / q.name
            runs = {
                "bare load_learner of the cached file": lambda: _python(BARE, str(cached)),
                "load_model, signature checked (this tree)": lambda: _python(
                    SIGNED, m.model, m.version, server.url, str(cache), str(key)
                ),
            }
            if compare_with is not None:
                runs[f"load_model ({compare_with.name}, no signature)"] = lambda: _python(
                    CLIENT, m.model, m.version, server.url, str(cache), "0", tree=compare_with
                )
            names = list(runs)
            for i in range(repeats):
                for name in names if i % 2 == 0 else names[::-1]:
                    wall, out = runs[name]()
                    if "authenticated" in out:
                        assert out["hit"] and out["authenticated"], out
                    r = rows.setdefault(name, {"wall": [], "call": []})
                    r["wall"].append(wall)
                    r["call"].append(out["call"])
        check = _check_cost(store / m.model / m.version, key)
    base = rows[names[0]]
    table = [
        f"Warm start, {q.name} ({q.size / 1e6:.1f} MB) of {m.model} {m.version}, smoke test off; "
        f"{repeats} fresh processes per row, interleaved; median (min-max).",
        "",
        "| warm start | process wall time | the call alone | call vs bare |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        delta = 1000 * (statistics.median(r["call"]) - statistics.median(base["call"]))
        table.append(
            f"| {name} | {_ms(r['wall'])} | {_ms(r['call'])} | "
            f"{'-' if r is base else f'{delta:+.0f} ms'} |"
        )
    table += [
        "",
        f"The signature check alone (`Trust.check`: the bundle's ECDSA signature, then sha256 of "
        f"manifest.json against it), in one process, {check['n']} times: median "
        f"{check['median_ms']:.2f} ms (min {check['min_ms']:.2f} ms).",
    ]
    return {"repeats": repeats, "rows": rows, "table": table, "check": check}


def _check_cost(release_dir: Path, key: Path, n: int = 200) -> dict[str, Any]:
    """Median time of the client's trust check of one signed manifest (imports excluded)."""
    from pipeline.client.trust import Trust

    manifest_bytes = (release_dir / "manifest.json").read_bytes()
    bundle = (release_dir / "model.sig").read_bytes()
    trust = Trust.from_options(key)
    trust.check(manifest_bytes, bundle, "warm-up")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        trust.check(manifest_bytes, bundle, "manifest.json")
        times.append(time.perf_counter() - t0)
    return {"n": n, "median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times)}


FORKER = """
import json, os, sys, time
from pathlib import Path
import warnings; warnings.simplefilter("ignore")
import fastai.learner, fastai.text.all, spacy
spacy.blank("en")
from pipeline.client import MirrorSource, load_model, parse_source
url, cache, n, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
separate = len(sys.argv) > 5 and sys.argv[5] == "1"  # one cache per process: N servers
pin = sys.argv[6] if len(sys.argv) > 6 else None  # the manifest's blake3: a remote pickle's trust
r, w = os.pipe()
res_r, res_w = os.pipe()
kids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        t = time.perf_counter()
        source = parse_source(url)  # made in the child: no connection pool crosses a fork
        loaded = load_model(model, sources=[source], cache_dir=f"{cache}/{i}" if separate else cache,
                            lock_timeout=600, variants=["quantized"], pin=pin)
        line = json.dumps({"s": time.perf_counter() - t, "hit": loaded.fetched.cache_hit}) + "\\n"
        os.write(res_w, line.encode())
        os._exit(0)
    kids.append(pid)
os.close(r)
os.close(res_w)
time.sleep(0.3)
t0 = time.perf_counter()
os.close(w)
statuses = [os.waitpid(p, 0)[1] for p in kids]
total = time.perf_counter() - t0
data = b""
while chunk := os.read(res_r, 1 << 16):
    data += chunk
lines = data.decode().splitlines()
print(json.dumps({"total": total, "failed": sum(s != 0 for s in statuses),
                  "each": [json.loads(x) for x in lines]}))
"""


def fleet(build_dir: Path, processes: int = 16) -> dict[str, Any]:
    """The concurrent cold start against an HTTP mirror and an S3 bucket side by side (moto's
    server behind the tests' proxy, the release put there by `S3Publisher`, read with the
    `s3://` source): N processes on one cache (a pre-forking server), then N processes with a
    cache each (N servers starting together); the servers count the model file's downloads."""
    from pipeline.checksums import blake3_file
    from pipeline.config import S3Target
    from pipeline.publishers.s3 import S3Publisher
    from tests.emulators.s3 import FAKE_AWS_ENV, S3Emulator

    aws = dict(FAKE_AWS_ENV)
    os.environ.update(aws)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        store, m = mirror_of(Path(build_dir), tmp / "store")
        q = m.variant("quantized")
        with StaticServer(store) as server, S3Emulator() as s3:
            s3.create_bucket("releases")
            t0 = time.perf_counter()
            S3Publisher(S3Target("releases", "fleet", s3.url, "us-east-1")).publish(
                Path(build_dir), m
            )
            published = time.perf_counter() - t0
            for separate in (False, True):
                for kind, spec in (
                    ("HTTP mirror", server.url),
                    ("S3 (s3:// source)", "s3://releases/fleet"),
                ):
                    server.counts.clear()
                    s3.clear_log()
                    cache = tmp / f"cache-{kind[:2]}-{int(separate)}"
                    _, out = _python(
                        FORKER,
                        spec,
                        str(cache),
                        str(processes),
                        m.model,
                        "1" if separate else "0",
                        blake3_file(Path(build_dir) / "manifest.json"),
                        OMP_NUM_THREADS="1",
                        AWS_ENDPOINT_URL_S3=s3.url,
                        **aws,
                    )
                    key = f"/{m.model}/{m.version}/{q.name}"
                    downloads = (
                        server.counts.get(key, 0)
                        if spec.startswith("http")
                        else s3.count("GET", f"/releases/fleet{key}$")
                    )
                    requests = (
                        sum(server.counts.values()) if spec.startswith("http") else len(s3.log)
                    )
                    each = sorted(x["s"] for x in out["each"])
                    rows.append(
                        {
                            "source": kind,
                            "caches": processes if separate else 1,
                            "downloads": downloads,
                            "requests": requests,
                            "total": out["total"],
                            "median": statistics.median(each),
                            "max": max(each),
                            "failed": out["failed"],
                        }
                    )
    table = [
        f"{q.name} ({q.size / 1e6:.1f} MB) of {m.model} {m.version}; {processes} processes forked "
        f"after importing fastai, one thread each. S3 publish of the release: {published:.1f} s.",
        "",
        "| source | caches | downloads of the model file | requests in all | all loaded after | per process (median, max) | failed |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['source']} | {r['caches']} | {r['downloads']} | {r['requests']} | {r['total']:.1f} s | "
        f"{r['median']:.2f} s, {r['max']:.2f} s | {r['failed']} |"
        for r in rows
    ]
    return {"processes": processes, "rows": rows, "published_s": published, "table": table}


def concurrent(build_dir: Path, processes: int = 16) -> dict[str, Any]:
    """N processes load one release at once on one empty cache (see the module docstring)."""
    from pipeline.checksums import blake3_file

    with tempfile.TemporaryDirectory(prefix="bench-conc-") as tmp_s:
        tmp = Path(tmp_s)
        store, m = mirror_of(Path(build_dir), tmp / "store")
        q = m.variant("quantized")
        with StaticServer(store) as server:
            # one thread per worker, as pre-forking servers run (and OpenMP does not survive fork)
            _, out = _python(
                FORKER,
                server.url,
                str(tmp / "cache"),
                str(processes),
                m.model,
                "0",  # one cache for all
                blake3_file(store / m.model / m.version / "manifest.json"),  # trust: a pin
                OMP_NUM_THREADS="1",
            )
            downloads = server.counts.get(f"/{m.model}/{m.version}/{q.name}", 0)
    each = sorted(x["s"] for x in out["each"])
    table = [
        "| processes | downloads of the model file | all loaded after | per process (median, max) | failed |",
        "|---|---|---|---|---|",
        f"| {processes} | {downloads} | {out['total']:.1f} s | {statistics.median(each):.2f} s, "
        f"{max(each):.2f} s | {out['failed']} |",
    ]
    return {"processes": processes, "downloads": downloads, **out, "table": table}


PREDICT = """
import json, sys, time, warnings, statistics, csv
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[3]))
from fastai.learner import load_learner
from pipeline.client.predict import Predictor
learn = load_learner(sys.argv[1])
fast = Predictor(learn)
with open(sys.argv[2], newline="", encoding="utf-8") as f:
    texts = [r["text"] for r in csv.DictReader(f)]
rounds = int(sys.argv[4])
a, b, worst, same = [], [], 0.0, 0
with learn.no_bar():
    for t in texts[:5]:
        learn.predict(t); fast(t)
    for r in range(rounds):
        for i, t in enumerate(texts):
            order = (0, 1) if (i + r) % 2 == 0 else (1, 0)
            for k in order:
                s = time.perf_counter()
                out = learn.predict(t) if k == 0 else fast(t)
                (a if k == 0 else b).append(time.perf_counter() - s)
                if k == 0: ref = out
                else: got = out
            if r == 0:
                same += str(ref[0]) == got[0]
                worst = max(worst, max(abs(x - y) for x, y in zip(ref[2].tolist(), got[1].values())))
q = lambda xs, p: sorted(xs)[int(p / 100 * (len(xs) - 1))]
print(json.dumps({"n": len(texts), "rounds": rounds, "learn_p50": statistics.median(a), "learn_p95": q(a, 95),
                  "fast_p50": statistics.median(b), "fast_p95": q(b, 95), "same_label": same,
                  "max_prob_diff": worst}))
"""


def predict_row(build_dir: Path, threads: int = 1, rounds: int = 2) -> dict[str, Any]:
    """The client's predict() against learn.predict on the quantized model (one process)."""
    _, out = _python(
        PREDICT,
        str(Path(build_dir) / QUANTIZED_FILE),
        str(ROOT / "pipeline" / "data" / "eval.csv"),
        str(threads),
        str(rounds),
    )
    table = [
        f"{out['n']} eval queries x {rounds} rounds, interleaved, {threads} thread(s).",
        "",
        "| | p50 | p95 |",
        "|---|---|---|",
        f"| learn.predict | {1000 * out['learn_p50']:.2f} ms | {1000 * out['learn_p95']:.2f} ms |",
        f"| client predict() | {1000 * out['fast_p50']:.2f} ms | {1000 * out['fast_p95']:.2f} ms |",
        "",
        f"Speedup at p50: {out['learn_p50'] / out['fast_p50']:.2f}x; same label on "
        f"{out['same_label']}/{out['n']}; largest probability difference {out['max_prob_diff']:.1e}.",
    ]
    return {**out, "table": table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", type=Path, default=ROOT / "artifacts" / "build" / "1.0.0")
    ap.add_argument("--rows", default="start,concurrent,predict")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare-with", type=Path, help="rows 'warm': another checkout to time too")
    args = ap.parse_args(argv)
    rows = args.rows.split(",")
    out: dict[str, Any] = {}
    if "start" in rows:
        out["start"] = cold_and_warm(args.build_dir, args.repeats)
        print("\n".join(["## Server start", "", *out["start"]["table"], ""]), flush=True)
    if "warm" in rows:
        out["warm"] = warm_rows(args.build_dir, args.repeats, args.compare_with)
        print("\n".join(["## Warm start with a signature check", "", *out["warm"]["table"], ""]))
    if "concurrent" in rows:
        out["concurrent"] = concurrent(args.build_dir, args.processes)
        print("\n".join(["## Concurrent cold starts", "", *out["concurrent"]["table"], ""]))
    if "fleet" in rows:
        out["fleet"] = fleet(args.build_dir, args.processes)
        print(
            "\n".join(["## Fleet cold start: HTTP mirror and S3", "", *out["fleet"]["table"], ""])
        )
    if "predict" in rows:
        out["predict"] = predict_row(args.build_dir, args.threads)
        print("\n".join(["## predict()", "", *out["predict"]["table"], ""]), flush=True)
    json.dump(out, sys.stderr, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
