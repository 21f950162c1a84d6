"""Command line: ``python -m snn_cuda {train,plot,stdp} ...`` (also installed as ``snn-cuda``)."""

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
    stdp = sub.add_parser(
        "stdp",
        help="measure the STDP window that backpropagation through the neuron produces",
        description="Measures dL/dw against the pre/post spike-time difference for isolated pairs and "
        "with an earlier postsynaptic spike, for several decays, both resets and both delays; then the "
        "window of a trained SpikingNet's hidden->output weights. Writes a CSV/JSON table, a plot and "
        "a plain-words summary to --out.",
    )
    stdp.add_argument("--decays", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    stdp.add_argument("--max-lag", type=int, default=15, help="Δt from -max-lag to max-lag")
    stdp.add_argument("--checkpoint", default=None,
                      help="a spiking checkpoint for the population window (default: train one epoch on digits)")
    stdp.add_argument("--batch", type=int, default=256, help="test examples for the population window")
    stdp.add_argument("--no-population", action="store_true", help="only the controlled experiment")
    stdp.add_argument("--out", default="runs/stdp")
    return parser


def run_stdp(args) -> None:
    import os

    import torch

    from . import stdp
    from .train import TrainConfig, UserError, build_model, latest_checkpoint, load_checkpoint, run_training
    from .data import DataError, load_dataset

    if args.max_lag < 1 or any(not 0 < d < 1 for d in args.decays) or args.batch < 1:
        raise UserError("--max-lag and --batch must be >= 1 and every decay in (0, 1)")
    results = stdp.run_controlled(args.decays, ["proportional", "subtract"], [True, False], args.max_lag)
    population = None
    if not args.no_population:
        path = args.checkpoint
        if path is None:
            folder = os.path.join(args.out, "trained_model")
            path = latest_checkpoint(folder, "spiking")
            if path is None:
                print(f"no --checkpoint: training a SpikingNet on digits for one epoch into {folder}")
                run_training(TrainConfig(epochs=1, model="spiking", out=folder, device="cpu"))
                path = latest_checkpoint(folder, "spiking")
        ckpt = load_checkpoint(path)
        if ckpt["kind"] != "spiking":
            raise UserError(f"{path} is a {ckpt['kind']} checkpoint; the population window needs a spiking one")
        cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__})
        try:
            _, test = load_dataset(cfg.dataset, cfg.data_dir, download=False)
        except DataError as error:
            raise UserError(str(error)) from None
        model = build_model("spiking", cfg, ckpt["n_inputs"], ckpt["n_classes"])
        model.load_state_dict(ckpt["model"])
        n = min(args.batch, len(test))
        population = stdp.population_window(model, test.images[:n], test.labels[:n], args.max_lag,
                                            torch.Generator().manual_seed(cfg.seed))
        print(f"population window from {path} over {n} test examples")
    paths = stdp.write_outputs(results, population, args.out)
    print()
    print(stdp.table(results))
    print()
    print(open(paths["summary"]).read())
    print("wrote " + ", ".join(paths.values()))


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
        elif args.command == "stdp":
            run_stdp(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
