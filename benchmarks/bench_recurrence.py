"""The fused spiking recurrence against the reference loop, and against the memory-bandwidth floor.

For each case (device, dtype, T, lanes = batch x H): forward and forward+backward time of the
reference loop (eager; optionally torch.compile'd with --compile), and of the fused op; the
bandwidth floor (a plain copy moving the bytes the fused op must move, measured in the same run);
and the peak memory of forward+backward.

  python benchmarks/bench_recurrence.py                       # CPU grid, both allocators
  python benchmarks/bench_recurrence.py --device cuda --dtype float32 float16 bfloat16
  python benchmarks/bench_recurrence.py --T 128 --lanes 100000 --repeats 9

Times are medians of --repeats after --warmup calls. On CPU every case runs twice, in two child
processes: with glibc's default malloc and with it tuned (see common.ALLOCATORS), because the
per-step loop allocates several large tensors per step and these machines fault memory in slowly.
Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the growth of the process's peak RSS
over forward+backward, measured in a fresh child process per (case, implementation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snn_cuda  # noqa: E402
from snn_cuda import reference  # noqa: E402

from common import (  # noqa: E402
    ALLOCATORS,
    FAST_MALLOC_ENV,
    command_line,
    copy_floor,
    current_allocator,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    rss_bytes,
    run_self_in_subprocess,
    synchronize,
    time_median,
)

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
PARAMS = dict(decay_multiplier=0.9, threshold=1.0, penalty_threshold=1.5)


def make_inputs(device, dtype, T, lanes, H, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    batch = max(1, lanes // H)
    # Mean and spread chosen so that about a third of the (step, lane) pairs fire.
    x = torch.randn(T, batch, H, generator=g, device=device, dtype=torch.float32) * 1.2 + 0.5
    x = x.to(dtype)
    upstream = [torch.randn(x.shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(2)]
    return x, upstream


def implementations(compile_reference: bool):
    impls = {"reference": reference.spiking_recurrence, "fused": snn_cuda.spiking_recurrence}
    if compile_reference:
        impls["compiled"] = torch.compile(reference.spiking_recurrence, dynamic=False)
    return impls


def fwd_fn(fn, x, reset):
    def run():
        with torch.no_grad():
            return fn(x, **PARAMS, reset=reset)
    return run


def fwd_bwd_fn(fn, x, upstream, reset):
    xg = x.detach().requires_grad_()

    def run():
        states, outputs = fn(xg, **PARAMS, reset=reset)
        torch.autograd.backward([states, outputs], upstream)
        xg.grad = None
    return run


def floor_bytes(n, itemsize):
    """Bytes the fused op must move: forward reads the input and writes states, outputs and 1-bit
    gates; backward reads both upstream gradients and the gates and writes the input gradient."""
    fwd = n * itemsize * 3 + n // 8
    bwd = n * itemsize * 3 + n // 8
    return fwd, fwd + bwd


def time_case(device, dtype, T, lanes, H, reset, args):
    n = T * max(1, lanes // H) * H
    x, upstream = make_inputs(device, dtype, T, lanes, H)
    row = {"device": device.type, "dtype": str(dtype).replace("torch.", ""), "T": T, "lanes": lanes,
           "elements": n, "allocator": current_allocator() if device.type == "cpu" else "torch-cuda"}
    fwd_bytes, fb_bytes = floor_bytes(n, x.element_size())
    row["floor_fwd_s"] = copy_floor(fwd_bytes, device, args.repeats, args.warmup)
    row["floor_fwd_bwd_s"] = copy_floor(fb_bytes, device, args.repeats, args.warmup)
    row["bytes_fwd_bwd"] = fb_bytes
    for name, fn in implementations(args.compile).items():
        if name != "fused" and n > args.max_reference_elements:
            row[f"{name}_fwd_s"] = row[f"{name}_fwd_bwd_s"] = None
            continue
        if name == "compiled":  # the first calls compile (forward graph, then forward+backward)
            begin = time.perf_counter()
            fwd_fn(fn, x, reset)()
            fwd_bwd_fn(fn, x, upstream, reset)()
            synchronize(device)
            row["compile_s"] = time.perf_counter() - begin
        row[f"{name}_fwd_s"] = time_median(fwd_fn(fn, x, reset), device, args.repeats, args.warmup)
        row[f"{name}_fwd_bwd_s"] = time_median(
            fwd_bwd_fn(fn, x, upstream, reset), device, args.repeats, args.warmup
        )
    if device.type == "cuda" and not args.no_memory:
        for name, fn in implementations(False).items():
            if name != "fused" and n > args.max_reference_elements:
                row[f"{name}_peak_bytes"] = None
                continue
            run = fwd_bwd_fn(fn, x, upstream, reset)
            synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run()
            synchronize(device)
            row[f"{name}_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    return row


def memory_child(impl, dtype, T, lanes, H, reset):
    """Runs in a fresh process: peak RSS growth of one forward+backward on CPU."""
    device = torch.device("cpu")
    x, upstream = make_inputs(device, DTYPES[dtype], T, lanes, H)
    fn = implementations(False)[impl]
    # Warm the code paths on a tiny input so that lazy initialisation is not counted.
    fwd_bwd_fn(fn, x[:2, :1], [u[:2, :1] for u in upstream], reset)()
    base = max(rss_bytes(), peak_rss_bytes())
    fwd_bwd_fn(fn, x, upstream, reset)()
    return {"peak_bytes": max(0, peak_rss_bytes() - base)}


def cases(args):
    for device_name in args.device:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"# skipping device {device_name}: no CUDA device visible", file=sys.stderr)
            continue
        for dtype_name in args.dtype:
            for T in args.T:
                for lanes in args.lanes:
                    if T * lanes > args.max_elements:
                        print(f"# skipping T={T} lanes={lanes}: over --max-elements", file=sys.stderr)
                        continue
                    yield device, dtype_name, T, lanes


def timing_child(args):
    rows = []
    for device, dtype_name, T, lanes in cases(args):
        if device.type != "cpu":
            continue
        rows.append(time_case(device, DTYPES[dtype_name], T, lanes, args.H, args.reset, args))
    return {"rows": rows}


def child_args(args):
    out = ["--T", *map(str, args.T), "--lanes", *map(str, args.lanes), "--H", str(args.H),
           "--dtype", *args.dtype, "--device", "cpu", "--reset", args.reset,
           "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--max-elements", str(args.max_elements),
           "--max-reference-elements", str(args.max_reference_elements)]
    if args.compile:
        out.append("--compile")
    return out


def ratio(a, b):
    return None if a is None or b is None else a / b


def report(rows, args):
    headers = ["device", "dtype", "T", "lanes", "allocator", "ref fwd ms", "fused fwd ms",
               "ref f+b ms", "fused f+b ms", "speedup f+b", "floor f+b ms", "fused / floor",
               "ref peak MB", "fused peak MB"]
    if args.compile:
        headers[7:7] = ["compiled f+b ms", "compile s"]
    table = []
    for r in rows:
        ms = lambda k: None if r.get(k) is None else r[k] * 1e3  # noqa: E731
        mb = lambda k: None if r.get(k) is None else r[k] / 2**20  # noqa: E731
        line = [r["device"], r["dtype"], r["T"], r["lanes"], r["allocator"], ms("reference_fwd_s"),
                ms("fused_fwd_s"), ms("reference_fwd_bwd_s"), ms("fused_fwd_bwd_s"),
                ratio(r.get("reference_fwd_bwd_s"), r["fused_fwd_bwd_s"]), ms("floor_fwd_bwd_s"),
                ratio(r["fused_fwd_bwd_s"], r["floor_fwd_bwd_s"]), mb("reference_peak_bytes"),
                mb("fused_peak_bytes")]
        if args.compile:
            line[7:7] = [ms("compiled_fwd_bwd_s"), r.get("compile_s")]
        table.append(line)
    return markdown_table(headers, table)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    groups = {}
    for r in rows:
        groups.setdefault((r["device"], r["dtype"], r["allocator"], r["T"]), []).append(r)
    for (device, dtype, alloc, T), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["lanes"])
        label = f"{device} {dtype} T={T} ({alloc})"
        sp = [(r["lanes"], ratio(r.get("reference_fwd_bwd_s"), r["fused_fwd_bwd_s"])) for r in rs]
        sp = [(a, b) for a, b in sp if b is not None]
        if sp:
            ax1.plot(*zip(*sp), marker="o", label=label)
        fl = [(r["lanes"], ratio(r["fused_fwd_bwd_s"], r["floor_fwd_bwd_s"])) for r in rs]
        ax2.plot(*zip(*fl), marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="lanes (batch x neurons)",
            ylabel="reference / fused time", title="Speedup, forward+backward")
    ax2.set(xscale="log", xlabel="lanes (batch x neurons)", ylabel="fused / copy floor",
            title="Distance from the bandwidth floor")
    ax2.axhline(1.5, color="grey", linestyle="--", linewidth=1)
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=6)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", nargs="+", default=["cpu"], help="cpu and/or cuda")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES))
    p.add_argument("--T", nargs="+", type=int, default=[32, 128, 512])
    p.add_argument("--lanes", nargs="+", type=int, default=[10**4, 10**5, 10**6])
    p.add_argument("--H", type=int, default=100, help="neurons per batch element (lanes = batch x H)")
    p.add_argument("--reset", default="proportional", choices=["proportional", "subtract"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also torch.compile the reference (minutes per shape)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--allocator", choices=["both", "default", "tuned"], default="both",
                   help="CPU: which malloc settings to time under (each in its own child process)")
    p.add_argument("--max-elements", type=int, default=2**27, help="skip cases with more T x lanes")
    p.add_argument("--max-reference-elements", type=int, default=2**24,
                   help="above this many elements the reference loop is not run (memory)")
    p.add_argument("--json", default="benchmarks/results/bench_recurrence.json")
    p.add_argument("--plot", default="benchmarks/results/bench_recurrence.png")
    p.add_argument("--_timing-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_memory-child", nargs=6, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args._memory_child:
        impl, dtype, T, lanes, H, reset = args._memory_child
        print(json.dumps(memory_child(impl, dtype, int(T), int(lanes), int(H), reset)))
        return
    if args._timing_child:
        print(json.dumps(timing_child(args)))
        return

    rows = []
    if "cpu" in args.device:
        allocators = ["default", "tuned"] if args.allocator == "both" else [args.allocator]
        for alloc in allocators:
            env = FAST_MALLOC_ENV if alloc == "tuned" else {k: None for k in FAST_MALLOC_ENV}
            print(f"# timing on CPU with {ALLOCATORS[alloc]} ...", file=sys.stderr)
            rows += run_self_in_subprocess(child_args(args) + ["--_timing-child"], env)["rows"]
        if not args.no_memory:
            for r in rows:
                if r["allocator"] != allocators[0]:
                    continue
                for impl in ("reference", "fused"):
                    if impl == "reference" and r["elements"] > args.max_reference_elements:
                        r[f"{impl}_peak_bytes"] = None
                        continue
                    child = run_self_in_subprocess(
                        ["--_memory-child", impl, r["dtype"], str(r["T"]), str(r["lanes"]),
                         str(args.H), args.reset]
                    )
                    r[f"{impl}_peak_bytes"] = child["peak_bytes"]
    def write_json(result):
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)

    for device, dtype_name, T, lanes in cases(args):
        if device.type == "cuda":
            rows.append(time_case(device, DTYPES[dtype_name], T, lanes, args.H, args.reset, args))
            # Row by row: a crash or a time limit later loses nothing measured so far.
            print(json.dumps(rows[-1]), flush=True)
            write_json({"command": command_line(), "complete": False, "reset": args.reset,
                        "H": args.H, "rows": rows})

    result = {
        "command": command_line(),
        "machine": machine_info(),
        "allocators": ALLOCATORS,
        "memory_method": {
            "cpu": "growth of peak RSS over one forward+backward, fresh child process per case and implementation",
            "cuda": "torch.cuda.max_memory_allocated over one forward+backward, minus what was allocated before",
        },
        "reset": args.reset,
        "H": args.H,
        "complete": True,
        "rows": rows,
    }
    print(f"\n`{result['command']}`  ")
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), GPU: {m['gpu']}, torch {m['torch']}\n")
    print(report(rows, args))
    if args.json:
        write_json(result)
        print(f"\nwrote {args.json}")
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
