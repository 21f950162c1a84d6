"""Drop-in speed: the originals' own per-step code with our classes swapped in, and the whole-model
runner, against the originals, measured side by side in one process (interleaved repetitions,
medians, forward + backward of a training step).

Cases (each row: one implementation of one case):
- neuron per step: one neuron module called once per time step, ``[batch, n]`` per call, T steps,
  then backward (snnTorch ``Leaky``, also with ``reset_delay=False`` and then ours over the whole
  sequence in one call as well, SpikingJelly ``LIFNode`` single-step, the seed's layer with its
  Linear, each against ours in the same loop);
- snnTorch tutorial net (784-1000-10 Linear + Leaky, ``init_hidden=True``, T=25, batch 128):
  snnTorch's per-step loop; the same loop after ``snn_cuda.convert``; ``snn_cuda.run_sequence``;
- small SpikingJelly conv net (Conv-LIF-pool-Conv-LIF-pool-Linear-LIF on 1x28x28, T=8, batch 32):
  SpikingJelly single-step loop; SpikingJelly multi-step (its own whole-sequence mode, torch
  backend); the loop after ``convert``; ``run_sequence``.

    python benchmarks/bench_dropin.py [--device cpu|cuda] [--repeats 7] [--json out.json]
    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/bench_dropin.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import command_line, current_allocator, machine_info, markdown_table, time_interleaved  # noqa: E402

import snn_cuda  # noqa: E402

try:
    import snntorch
    from snntorch import utils as snn_utils
except ImportError:  # pragma: no cover - the peers are test dependencies
    snntorch = None
try:
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
except ImportError:  # pragma: no cover
    sj_neuron = None


class SeedLayer(nn.Module):
    """The seed's SpikingNeuronLayerRNN (its per-step arithmetic; device plumbing left out)."""

    def __init__(self, n_inputs, n_hidden, decay_multiplier=0.9, threshold=1.0, penalty_threshold=1.5):
        super().__init__()
        self.n_hidden, self.decay_multiplier = n_hidden, decay_multiplier
        self.threshold, self.penalty_threshold = threshold, penalty_threshold
        self.fc = nn.Linear(n_inputs, n_hidden)
        self.reset_state()

    def reset_state(self):
        self.prev_inner = torch.zeros([self.n_hidden], device=self.fc.weight.device)
        self.prev_outer = torch.zeros([self.n_hidden], device=self.fc.weight.device)

    def forward(self, x):
        if self.prev_inner.dim() == 1:
            self.prev_inner = torch.stack(x.shape[0] * [self.prev_inner])
            self.prev_outer = torch.stack(x.shape[0] * [self.prev_outer])
        inner = self.fc(x) + self.prev_inner * self.decay_multiplier
        outer = F.relu(inner - self.threshold)
        gate = (outer > 0).float()
        inner = inner - (self.penalty_threshold / self.threshold * inner) * gate
        returned = (self.prev_inner, self.prev_outer)
        self.prev_inner, self.prev_outer = inner, outer
        return returned


def neuron_cases(T: int, batch: int, n: int, device) -> Dict[str, Dict[str, Callable]]:
    x = torch.randn(T, batch, n, device=device) * 0.7 + 0.3
    cases: Dict[str, Dict[str, Callable]] = {}

    def leaky_loop(cls, **options):
        lif = cls(beta=0.9, **options).to(device)

        def run():
            xx = x.clone().requires_grad_()
            mem = lif.init_leaky()
            spikes = []
            for step in xx.unbind(0):  # not xx[t]: its backward writes a [T, ...] zero tensor per step
                spk, mem = lif(step, mem)
                spikes.append(spk)
            torch.stack(spikes).sum().backward()
        return run

    def lifnode_loop(cls):
        node = cls(tau=2.0).to(device)

        def run():
            xx = x.clone().requires_grad_()
            node.reset()
            torch.stack([node(step) for step in xx.unbind(0)]).sum().backward()
        return run

    key = f"Leaky per step (T={T}, {batch}x{n})"
    cases[key] = {"snn_cuda": leaky_loop(snn_cuda.Leaky)}
    if snntorch is not None:
        cases[key]["snntorch"] = leaky_loop(snntorch.Leaky)
    # reset_delay=False (what snn_cuda.import_nir builds; snnTorch's NIR importer too): ours per
    # step in snnTorch's loop, and the whole sequence in one call (step_mode="m").
    key = f"Leaky(reset_mechanism='zero', reset_delay=False) (T={T}, {batch}x{n})"
    now = dict(reset_mechanism="zero", reset_delay=False)
    sequence = snn_cuda.Leaky(beta=0.9, step_mode="m", **now).to(device)

    def leaky_sequence():
        xx = x.clone().requires_grad_()
        sequence.reset_mem()
        sequence(xx)[0].sum().backward()

    cases[key] = {"snn_cuda": leaky_loop(snn_cuda.Leaky, **now), "snn_cuda step_mode='m'": leaky_sequence}
    if snntorch is not None:
        cases[key]["snntorch"] = leaky_loop(snntorch.Leaky, **now)
    key = f"LIFNode per step (T={T}, {batch}x{n})"
    cases[key] = {"snn_cuda": lifnode_loop(snn_cuda.LIFNode)}
    if sj_neuron is not None:
        cases[key]["spikingjelly"] = lifnode_loop(sj_neuron.LIFNode)

    seed_x = torch.rand(T, 1000, 784, device=device)

    def seed_loop(layer):
        def run():
            layer.reset_state()
            outputs = [layer(step)[1] for step in seed_x.unbind(0)]
            torch.stack(outputs).sum().backward()
        return run

    torch.manual_seed(0)
    seed = SeedLayer(784, 100).to(device)
    ours = snn_cuda.SpikingNeuronLayerRNN(device, 784, 100, 0.9, 1.0, 1.5)
    ours.fc.load_state_dict(seed.fc.state_dict())
    cases[f"seed layer per step (T={T}, 1000x784->100)"] = {
        "seed": seed_loop(seed), "snn_cuda": seed_loop(ours)}
    return cases


