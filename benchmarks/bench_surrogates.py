"""The fused binary-spike LIF op alone (snn_cuda.lif), forward and backward, for each convention and
surrogate: what the choice of surrogate costs.

  python benchmarks/bench_surrogates.py                    # [500, 16, 8192] float32 on the CPU
  python benchmarks/bench_surrogates.py --shape 500 16 512 --device cuda

Times are medians of --repeats after --warmup. The backward is timed on a graph kept from one
forward (retain_graph), with an upstream gradient of ones for the spikes. The copy floor moves the
bytes either pass must move (three tensors of the input's size) between buffers allocated beforehand.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snn_cuda  # noqa: E402
from snn_cuda.surrogate import NAMES  # noqa: E402

from common import command_line, copy_floor, current_allocator, markdown_table, time_median  # noqa: E402

DECAY = {"snntorch": 0.9, "spikingjelly": 10.0}  # beta; tau = 1 / (1 - beta)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[500, 16, 8192])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    x = torch.rand(*args.shape, device=device, dtype=dtype).requires_grad_()
    rows = []
    for convention in ("snntorch", "spikingjelly"):
        for name in NAMES:
            def forward():
                return snn_cuda.lif(x, DECAY[convention], 1.0, convention=convention, surrogate=name)

            spikes, _ = forward()
            ones = torch.ones_like(spikes)

            def backward():
                return torch.autograd.grad(spikes, x, ones, retain_graph=True)

            rows.append([convention, name, time_median(forward, device, args.repeats, args.warmup),
                         time_median(backward, device, args.repeats, args.warmup)])
    # Forward: reads the input, writes spikes and membrane; backward: reads the spikes' gradient
    # and the membrane, writes the input's gradient. Three tensors' bytes each way.
    floor = copy_floor(3 * x.numel() * x.element_size(), device, args.repeats, args.warmup)
    print(f"snn_cuda.lif on {list(args.shape)} {args.dtype}, {args.device}, allocator "
          f"{current_allocator()}, median of {args.repeats} after {args.warmup} warm-up; "
          f"copy floor (a copy moving the bytes of three such tensors): {floor:.4g} s")
    print(markdown_table(["convention", "surrogate", "forward s", "backward s"], rows))
    print(f"\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
