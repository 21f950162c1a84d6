"""The Open Neuromorphic SNN-library benchmark: Linear(n, n) then a LIF layer over T steps, batch B,
loss = sum of the output spikes, forward + backward, float32. snn_cuda against snnTorch and
SpikingJelly, each library's own LIF neuron with its default surrogate, in one run.

  python benchmarks/bench_peers.py                        # n = 512, 2048, 8192; T = 500; B = 16
  python benchmarks/bench_peers.py --sizes 512 --repeats 5
  python benchmarks/bench_peers.py --device cuda           # SpikingJelly picks its CUDA provider

Rows:
  linear                 the Linear layer alone (loss = sum of its output): the part every library
                         shares. Each library's child also times this Linear-only pass, alternating
                         with its full pass; "neuron s" is the median of (full - Linear-only).
  snn_cuda.Leaky         fused, snnTorch's semantics      snn_cuda.LIFNode   fused, SpikingJelly's
  snn_cuda.IFNode        fused, SpikingJelly's IFNode      spikingjelly.IFNode  its own, as LIFNode
  snn_cuda.Synaptic      fused, snnTorch's Synaptic        snntorch.Synaptic  its own, per step
  snn_cuda.ParametricLIFNode  fused, SpikingJelly's PLIF   spikingjelly.ParametricLIFNode  its own
  snn_cuda.norse.LIF/LI/LSNN  fused, Norse's          norse.LIF/LI/LSNN  its own (a per-step
                                                            loop in Python over its step function;
                                                            its backward is O(T^2), see below)
  snn_cuda.RLeaky / RSynaptic   fused, snnTorch's recurrent neurons with one-to-one recurrence
                         (V = 0.5): one kernel call; ".all_to_all": RLeaky with an nn.Linear(n, n)
                         recurrence, one matmul + one fused step per step; against snnTorch's
                         modules called per step
  snn_cuda.ALIF          fused adaptive LIF (common discrete form; no library ships it)
  loop.ALIF              the same neuron as a careful per-step PyTorch loop over x.unbind(0) (the
                         ops of snn_cuda.reference.alif, spikes through a surrogate autograd
                         Function): what a user without a fused kernel writes; ".compiled": its
                         step function under torch.compile (the loop stays in Python)
  norse.LIFCell          Norse's cell in a per-step loop over x.unbind(0): what a careful user
                         writes instead of norse.LIF (whose loop indexes input[ts]: each step's
                         backward writes a whole [T, ...] zero gradient)
  snntorch.Leaky         snnTorch's neuron called once per time step (it has no multi-step form)
  spikingjelly.LIFNode   step_mode="m": on CPU its registered float32 CPU op (a per-step loop in
                         PyTorch), on CUDA whatever provider it selects (Triton/CuPy/torch)

The Linear layer runs on the whole [T * B, n] sequence at once for every library, so all rows do the
same matmul work and differ only in the neuron. Times: median of --repeats forward+backward passes
after --warmup, each library in its own child process (fresh allocator, clean peak memory). Speedups
are the peer's time over ours, for the whole pass and for the neuron part alone. Peak memory: growth
of the child's peak RSS over its first pass at full size, which follows one pass at a tiny size so
that one-time loading is not counted (CPU); torch.cuda.max_memory_allocated over that pass minus the
memory held before it (CUDA).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    command_line,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    rss_bytes,
    run_self_in_subprocess,
    synchronize,
    time_median,
)

LIBRARIES = ("linear", "snn_cuda.Leaky", "snn_cuda.LIFNode", "snn_cuda.IFNode",
             "snn_cuda.ParametricLIFNode", "snn_cuda.Synaptic", "snn_cuda.norse.LIF",
             "snn_cuda.norse.LI", "snn_cuda.norse.LSNN", "snn_cuda.RLeaky", "snn_cuda.RLeaky.all_to_all",
             "snn_cuda.RSynaptic", "snntorch.Leaky", "snntorch.RLeaky", "snntorch.RLeaky.all_to_all",
             "snntorch.RSynaptic", "spikingjelly.LIFNode", "spikingjelly.IFNode",
             "spikingjelly.ParametricLIFNode", "snntorch.Synaptic", "norse.LIF", "norse.LI",
             "norse.LSNN", "norse.LIFCell", "snn_cuda.ALIF", "loop.ALIF", "loop.ALIF.compiled")
# Each of ours against the module it replaces.
ORIGINAL = {"snn_cuda.Leaky": "snntorch.Leaky", "snn_cuda.LIFNode": "spikingjelly.LIFNode",
            "snn_cuda.IFNode": "spikingjelly.IFNode", "snn_cuda.Synaptic": "snntorch.Synaptic",
            "snn_cuda.norse.LIF": "norse.LIF", "snn_cuda.norse.LI": "norse.LI",
            "snn_cuda.norse.LSNN": "norse.LSNN", "snn_cuda.RLeaky": "snntorch.RLeaky",
            "snn_cuda.RLeaky.all_to_all": "snntorch.RLeaky.all_to_all",
            "snn_cuda.RSynaptic": "snntorch.RSynaptic",
            "snn_cuda.ParametricLIFNode": "spikingjelly.ParametricLIFNode",
            "snn_cuda.ALIF": "loop.ALIF"}  # (and loop.ALIF.compiled: see its row)
BETA = 0.9  # snnTorch-style decay; SpikingJelly's tau = 1 / (1 - beta) = 10 is the same leak
ALPHA = 0.8  # Synaptic's current decay
TAU = 1.0 / (1.0 - BETA)


def library_version(library: str):
    """The installed version, or None if the library cannot be imported."""
    module = library.split(".")[0]
    if module in ("linear", "loop"):
        return torch.__version__
    try:
        __import__(module)
    except ImportError:
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:  # e.g. snn_cuda run from a source tree
        return "unknown"


def make_passes(library: str, n: int, T: int, batch: int, device: torch.device):
    """Two closures: one forward + backward pass of Linear(n, n) + the library's neuron, and the
    same pass of the Linear layer alone (on the same weights and input)."""
    torch.manual_seed(0)
    fc = torch.nn.Linear(n, n).to(device)
    x = torch.rand(T, batch, n, device=device)

    def linear(inp):
        return fc(inp.reshape(T * batch, n)).reshape(T, batch, n)

    if library == "linear":
        def forward():
            return linear(x)
    elif library == "snn_cuda.Leaky":
        import snn_cuda

        neuron = snn_cuda.Leaky(beta=BETA, step_mode="m").to(device)

        def forward():
            neuron.reset_mem()
            return neuron(linear(x))[0]
    elif library == "snn_cuda.LIFNode":
        import snn_cuda

        neuron = snn_cuda.LIFNode(tau=TAU, step_mode="m").to(device)

        def forward():
            neuron.reset()
            return neuron(linear(x))
    elif library == "snn_cuda.IFNode":
        import snn_cuda

        neuron = snn_cuda.IFNode(step_mode="m").to(device)

        def forward():
            neuron.reset()
            return neuron(linear(x))
    elif library == "snn_cuda.Synaptic":
        import snn_cuda

        neuron = snn_cuda.Synaptic(alpha=ALPHA, beta=BETA, step_mode="m").to(device)

        def forward():
            neuron.reset_mem()
            return neuron(linear(x))[0]
    elif library in ("snn_cuda.norse.LIF", "snn_cuda.norse.LI", "snn_cuda.norse.LSNN", "norse.LIF",
                     "norse.LI", "norse.LSNN"):
        if library.startswith("norse"):
            import norse.torch as lib
        else:
            import snn_cuda.norse as lib
        neuron = getattr(lib, library.rsplit(".", 1)[1])().to(device)  # Norse's default parameters

        def forward():
            return neuron(linear(x))[0]  # (a fresh state each call, from v_leak)
    elif library == "norse.LIFCell":
        import norse.torch as lib

        neuron = lib.LIFCell().to(device)

        def forward():
            # Norse's cell over x.unbind(0), as a careful user writes the loop: Norse's own LIF
            # module indexes input[ts], whose backward writes a whole [T, ...] gradient per step.
            state, spikes = None, []
            for step in linear(x).unbind(0):
                z, state = neuron(step, state)
                spikes.append(z)
            return torch.stack(spikes)
    elif library.split(".")[1] in ("RLeaky", "RSynaptic"):
        if library.startswith("snn_cuda"):
            import snn_cuda as lib
        else:
            import snntorch as lib
        name = library.split(".")[1]
        recurrence = dict(linear_features=n) if library.endswith("all_to_all") else dict(all_to_all=False, V=0.5)
        decays = dict(alpha=ALPHA, beta=BETA) if name == "RSynaptic" else dict(beta=BETA)
        extra = {"step_mode": "m"} if library.startswith("snn_cuda") else {}
        neuron = getattr(lib, name)(**decays, **recurrence, **extra).to(device)

        def forward():
            current = linear(x)
            states = neuron.reset_mem()
            if library.startswith("snn_cuda"):
                return neuron(current)[0]  # the whole sequence (one-to-one: one kernel call)
            spikes = []
            for step in current.unbind(0):  # (unbind: see snntorch.Leaky)
                out = neuron(step, *states)
                spikes.append(out[0])
                states = out
            return torch.stack(spikes)
    elif library in ("snn_cuda.ALIF", "loop.ALIF", "loop.ALIF.compiled"):
        import snn_cuda
        from snn_cuda.reference import SurrogateSpike

        neuron = snn_cuda.ALIF(alpha=BETA, rho=0.97, beta=1.8, threshold=1.0).to(device)

        def forward():
            current = linear(x)
            if library.startswith("snn_cuda"):
                return neuron(current)[0]  # one kernel call
            v = a = z = torch.zeros_like(current[0])
            spikes = []
            for step in current.unbind(0):
                v, a, z = alif_step(step, v, a, z)
                spikes.append(z)
            return torch.stack(spikes)

        def alif_step(x_t, v, a, z):
            p = neuron  # the same constants and surrogate
            a = p.rho * a + (1 - p.rho) * z
            adaptive = p.threshold + p.beta * a
            v = (p.alpha * v + (1 - p.alpha) * x_t) - adaptive * z
            return v, a, SurrogateSpike.apply(v - adaptive, p.surrogate, False)

        if library.endswith("compiled"):
            alif_step = torch.compile(alif_step)
    elif library == "snntorch.Synaptic":
        import snntorch

        neuron = snntorch.Synaptic(alpha=ALPHA, beta=BETA).to(device)

        def forward():
            current = linear(x)
            syn, mem = neuron.reset_mem()
            spikes = []
            for step in current.unbind(0):  # (unbind: see snntorch.Leaky)
                spk, syn, mem = neuron(step, syn, mem)
                spikes.append(spk)
            return torch.stack(spikes)
    elif library in ("snn_cuda.ParametricLIFNode", "spikingjelly.ParametricLIFNode"):
        if library.startswith("snn_cuda"):
            import snn_cuda as lib
        else:
            from spikingjelly.activation_based import neuron as lib

        neuron = lib.ParametricLIFNode(init_tau=TAU, step_mode="m").to(device)

        def forward():
            neuron.reset()  # (SpikingJelly's memory-module reset, as reset_net calls it)
            return neuron(linear(x))
    elif library == "snntorch.Leaky":
        import snntorch

        neuron = snntorch.Leaky(beta=BETA).to(device)

        def forward():
            current = linear(x)
            mem = neuron.reset_mem()
            spikes = []
            # unbind, as a careful user writes it (current[t]'s backward writes a whole [T, ...]
            # zero tensor per step: an O(T^2) cost that inflated our speedups 2-4x before).
            for step in current.unbind(0):
                spk, mem = neuron(step, mem)
                spikes.append(spk)
            return torch.stack(spikes)
    elif library == "spikingjelly.LIFNode":
        from spikingjelly.activation_based import functional, neuron as sj_neuron

        neuron = sj_neuron.LIFNode(tau=TAU, step_mode="m").to(device)

        def forward():
            functional.reset_net(neuron)
            return neuron(linear(x))
    elif library == "spikingjelly.IFNode":
        from spikingjelly.activation_based import functional, neuron as sj_neuron

        neuron = sj_neuron.IFNode(step_mode="m").to(device)

        def forward():
            functional.reset_net(neuron)
            return neuron(linear(x))
    else:
        raise ValueError(library)

    def run(fn):
        def one_pass():
            fc.zero_grad(set_to_none=True)
            out = fn()
            out.sum().backward()
            return out

        return one_pass

    return run(forward), run(lambda: linear(x))


def child(args) -> dict:
    """Memory first, then time. Memory: peak growth over the first full pass at this size, after one
    pass at a tiny size (so that what a library loads on its first call is not counted, while the
    heap has not yet grown). Time: the full pass and the Linear-only pass alternately (so that drift
    on a shared machine hits both alike); the neuron's time is the median of the paired differences."""
    device = torch.device(args.device)
    make_passes(args.child, 8, 2, 1, device)[0]()
    full, linear_only = make_passes(args.child, args.child_n, args.T, args.batch, device)
    synchronize(device)
    before = rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
    out = full()
    synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - held
    else:
        peak = peak_rss_bytes() - before
    # The fraction of (step, neuron) that spiked; for the Linear-only row there are no spikes.
    # (The leaky integrators return membranes, not spikes: no rate.)
    spiking = args.child != "linear" and not args.child.endswith(".LI")
    spike_rate = float(out.float().mean()) if spiking else None
    del out
    for _ in range(args.warmup):
        full()
        linear_only()
    full_s, linear_s = [], []
    for _ in range(args.repeats):
        linear_s.append(time_median(linear_only, device, 1, 0))
        full_s.append(time_median(full, device, 1, 0))
    result = {"seconds": statistics.median(full_s), "peak_bytes": int(peak), "spike_rate": spike_rate}
    if args.child != "linear":
        result["linear_seconds"] = statistics.median(linear_s)
        result["neuron_seconds"] = statistics.median(f - l for f, l in zip(full_s, linear_s))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--T", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the rows here (default: benchmarks/results/bench_peers_<device>.json)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return

    device_type = torch.device(args.device).type
    versions = {lib: library_version(lib) for lib in args.libraries}
    rows = []
    for n in args.sizes:
        results = {}
        for lib in args.libraries:
            if versions[lib] is None:
                print(f"n={n}: {lib} is not installed, skipped", flush=True)
                continue
            child_args = ["--child", lib, "--child-n", str(n), "--T", str(args.T), "--batch",
                          str(args.batch), "--device", args.device, "--repeats", str(args.repeats),
                          "--warmup", str(args.warmup)]
            results[lib] = run_self_in_subprocess(child_args)
            print(f"n={n}: {lib}: {results[lib]['seconds']:.3f} s, "
                  f"{results[lib]['peak_bytes'] / 2**20:.0f} MB", flush=True)
        for lib, r in results.items():
            rows.append({"n": n, "library": lib, "version": versions[lib], **r})

    table = []
    for r in rows:
        speedups = []
        for key in ("seconds", "neuron_seconds"):
            for peer in ("snntorch.Leaky", "spikingjelly.LIFNode"):
                t_peer = next((x.get(key) for x in rows if x["n"] == r["n"] and x["library"] == peer), None)
                mine = r.get(key)
                ok = t_peer and mine and mine > 0 and r["library"] != "linear"
                speedups.append(t_peer / mine if ok else None)
        original = next((x for x in rows if x["n"] == r["n"] and x["library"] == ORIGINAL.get(r["library"])),
                        None)
        for key in ("seconds", "neuron_seconds"):
            ok = original is not None and original.get(key) and r.get(key)
            speedups.append(original[key] / r[key] if ok else None)
        (r["speedup_vs_snntorch"], r["speedup_vs_spikingjelly"],
         r["neuron_speedup_vs_snntorch"], r["neuron_speedup_vs_spikingjelly"],
         r["speedup_vs_original"], r["neuron_speedup_vs_original"]) = speedups
        table.append([r["n"], r["library"], r["seconds"], r.get("neuron_seconds"), *speedups,
                      r["peak_bytes"] / 2**20])
    headers = ["n", "library", "fwd+bwd s", "neuron s", "x vs snntorch.Leaky",
               "x vs spikingjelly.LIFNode", "neuron x vs snntorch.Leaky",
               "neuron x vs spikingjelly.LIFNode", "x vs its original", "neuron x vs its original",
               "peak MB"]
    print()
    print(f"Linear(n, n) + LIF, T={args.T}, batch={args.batch}, float32, {args.device}, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(markdown_table(headers, table))
    print(f"\ncommand: {command_line()}")
    out = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"bench_peers_{device_type}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"command": command_line(), "machine": machine_info(), "versions": versions,
                   "T": args.T, "batch": args.batch, "device": args.device, "repeats": args.repeats,
                   "warmup": args.warmup, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
