"""Object-store checkpoints against raw obstore, on a local SeaweedFS, in the same run.

Measures, for one buffer of random bytes (default 1 GiB):

* durable save: ``commit.stage`` + ``commit.put_staged(buffer)`` + ``commit.finish`` (manifest
  create-only) — against a raw ``obstore.put`` of the same bytes (obstore's defaults);
* download: ``storage.materialize`` (into the local cache: ranged GETs in parallel, fsync,
  rename) — against a raw ``obstore.get(...).bytes()`` of the same object into memory, and a raw
  streamed get written to a file with fsync.

Prints medians and ratios (raw time / ours: >= 0.8 is the goal; > 1 is faster than raw).
The server is started with scripts/s3-up.sh (its data under ``--workdir``) and stopped at the end,
unless ``--use-env`` takes AWS_ENDPOINT_URL & co from the environment (``eval "$(bash scripts/s3-up.sh)"``).

    python bench/object_store_bench.py                  # 1 GiB, 3 repetitions (~2 min)
    python bench/object_store_bench.py --mib 256 --reps 1
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
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from unbroken.storage import open_storage  # noqa: E402


def start_server(workdir: Path, port: int) -> dict[str, str]:
    env = {**os.environ, "S3_UP_DIR": str(workdir / "s3"), "S3_UP_PORT": str(port), "S3_UP_BUCKET": "bench"}
    out = subprocess.run(["bash", str(REPO / "scripts/s3-up.sh")], env=env, check=True, capture_output=True,
                         text=True).stdout
    exports = dict(line[len("export "):].split("=", 1) for line in out.splitlines() if line.startswith("export "))
    os.environ.update(exports)
    return exports


def stop_server(workdir: Path, port: int) -> None:
    env = {**os.environ, "S3_UP_DIR": str(workdir / "s3"), "S3_UP_PORT": str(port)}
    subprocess.run(["bash", str(REPO / "scripts/s3-down.sh")], env=env, check=False)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def raw_get_to_file(obs, store, key: str, path: Path) -> None:
    with open(path, "wb") as f:
        for chunk in obs.get(store, key).stream(min_chunk_size=16 << 20):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def one_round(storage, obs, buf: np.ndarray, scratch: Path) -> dict[str, float]:
    store, name = storage.client.store, f"ck-{uuid.uuid4().hex[:8]}"
    raw_key = f"raw-{uuid.uuid4().hex[:8]}"
    out = {"raw put": timed(lambda: obs.put(store, raw_key, memoryview(buf)))}

    def save() -> None:
        staged = storage.commit.stage(name)
        storage.commit.put_staged(staged, "tensors.bin", memoryview(buf))
        storage.commit.finish(staged, name, "MANIFEST.json", b'{"bench": true}')

    out["unbroken save"] = timed(save)
    out["raw get (memory)"] = timed(lambda: obs.get(store, raw_key).bytes())
    out["raw get (file+fsync)"] = timed(lambda: raw_get_to_file(obs, store, raw_key, scratch / "raw.bin"))
    (scratch / "raw.bin").unlink()
    out["unbroken materialize"] = timed(lambda: storage.materialize(name))
    assert (storage.cache / name / "tensors.bin").stat().st_size == buf.nbytes
    storage.delete(name)
    obs.delete(store, raw_key)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="buffer size in MiB (default 1024)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=18433)
    parser.add_argument("--workdir", type=Path, default=None, help="server data and cache (default: a temp dir)")
    parser.add_argument("--use-env", action="store_true", help="use the server of the environment ($UNBROKEN_STORAGE)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    import obstore as obs

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="unbroken-objbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.use_env:
        start_server(workdir, args.port)
    try:
        url = f"{os.environ['UNBROKEN_STORAGE']}/bench-{uuid.uuid4().hex[:8]}"
        storage = open_storage(url, cache_dir=workdir / "cache")
        buf = np.random.default_rng(0).integers(0, 256, args.mib << 20, dtype=np.uint8)  # incompressible
        rounds = [one_round(storage, obs, buf, workdir) for _ in range(args.reps)]
    finally:
        if not args.use_env:
            stop_server(workdir, args.port)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rounds, args)


def report(rounds: list[dict[str, float]], args) -> None:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    mib = args.mib
    print(f"\n{mib} MiB, {len(rounds)} repetition(s), medians, SeaweedFS on 127.0.0.1\n")
    print("| operation | seconds | MiB/s |\n| --- | ---: | ---: |")
    for key, seconds in med.items():
        print(f"| {key} | {seconds:.2f} | {mib / seconds:.0f} |")
    ratios = {
        "save vs raw put": med["raw put"] / med["unbroken save"],
        "materialize vs raw get (memory)": med["raw get (memory)"] / med["unbroken materialize"],
        "materialize vs raw get (file+fsync)": med["raw get (file+fsync)"] / med["unbroken materialize"],
    }
    print("\nratios (raw time / unbroken time; goal >= 0.8):")
    for key, value in ratios.items():
        print(f"  {key}: {value:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "object_store.json").write_text(json.dumps({"mib": mib, "rounds": rounds, "median": med,
                                                            "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
