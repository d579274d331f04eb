"""The registry and the page at universe size: 500 champions, one ticker with 200 versions.

One real bundle at the nightly shape (MSFT sample from 2015, recommended preset,
stacked_lstm [64, 32], one epoch; built by the functions the flow's steps call, via
tests/tiny_models.py) is copied to 500 tickers (each its own lake partition, registry
and champion v1); ticker T000 gets 200 versions (champion v200, 200 promotions).

Measured in one process, side by side:
- `GET /` (every champion's card) cold (the app's first request loads every champion)
  and warm; `GET /tickers/T000` (every version listed); `registry.show(T000)` (what
  `tickercast models show` lists) and the whole `tickercast models show T000` command;
- how much of each is re-hashing bundle files (`bundle.file_sha256`, counted and timed);
- before: every check re-hashes every file (`bundle.checked_sha256` bypassed, as before
  the fix); after: the code as shipped, a file's sha256 kept per process under its
  (path, inode, size, mtime_ns, ctime_ns), so an unchanged bundle is hashed once.
Run: python bench/registry_scale.py [--champions 500] [--versions 200]
(writes the RESULTS.md row `registry_scale`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BUSY = "T000"


def real_bundle(data_dir: Path) -> Path:
    """One bundle of the nightly's shape, made by the flow steps' own functions."""
    from tests.tiny_models import TICKER, tiny_config, train_version
    from tickercast.market.ingest import ingest_ticker

    config = tiny_config(
        data_dir,
        preset="recommended",
        start="2015-01-01",
        lookback=60,
        units=[64, 32],
        epochs=1,
        batch_size=256,
    )
    ingested = ingest_ticker(TICKER, "sample", data_dir, start="2015-01-01")
    return train_version(data_dir, ingested, config, "universe")


def _registry(name: str, versions: int) -> dict:
    events = [
        {
            "at": "2026-01-01T00:00:00+00:00",
            "version": v,
            "action": "promote",
            "reason": "bench",
            "champion_before": v - 1 or None,
            "champion_after": v,
            "scores": {},
        }
        for v in range(1, versions + 1)
    ]
    return {
        "name": name,
        "champion": versions,
        "lineage": list(range(1, versions + 1)),
        "history": events,
    }


def universe(root: Path, champions: int, versions: int) -> tuple[Path, int]:
    """`champions` tickers with a champion each, BUSY with `versions`; returns the data
    dir and one bundle's size in bytes."""
    from tickercast import layout
    from tickercast.market import lake

    source = root / "source"
    bundle = real_bundle(source)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    partition = lake.partition_path(source, "MSFT")
    data = root / "data"
    for i in range(champions):
        name = f"T{i:03d}"
        count = versions if name == BUSY else 1
        for v in range(1, count + 1):
            shutil.copytree(bundle, layout.versions_dir(data, name) / str(v))
        (layout.model_dir(data, name) / "registry.json").write_text(
            json.dumps(_registry(name, count))
        )
        target = lake.partition_path(data, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(partition, target)
    return data, size


class HashMeter:
    """Counts and times the files bundle verification reads; without `cache` every
    check reads every file (the code before the fix: `checked_sha256` bypassed)."""

    def __init__(self, cache: bool):
        import tickercast.delivery.bundle as bundle

        self.module, self.original = bundle, bundle.file_sha256
        self.patched = "file_sha256" if cache else "checked_sha256"
        self.saved = getattr(bundle, self.patched)
        self.calls = self.hashed = 0
        self.bytes = 0
        self.seconds = 0.0

    def __call__(self, path):
        self.calls += 1
        started = time.perf_counter()
        digest = self.original(path)
        self.seconds += time.perf_counter() - started
        self.hashed += 1
        self.bytes += os.stat(path).st_size
        return digest

    def __enter__(self) -> HashMeter:
        self.module._sha256_of.cache_clear()
        setattr(self.module, self.patched, self)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.patched, self.saved)

    def take(self) -> dict:
        out = {"hashed_files": self.hashed, "hashed_mb": self.bytes / 2**20, "hash_s": self.seconds}
        self.calls = self.hashed = self.bytes = 0
        self.seconds = 0.0
        return out


