"""The fixed cost of a short call: one time step (T = 1), the per-step drop-in's whole cost.

Per lane count (lanes = batch x 100 neurons, float32): the registered forward ops alone against two
floors -- copying the input into two preallocated outputs (the bytes a T = 1 forward must move), and
``clone`` twice (the same with fresh outputs, as the op allocates them) -- the graded op on a T = 0
input of the same batch (its fixed cost: dispatch, checks, three empty outputs, no kernel) and one
elementwise op that computes (``x + 1``); and one step forward +
backward through ``snn_cuda.lif_step`` against snnTorch's ``Leaky`` and SpikingJelly's ``LIFNode``
(single-step), the originals' ~10 elementwise ops. Medians of --repeats, the implementations
interleaved; the machine's default allocator.

  python benchmarks/bench_fixed_cost.py --json benchmarks/results/bench_fixed_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snn_cuda  # noqa: E402

from common import command_line, machine_info, markdown_table, time_interleaved  # noqa: E402

H = 100


def cases(lanes: int):
    x = torch.randn(1, lanes // H, H) * 0.8 + 0.4
    p, th, pen = torch.full((H,), 0.9), torch.full((H,), 1.0), torch.full((H,), 1.5)
    o1, o2 = torch.empty_like(x), torch.empty_like(x)

    def copy_floor():
        o1.copy_(x)
        o2.copy_(x)

    x0 = x[:0]  # T = 0: the call without the kernel (dispatch, checks, empty outputs)
    ops = {
        "rec_fwd_op": lambda: torch.ops.snn_cuda.spiking_recurrence_fwd(x, p, th, pen, "proportional", True, None),
        "rec_fwd_op_T0": lambda: torch.ops.snn_cuda.spiking_recurrence_fwd(x0, p, th, pen, "proportional", True, None),
        "add": lambda: torch.add(x, 1.0),
        "lif_fwd_op": lambda: torch.ops.snn_cuda.lif_fwd(x, None, p, th, pen * 0, "snntorch", "subtract", True),
        "floor_copy": copy_floor,
        "floor_clone": lambda: (x.clone(), x.clone()),
    }
    xs = (torch.randn(lanes // H, H) * 0.8 + 0.4).requires_grad_()
    mem = torch.zeros(lanes // H, H)

    def ours():
        s, m = snn_cuda.lif_step(xs, 0.9, 1.0, initial=mem)
        (s.sum() + m.sum()).backward()

    steps = {"snn_cuda.lif_step": ours}
    try:
        import snntorch

        leaky = snntorch.Leaky(beta=0.9)

        def snntorch_step():
            s, m = leaky(xs, mem)
            (s.sum() + m.sum()).backward()

        steps["snntorch.Leaky"] = snntorch_step
    except ImportError:  # pragma: no cover - the peers are test dependencies
        pass
    try:
        from spikingjelly.activation_based import neuron

        node = neuron.LIFNode(tau=2.0)

        def spikingjelly_step():
            node.reset()
            node(xs).sum().backward()

        steps["spikingjelly.LIFNode"] = spikingjelly_step
    except ImportError:  # pragma: no cover
        pass
    return ops, steps


def measure(fns, repeats, warmup):
    times = time_interleaved(fns, torch.device("cpu"), repeats, warmup)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows, table = [], []
    for lanes in args.lanes:
        ops, steps = cases(lanes)
        row = {"lanes": lanes, **{k + "_us": v * 1e6 for k, v in measure(ops, args.repeats, args.warmup).items()}}
        row.update({k + "_fwd_bwd_us": v * 1e6 for k, v in measure(steps, args.repeats, args.warmup).items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
        table.append([lanes, row["rec_fwd_op_us"], row["rec_fwd_op_T0_us"], row["lif_fwd_op_us"],
                      row["floor_copy_us"], row["floor_clone_us"], row["add_us"],
                      row["rec_fwd_op_us"] / row["floor_clone_us"],
                      row["snn_cuda.lif_step_fwd_bwd_us"], row.get("snntorch.Leaky_fwd_bwd_us"),
                      row.get("spikingjelly.LIFNode_fwd_bwd_us")])
    print(markdown_table(["lanes", "rec fwd op us", "same at T=0 us", "lif fwd op us", "copy floor us",
                          "clone floor us", "x + 1 us", "rec op / clone floor", "lif_step f+b us", "snntorch.Leaky f+b us",
                          "spikingjelly.LIFNode f+b us"], table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command_line(), "machine": machine_info(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
