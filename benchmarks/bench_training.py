"""One training step of the seed's SpikingNet (forward, backward, SGD step): the seed's own code
("seed": its per-step SpikingNeuronLayerRNN loop, a torch.rand mask per step, as the notebook
writes it), our SpikingNet with the per-step reference loop, and with the fused op.

  python benchmarks/bench_training.py                       # the seed's shape and a larger one
  python benchmarks/bench_training.py --batch 1000 --T 128 --hidden 100
  python benchmarks/bench_training.py --metrics runs/<run>/metrics.json   # add a run's epoch times

Inputs are MNIST-shaped random images (the step's cost does not depend on the pixel values). Times
are medians of --repeats steps after --warmup; on CPU each backend is timed with glibc's default
malloc and with it tuned (see common.ALLOCATORS), each in its own child process. Peak memory: growth
of peak RSS over one step in a fresh child process (CPU), torch.cuda.max_memory_allocated (CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snn_cuda import SpikingNet  # noqa: E402

from common import (  # noqa: E402
    ALLOCATORS,
    FAST_MALLOC_ENV,
    command_line,
    current_allocator,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    rss_bytes,
    run_self_in_subprocess,
    synchronize,
    time_interleaved,
    time_median,
)

BACKENDS = ("seed", "reference", "fused")


class SeedSpikingNet(torch.nn.Module):
    """The seed's SpikingNet, its forward as the notebook writes it: per step a fresh
    ``torch.rand`` mask on the image, then its two SpikingNeuronLayerRNN (bench_dropin.SeedLayer:
    the seed's per-step arithmetic), logits = the mean of layer 2's returned states."""

    def __init__(self, T, hidden):
        super().__init__()
        from bench_dropin import SeedLayer

        self.T = T
        self.layer1 = SeedLayer(784, hidden)
        self.layer2 = SeedLayer(hidden, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        self.layer1.reset_state()
        self.layer2.reset_state()
        out = []
        for _ in range(self.T):
            xi = torch.rand(x.shape, device=x.device) * x
            _, layer1_output = self.layer1(xi)
            layer2_state, _ = self.layer2(layer1_output)
            out.append(layer2_state)
        return F.log_softmax(torch.stack(out).mean(0), dim=-1)


def make_step(backend, T, batch, hidden, device, seed=0):
    torch.manual_seed(seed)
    if backend == "seed":
        model = SeedSpikingNet(T, hidden).to(device)
    else:
        model = SpikingNet(n_time_steps=T, n_inputs=784, n_hidden=hidden, backend=backend).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 1, 28, 28, generator=g, device=device) - 0.5
    y = torch.randint(0, 10, (batch,), generator=g, device=device)

    def step():
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_child(args):
    """Per shape, the backends' steps interleaved (seed, reference, fused, seed, ...): the machine's
    drift hits all alike. Medians, and the spread (min, max) of the repeats."""
    import statistics

    device = torch.device(args.device)
    rows = []
    for T, batch, hidden in args.shapes:
        steps = {backend: make_step(backend, T, batch, hidden, device) for backend in BACKENDS}
        for backend, ts in time_interleaved(steps, device, args.repeats, args.warmup).items():
            rows.append({"backend": backend, "T": T, "batch": batch, "hidden": hidden,
                         "device": device.type, "allocator": current_allocator(),
                         "step_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)})
    return {"rows": rows}


def memory_child(backend, T, batch, hidden, device_name):
    device = torch.device(device_name)
    step = make_step(backend, T, batch, hidden, device)
    if device.type == "cuda":
        step()  # allocates the optimizer state, warms up
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base}
    # Warm up on a tiny model so lazy initialisation is not counted; the measured step is the
    # first at full size, so it includes allocating the momentum buffers (~the parameters' size).
    make_step(backend, 4, 2, 8, device)()
    base = max(rss_bytes(), peak_rss_bytes())
    step()
    return {"peak_bytes": max(0, peak_rss_bytes() - base)}


def profile_step(args):
    """Where one step's time goes: torch.profiler's operators sorted by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    T, batch, hidden = args.shapes[0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    for backend in BACKENDS:
        step = make_step(backend, T, batch, hidden, torch.device(args.device))
        step()
        with profile(activities=activities) as prof:
            step()
        print(f"\n{backend}, {T}x{batch}x784->{hidden}->10 on {args.device}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def parse_shape(text):
    try:
        T, batch, hidden = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be TxBATCHxHIDDEN, e.g. 128x1000x100, got {text!r}")
    return T, batch, hidden


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=[(128, 1000, 100), (128, 1000, 1000)],
                   help="TxBATCHxHIDDEN cases (default: the seed's 128x1000x100 and a 10x wider hidden layer)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--allocator", choices=["both", "default", "tuned"], default="both")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files of training runs to summarise")
    p.add_argument("--profile", action="store_true",
                   help="only print torch.profiler's top operators of one step per backend, first shape")
    p.add_argument("--json", default="benchmarks/results/bench_training.json")
    p.add_argument("--_time-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_memory-child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._memory_child:
        backend, T, batch, hidden, device = args._memory_child
        print(json.dumps(memory_child(backend, int(T), int(batch), int(hidden), device)))
        return
    if args._time_child:
        print(json.dumps(time_child(args)))
        return
    if args.profile:
        profile_step(args)
        return

    child = ["--shapes", *[f"{T}x{b}x{h}" for T, b, h in args.shapes], "--device", args.device,
             "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--_time-child"]
    rows = []
    if args.device == "cpu":
        allocators = ["default", "tuned"] if args.allocator == "both" else [args.allocator]
        for alloc in allocators:
            env = FAST_MALLOC_ENV if alloc == "tuned" else {k: None for k in FAST_MALLOC_ENV}
            print(f"# timing with {ALLOCATORS[alloc]} ...", file=sys.stderr)
            rows += run_self_in_subprocess(child, env)["rows"]
    else:
        rows += time_child(args)["rows"]
    if not args.no_memory:
        for T, batch, hidden in args.shapes:
            for backend in BACKENDS:
                peak = run_self_in_subprocess(
                    ["--_memory-child", backend, str(T), str(batch), str(hidden), args.device]
                )["peak_bytes"]
                for r in rows:
                    if (r["backend"], r["T"], r["batch"], r["hidden"]) == (backend, T, batch, hidden):
                        r["peak_bytes"] = peak

    table = []
    for T, batch, hidden in args.shapes:
        allocs = sorted({r["allocator"] for r in rows})
        for alloc in allocs:
            pick = {r["backend"]: r for r in rows if (r["T"], r["batch"], r["hidden"], r["allocator"]) == (T, batch, hidden, alloc)}
            seed, ref, fused = pick["seed"], pick["reference"], pick["fused"]
            mb = lambda r: None if "peak_bytes" not in r else r["peak_bytes"] / 2**20  # noqa: E731
            ms = lambda r: f"{r['step_s'] * 1e3:.0f} ({r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f})"  # noqa: E731
            table.append([f"{T}x{batch}x784->{hidden}->10", args.device, alloc, ms(seed), ms(ref),
                          ms(fused), seed["step_s"] / fused["step_s"], ref["step_s"] / fused["step_s"],
                          mb(seed), mb(fused)])
    headers = ["T x batch x net", "device", "allocator", "seed's code ms", "our per-step loop ms",
               "fused ms", "fused vs seed's code", "fused vs loop", "seed's peak MB", "fused peak MB"]
    result = {"command": command_line(), "machine": machine_info(), "allocators": ALLOCATORS,
              "memory_method": "growth of peak RSS over one step in a fresh child process (CPU); "
              "torch.cuda.max_memory_allocated (CUDA)", "rows": rows}
    m = result["machine"]
    print(f"\n`{result['command']}`  ")
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), GPU: {m['gpu']}, torch {m['torch']}\n")
    print(markdown_table(headers, table))

    if args.metrics:
        epoch_rows = []
        for path in args.metrics:
            with open(path) as f:
                metrics = json.load(f)
            cfg = metrics["config"]
            for kind, history in metrics["models"].items():
                for h in history:
                    epoch_rows.append([path, kind, cfg["backend"] if kind == "spiking" else "-", cfg["dataset"],
                                       cfg["batch_size"], cfg["time_steps"], h["epoch"], h["seconds"],
                                       h["samples_per_s"]])
        result["epochs"] = epoch_rows
        print()
        print(markdown_table(["run", "model", "backend", "dataset", "batch", "T", "epoch", "seconds",
                              "samples/s"], epoch_rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