def timed(meter: HashMeter, call) -> dict:
    started = time.perf_counter()
    call()
    return {"seconds": time.perf_counter() - started, **meter.take()}


def requests(data: Path, cache: bool, cold: bool) -> dict:
    """The page and registry calls, each timed with its hashing."""
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app
    from tickercast.delivery.registry import show

    def get(url: str):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])

    out = {}
    with HashMeter(cache) as meter, TestClient(create_app(data)) as client:
        if cold:
            out["GET / (cold: loads every champion)"] = timed(meter, lambda: get("/"))
        else:
            get(f"/tickers/{BUSY}")  # the busy ticker's champion loaded, as on any page
        for i in range(2):
            out[f"GET / (warm, #{i + 1})"] = timed(meter, lambda: get("/"))
        for i in range(2):
            out[f"GET /tickers/{BUSY} (#{i + 1})"] = timed(meter, lambda: get(f"/tickers/{BUSY}"))
        for i in range(2):
            out[f"registry.show({BUSY}) (#{i + 1})"] = timed(meter, lambda: show(data, BUSY))
    return out


def cli_show(data: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("tickercast")),
            "models",
            "show",
            BUSY,
            "--data-dir",
            str(data),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode:  # keep the in-process figures; say why the command failed
        print("models show failed:", done.stderr.strip().splitlines()[-1:], file=sys.stderr)
        return float("nan")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--champions", type=int, default=500)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-scale-") as tmp:
        data, size = universe(Path(tmp), args.champions, args.versions)
        result = {
            "bundle_mb": size / 2**20,
            "today": requests(data, cache=False, cold=True),
            "cached_hashes": requests(data, cache=True, cold=False),
        }
        print(json.dumps(result, indent=1), flush=True)  # before the CLI: never lost
        result["cli_models_show_s"] = cli_show(data)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    from bench.results import record

    record("registry_scale", row(result, args.champions, args.versions))


def row(r: dict, champions: int, versions: int) -> str:
    today, fixed = r["today"], r["cached_hashes"]

    def cell(d: dict, key: str) -> str:
        v = d[key]
        return f"{v['seconds']:.2f} s ({v['hashed_files']} files, {v['hashed_mb']:.0f} MB hashed)"

    page, busy = "GET / (warm, #2)", f"GET /tickers/{BUSY} (#2)"
    listing = f"registry.show({BUSY}) (#2)"
    cold = today["GET / (cold: loads every champion)"]
    return (
        f"| registry and page at universe size: {champions} champions, {BUSY} with {versions} "
        f"versions (bundle {r['bundle_mb']:.1f} MB, nightly shape) | today: GET / cold "
        f"{cold['seconds']:.0f} s ({cold['hashed_mb']:.0f} MB hashed), warm "
        f"{cell(today, page)}; GET /tickers/{BUSY} {cell(today, busy)}; models show "
        f"{cell(today, listing)}, whole CLI {r['cli_models_show_s']:.1f} s | sha256 kept "
        f"per (path, inode, size, mtime, ctime) in the process (bundle.checked_sha256): "
        f"GET / {cell(fixed, page)}; "
        f"GET /tickers/{BUSY} {cell(fixed, busy)}; show {cell(fixed, listing)} | "
        f"/tickers/{BUSY} {fixed[busy]['seconds'] / today[busy]['seconds']:.2f}x, GET / "
        f"{fixed[page]['seconds'] / today[page]['seconds']:.2f}x, show "
        f"{fixed[listing]['seconds'] / today[listing]['seconds']:.2f}x |"
    )


if __name__ == "__main__":
    main()