def snntorch_net(cls, device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1000), cls(beta=0.95, init_hidden=True),
                         nn.Linear(1000, 10), cls(beta=0.95, init_hidden=True, output=True)).to(device)


def model_cases(device, T_mlp: int, batch_mlp: int, T_conv: int, batch_conv: int):
    cases: Dict[str, Dict[str, Callable]] = {}
    x = torch.rand(T_mlp, batch_mlp, 784, device=device)
    target = torch.randint(0, 10, (batch_mlp,), device=device)

    def loop(net, reset):
        def run():
            reset(net)
            mem_rec = [net(step)[1] for step in x.unbind(0)]
            F.cross_entropy(torch.stack(mem_rec).sum(0), target).backward()
        return run

    def runner(net, reset):
        def run():
            reset(net)
            _, mem = snn_cuda.run_sequence(net, x)
            F.cross_entropy(mem.sum(0), target).backward()
        return run

    key = f"snnTorch tutorial net 784-1000-10 (T={T_mlp}, batch {batch_mlp})"
    ours = snn_cuda.convert(snntorch_net(snntorch.Leaky, device)) if snntorch else snntorch_net(snn_cuda.Leaky, device)
    reset = snn_utils.reset if snntorch else (lambda net: snn_cuda.Leaky.reset_hidden())
    cases[key] = {"snn_cuda loop (convert)": loop(ours, reset), "snn_cuda run_sequence": runner(ours, reset)}
    if snntorch is not None:
        cases[key]["snntorch loop"] = loop(snntorch_net(snntorch.Leaky, device), snn_utils.reset)

    if sj_neuron is None:
        return cases
    images = torch.rand(T_conv, batch_conv, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch_conv,), device=device)

    def conv_net(node_cls):
        torch.manual_seed(0)
        return nn.Sequential(
            sj_layer.Conv2d(1, 16, 3, padding=1), node_cls(tau=2.0), sj_layer.MaxPool2d(2),
            sj_layer.Conv2d(16, 32, 3, padding=1), node_cls(tau=2.0), sj_layer.MaxPool2d(2),
            sj_layer.Flatten(), sj_layer.Linear(32 * 7 * 7, 10), node_cls(tau=2.0)).to(device)

    def sj_loop(net):
        def run():
            sj_functional.reset_net(net)
            out = torch.stack([net(step) for step in images.unbind(0)])
            F.cross_entropy(out.mean(0), labels).backward()
        return run

    def sj_multi(net):
        sj_functional.set_step_mode(net, "m")

        def run():
            sj_functional.reset_net(net)
            F.cross_entropy(net(images).mean(0), labels).backward()
        return run

    def sj_runner(net):
        def run():
            sj_functional.reset_net(net)
            F.cross_entropy(snn_cuda.run_sequence(net, images).mean(0), labels).backward()
        return run

    key = f"SpikingJelly conv net (1x28x28, T={T_conv}, batch {batch_conv})"
    cases[key] = {
        "spikingjelly loop": sj_loop(conv_net(sj_neuron.LIFNode)),
        "spikingjelly multi-step": sj_multi(conv_net(sj_neuron.LIFNode)),
        "snn_cuda loop (convert)": sj_loop(snn_cuda.convert(conv_net(sj_neuron.LIFNode))),
        "snn_cuda run_sequence": sj_runner(snn_cuda.convert(conv_net(sj_neuron.LIFNode))),
    }
    return cases


def measure(cases, device, repeats: int, warmup: int) -> List[dict]:
    rows = []
    for case, impls in cases.items():
        for name, ts in time_interleaved(impls, device, repeats, warmup).items():
            rows.append({"case": case, "implementation": name, "median_s": statistics.median(ts),
                         "min_s": min(ts), "max_s": max(ts)})
        print(f"  measured {case}", file=sys.stderr, flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--T", type=int, default=25, help="steps of the per-step neuron cases and the MLP")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--T-conv", type=int, default=8)
    parser.add_argument("--batch-conv", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cases = neuron_cases(args.T, args.batch, args.neurons, device)
    cases.update(model_cases(device, args.T, args.batch, args.T_conv, args.batch_conv))
    rows = measure(cases, device, args.repeats, args.warmup)
    fastest_original = {}
    for r in rows:
        if not r["implementation"].startswith("snn_cuda"):
            best = fastest_original.get(r["case"])
            fastest_original[r["case"]] = min(best, r["median_s"]) if best else r["median_s"]
    for r in rows:
        base = fastest_original.get(r["case"])
        r["speedup_vs_fastest_original"] = base / r["median_s"] if base else None
    print(f"device {device}, allocator {current_allocator()}, {args.repeats} interleaved repeats "
          "(forward + backward; medians, [min, max])")
    print(markdown_table(
        ["case", "implementation", "median s", "min s", "max s", "x fastest original"],
        [[r["case"], r["implementation"], r["median_s"], r["min_s"], r["max_s"],
          r["speedup_vs_fastest_original"]] for r in rows]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command_line(), "device": str(device), "allocator": current_allocator(),
                       "machine": machine_info(), "versions": {
                           "snntorch": getattr(snntorch, "__version__", None),
                           "spikingjelly": None if sj_neuron is None else "installed"},
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
