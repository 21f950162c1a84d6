"""Helpers shared by the benchmark scripts: timing, peak memory, machine facts, tables, allocators."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

# glibc settings that stop large allocations from being fresh mmaps (whose pages fault in on first
# touch) and stop freed memory from being handed back to the kernel at once. BUILD_NOTES.md measured
# the first: 750 x 400 KB allocations took 1.2 s with the defaults and 0.03 s with it; the second
# keeps the heap from being trimmed after each large free, which otherwise brings the faults back.
FAST_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
}
ALLOCATORS = {
    "default": "glibc malloc, default settings",
    "tuned": "glibc malloc with "
    + " ".join(f"{k}={v}" for k, v in FAST_MALLOC_ENV.items()),
}


def current_allocator() -> str:
    return "tuned" if all(os.environ.get(k) == v for k, v in FAST_MALLOC_ENV.items()) else "default"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of fn() in seconds, after `warmup` untimed calls. CUDA: CUDA events."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def time_interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int) -> Dict[str, List[float]]:
    """Seconds of each of ``repeats`` calls of every function, the functions interleaved (A, B, C,
    A, B, C, ...) so that the machine's drift hits all alike; after ``warmup`` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            begin = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - begin)
    return times


def copy_floor(nbytes: int, device: torch.device, repeats: int, warmup: int) -> float:
    """Seconds for a plain device copy that moves `nbytes` in total (reads nbytes / 2, writes
    nbytes / 2) between buffers allocated beforehand: the memory-bandwidth floor for an op that must
    move that many bytes."""
    half = max(1, nbytes // 2)
    src = torch.ones(half, dtype=torch.uint8, device=device)
    dst = torch.zeros(half, dtype=torch.uint8, device=device)
    return time_median(lambda: dst.copy_(src), device, repeats, warmup)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_info() -> Dict[str, object]:
    """The training command's machine record (CPU model, cores, GPU, torch), plus threads and Python."""
    from snn_cuda.train import machine

    return {**machine(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def run_self_in_subprocess(args: List[str], env_extra: Optional[Dict[str, Optional[str]]] = None) -> dict:
    """Runs `python <this script> args...` and parses the JSON it prints on its last line.
    env_extra: variables to set; a value of None removes the variable."""
    env = dict(os.environ)
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, sys.argv[0], *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown_table(headers: List[str], rows: List[List[object]]) -> str:
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
