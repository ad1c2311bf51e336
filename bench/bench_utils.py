"""Helpers shared by the benchmarks: page cache, dd, disk space, machine description, statistics.

Nothing here knows about checkpoint methods; see ``ckpt_methods`` for those.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

GiB = 1 << 30
DD_BLOCK_BYTES = 16 << 20
_DROP_CACHES = "/proc/sys/vm/drop_caches"


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; return False if the kernel refused.

    Needs root. A False return means "cold" measurements are really warm, and the caller
    must say so wherever it reports them.
    """
    os.sync()
    try:
        with open(_DROP_CACHES, "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def cold_after_reading(*paths: Path) -> bool:
    """Read every file under ``paths`` once (untimed), then :func:`drop_caches`.

    Every cold measurement starts from this same state: cold in this machine's page cache,
    just read below it. On the virtual disks measured here, a cold buffered read of bytes
    last read 0 s before took 0.45 s per GiB, 5 s before 1.5 s, 20 s before 2.1 s (the
    host's own caching; direct reads did not show it), so without this a cold read measured
    how long ago its data was last touched: a limit measured right after reading the same
    file beat a restore of a file written seconds earlier by 2-3x for no reason of its own.
    """
    for path in paths:
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
        for f in files:
            dd(f"if={f}", "of=/dev/null")
    return drop_caches()


def timed(fn: Callable[[], object]) -> float:
    """Return the wall-clock seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values: Sequence[float]) -> float | None:
    """Median of the values that are not None, or None when there are none."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def dd(*operands: str) -> float:
    """Run ``dd bs=16M status=none <operands>`` and return its wall-clock seconds."""
    return dd_parallel([operands])


def dd_parallel(jobs: Sequence[Sequence[str]]) -> float:
    """Run one ``dd bs=16M status=none <operands>`` per job at once; seconds until all end."""
    cmds = [["dd", f"bs={DD_BLOCK_BYTES}", "status=none", *ops] for ops in jobs]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd) for cmd in cmds]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - t0
    for cmd, code in zip(cmds, codes):
        if code:
            raise subprocess.CalledProcessError(code, cmd)
    return seconds


def stripes(n_blocks: int, ways: int) -> list[tuple[int, int]]:
    """(first block, block count) of ``ways`` contiguous stripes covering ``n_blocks``."""
    per = -(-n_blocks // ways)
    return [(k * per, min(per, n_blocks - k * per)) for k in range(ways) if k * per < n_blocks]


def write_random_file(path: Path, n_bytes: int, seed: int = 0, chunk: int = 64 << 20) -> None:
    """Write ``n_bytes`` of incompressible random bytes to ``path`` and fsync it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = n_bytes
        while left:
            n = min(chunk, left)
            f.write(rng.bytes(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def check_free_space(path: Path, need_bytes: int) -> int:
    """Return the free bytes under ``path``; raise SystemExit if fewer than ``need_bytes``."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise SystemExit(
            f"not enough free disk space under {path}: {free / GiB:.1f} GiB free, "
            f"{need_bytes / GiB:.1f} GiB needed (about 3x the largest state)"
        )
    return free


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 if unreadable)."""
    return _meminfo().get("MemAvailable", 0)


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _disk(path: Path) -> str:
    """Device, file system, and (for a whole disk) model, size and rotational flag."""
    source_fs = _command_output(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(path)])
    device = source_fs.split()[0] if source_fs != "unknown" else ""
    details = _command_output(["lsblk", "-d", "-n", "-P", "-o", "MODEL,SIZE,ROTA", device]) if device else ""
    return f"{source_fs} ({details or 'no lsblk details'})"


def machine_info(workdir: Path) -> dict[str, str]:
    """Describe the machine the numbers come from."""
    import numpy
    import torch

    try:
        import safetensors

        st_version = safetensors.__version__
    except ImportError:
        st_version = "not installed"
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "ram": f"{_meminfo().get('MemTotal', 0) / GiB:.1f} GiB",
        "disk (workdir)": _disk(workdir),
        "workdir": str(workdir),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": st_version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    """Format a number for a table; None (not measured) becomes an en dash."""
    return "–" if value is None else f"{value:.{digits}f}"


#: The body of one busy process: a single-threaded float32 matmul loop (a CPU-bound training
#: step's arithmetic), counting its steps so that the work done beside a measurement is known.
_BUSY_LOOP = """
import os, signal, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
steps, stop = 0, []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
a = torch.randn(384, 384)
b = torch.randn(384, 384)
print("ready", flush=True)
t0 = time.perf_counter()
while not stop:
    a = torch.tanh(a @ b)
    steps += 1
print(steps / (time.perf_counter() - t0), flush=True)
"""


class BusyLoad:
    """``n`` CPU-bound helper processes (one core each) running while the ``with`` block runs.

    Each is a separate interpreter (``subprocess``, nothing inherited from the benchmark's
    memory) looping over single-threaded matmuls; ``__enter__`` returns once all of them run,
    ``__exit__`` stops them (SIGTERM) and records each one's steps per second in
    ``steps_per_s``, so a report can say how much work went on beside the measurements.
    """

    def __init__(self, n: int):
        self.n = n
        self.steps_per_s: list[float] = []
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BusyLoad":
        import sys

        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for _ in range(self.n):
            self._procs.append(subprocess.Popen([sys.executable, "-c", _BUSY_LOOP], env=env, text=True,
                                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
        for proc in self._procs:
            if proc.stdout.readline().strip() != "ready":
                self.__exit__(None, None, None)
                raise RuntimeError("a busy helper process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            out, _ = proc.communicate(timeout=30)
            try:
                self.steps_per_s.append(float(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                pass
        self._procs = []
