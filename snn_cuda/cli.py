"""Command line: ``python -m snn_cuda {train,plot} ...`` (also installed as ``snn-cuda``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    from .train import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="python -m snn_cuda",
        description="Spiking networks on the fused snn_cuda kernel.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train the seed's SNN and its non-spiking twin, compare them, draw the neurons",
        description="Trains the seed's two-layer SNN (and/or the non-spiking network), prints the "
        "comparison table and writes metrics.json, per-epoch checkpoints and pictures to --out. "
        "Runs under torchrun too (DistributedDataParallel).",
    )
    add_train_arguments(train)
    plot = sub.add_parser("plot", help="draw what the neurons of a trained SNN did on one test example")
    plot.add_argument("--checkpoint", required=True, help="a spiking checkpoint written by train")
    plot.add_argument("--index", type=int, default=0, help="test example to show")
    plot.add_argument("--out", default=None, help="folder for the PNG files (default: next to the checkpoint)")
    plot.add_argument("--data-dir", default=None, help="where the MNIST files are, for an MNIST checkpoint")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .train import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from .train import config_from_args, run_training

            run_training(config_from_args(args), resume=args.resume)
        elif args.command == "plot":
            import os

            from .train import plots_from_checkpoint

            out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "plots")
            paths = plots_from_checkpoint(args.checkpoint, args.index, out, data_dir=args.data_dir)
            print(f"wrote {len(paths)} pictures to {out}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
