"""The training command: the seed's SNN vs non-spiking comparison, on the fused layer.

``python -m snn_cuda train`` (see ``--help``). Runs on one process, or under ``torchrun`` with
DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import pickle
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from .data import DATASETS, DataError, Split, load_dataset
from .models import MASK_STREAMS, REDUCTIONS, NonSpikingNet, SpikingNet

MODELS = ("spiking", "nonspiking")
SEED_LRS = (0.1, 0.05, 0.01)


class UserError(Exception):
    """A mistake the user can fix; reported as one line and a non-zero exit, never a traceback."""


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str = "data"
    epochs: int = 3
    batch_size: Optional[int] = None  # global batch; None = 1000 for mnist (the seed's), 32 for digits
    time_steps: int = 128
    begin_eval: int = 0
    lr: List[float] = field(default_factory=lambda: list(SEED_LRS))
    momentum: float = 0.5
    keep_momentum: bool = False  # the seed makes a new optimizer (fresh momentum) every epoch
    backend: str = "fused"
    model: str = "both"
    reduction: str = "mean"
    mask_stream: str = "parallel"  # how SpikingNet draws its noise masks (see models.SpikingNet)
    device: str = "auto"
    seed: int = 0
    out: Optional[str] = None
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    download: bool = True
    plot_index: int = 0

    def resolved_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 1000 if self.dataset == "mnist" else 32

    def lr_for(self, epoch: int) -> float:
        return self.lr[min(epoch, len(self.lr)) - 1]


# Settings that must match for --resume to continue a run (the others may change, e.g. --device).
RESUME_KEYS = ("dataset", "epochs", "batch_size", "time_steps", "begin_eval", "lr", "momentum",
               "keep_momentum", "backend", "reduction", "mask_stream", "seed", "train_limit",
               "test_limit")
# What a setting was before it existed: checkpoints of snn_cuda 0.2.0 and before drew the masks in
# one stream.
LEGACY_CONFIG = {"mask_stream": "single"}


def saved_config(config: dict) -> dict:
    """A checkpoint's config with the settings it predates filled in as they were then."""
    return {**LEGACY_CONFIG, **config}


def validate(cfg: TrainConfig, world_size: int) -> None:
    problems = []
    if cfg.epochs < 1:
        problems.append(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.time_steps < 1:
        problems.append(f"--time-steps must be >= 1, got {cfg.time_steps}")
    if not 0 <= cfg.begin_eval < max(cfg.time_steps, 1):
        problems.append(f"--begin-eval must be in [0, time steps), got {cfg.begin_eval}")
    if not cfg.lr or any(not (math.isfinite(lr) and lr > 0) for lr in cfg.lr):
        problems.append(f"--lr needs positive, finite learning rates, got {cfg.lr}")
    if not (math.isfinite(cfg.momentum) and cfg.momentum >= 0):
        problems.append(f"--momentum must be finite and >= 0, got {cfg.momentum}")
    for name in ("train_limit", "test_limit"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if cfg.resolved_batch_size() % world_size:
        problems.append(
            f"--batch-size (the global batch, {cfg.resolved_batch_size()}) must be divisible by "
            f"the number of processes ({world_size})"
        )
    if problems:
        raise UserError("; ".join(problems))


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_arg: str) -> DistContext:
    """One process, or the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL
    on CUDA, one GPU per local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_arg.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is visible")
    if device_arg not in ("cpu", "cuda") and not device_arg.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device_arg!r}")
    if world_size == 1:
        return DistContext(0, 1, torch.device(device_arg))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg.startswith("cuda"):
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, device)


def build_model(kind: str, cfg: TrainConfig, n_inputs: int, n_classes: int) -> torch.nn.Module:
    if kind == "spiking":
        return SpikingNet(n_time_steps=cfg.time_steps, begin_eval=cfg.begin_eval, n_inputs=n_inputs,
                          n_hidden=100, n_classes=n_classes, backend=cfg.backend,
                          reduction=cfg.reduction, mask_stream=cfg.mask_stream)
    return NonSpikingNet(n_inputs=n_inputs, n_hidden=100, n_classes=n_classes)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state in types that torch.load(weights_only=True) accepts: tensors, lists,
    numbers and strings (numpy's key array as an int64 tensor, Python's tuple as lists)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                             numpy_state["pos"], numpy_state["has_gauss"],
                             numpy_state["cached_gaussian"]))
    else:  # checkpoints of snn_cuda 0.1: numpy's own tuple
        np.random.set_state(numpy_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a
    half-written file under the real name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def checkpoint_path(out: str, kind: str, epoch: int) -> str:
    return os.path.join(out, kind, f"checkpoint_epoch{epoch:03d}.pt")


def latest_checkpoint(out: str, kind: str) -> Optional[str]:
    folder = os.path.join(out, kind)
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder) if n.startswith("checkpoint_epoch") and n.endswith(".pt"))
    return os.path.join(folder, names[-1]) if names else None


def _numpy_state_globals():
    """What a snn_cuda 0.1 checkpoint's numpy RNG state needs from the unpickler: numpy's array
    reconstruction and the uint32 dtype, nothing that can run code (elements of an object array
    would still have to pass the same restricted unpickler)."""
    core = np._core if hasattr(np, "_core") else np.core  # (np.core warns on numpy 2: not touched there)
    reconstruct = core.multiarray._reconstruct
    found = [reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found.append(dtypes.UInt32DType)
    return found


def load_checkpoint(path: str) -> dict:
    """A training checkpoint, read with torch's safe loader (weights_only=True): tensors, numbers,
    strings, lists and dicts only, so a checkpoint from someone else can never run code here.
    Checkpoints of snn_cuda 0.1 (numpy arrays in their RNG state) load too."""
    def refused_global(error) -> Optional[str]:
        lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        return lines[0] if lines else None

    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if refused_global(error) is None:
                raise
            with torch.serialization.safe_globals(_numpy_state_globals()):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        what = refused_global(error)
        if what is not None:
            raise UserError(
                f"refusing to load checkpoint {path}: it holds objects other than tensors and plain "
                f"data, which a snn_cuda checkpoint never does, and loading them could run code "
                f"({what})"
            ) from None
        raise UserError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or a damaged one") from None
    except Exception as error:  # a damaged or foreign file: report it in one line
        raise UserError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(ckpt, dict) or not {"model", "epoch", "config", "kind"} <= set(ckpt):
        raise UserError(f"{path} is not a snn_cuda training checkpoint")
    return ckpt


def load_model_state(model, state, path: str) -> None:
    """load_state_dict, with a mismatch (missing keys, wrong shapes) reported as a user error."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        raise UserError(f"{path}: its model does not fit ({first[0] if first else type(error).__name__}"
                        f"{' ...' if len(first) > 1 else ''})") from None


def make_optimizer(model, cfg: TrainConfig, epoch: int):
    return torch.optim.SGD(model.parameters(), lr=cfg.lr_for(epoch), momentum=cfg.momentum)


def evaluate(model, split: Split, batch_size: int, ctx: DistContext) -> Dict[str, float]:
    """Loss and accuracy over the whole split; each rank takes every world_size-th example and the
    sums are all-reduced, so the numbers are exact for any number of processes."""
    model.eval()
    idx = torch.arange(ctx.rank, len(split), ctx.world_size)
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            x = split.images[part].to(ctx.device)
            y = split.labels[part].to(ctx.device)
            out = model(x)
            sums[0] += F.nll_loss(out, y, reduction="sum").double()
            sums[1] += (out.argmax(1) == y).sum()
            sums[2] += len(part)
    if ctx.world_size > 1:
        dist.all_reduce(sums)
    return {"test_loss": (sums[0] / sums[2]).item(), "test_accuracy": (sums[1] / sums[2]).item()}


def check_finite_step(model, loss_value: float, epoch: int, batch: int, kind: str,
                      ctx: DistContext) -> None:
    """Stops training (before the step, so no checkpoint holds NaN weights) when the loss is not
    finite. Under DDP every rank stops at the same batch: a non-finite loss on one rank makes the
    all-reduced gradients non-finite on all of them, which each rank checks."""
    diverged = not math.isfinite(loss_value)
    if ctx.world_size > 1 and not diverged:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        diverged = bool(grads) and not bool(torch.isfinite(grads[0]).all())
    if diverged:
        raise UserError(
            f"training diverged: {kind} epoch {epoch}, batch {batch}: the loss is {loss_value} (or "
            "the gradients are not finite); no checkpoint was written for this epoch. A smaller "
            "--lr may help"
        )


def train_one_epoch(model, optimizer, loader, epoch: int, cfg: TrainConfig, ctx: DistContext, kind: str):
    from tqdm import tqdm

    model.train()
    # Sums over this rank's examples; all-reduced at the end of the epoch.
    totals = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
    begin = time.perf_counter()
    # On a terminal the bar redraws ten times a second; in a log file, every ten seconds.
    interactive = sys.stderr.isatty()
    bar = tqdm(loader, desc=f"{kind} epoch {epoch}/{cfg.epochs}", unit="batch",
               disable=not ctx.is_main, dynamic_ncols=True, leave=True,
               mininterval=0.1 if interactive else 10.0)
    for batch, (x, y) in enumerate(bar, start=1):
        x, y = x.to(ctx.device), y.to(ctx.device)
        optimizer.zero_grad()
        out = model(x)
        loss = F.nll_loss(out, y)
        loss.backward()
        loss_value = loss.item()
        check_finite_step(model, loss_value, epoch, batch, kind, ctx)
        optimizer.step()
        totals += torch.tensor([loss_value * len(y), (out.argmax(1) == y).sum().item(), len(y)],
                               dtype=torch.float64)
        elapsed = time.perf_counter() - begin
        # Shown: this rank's running loss and accuracy, and the throughput of all ranks.
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{100 * totals[1] / totals[2]:.1f}%",
                        samples_s=f"{totals[2] * ctx.world_size / max(elapsed, 1e-9):.0f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - begin
    if ctx.world_size > 1:
        totals = totals.to(ctx.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    seen = max(totals[2].item(), 1.0)
    return {"train_loss": totals[0].item() / seen, "train_accuracy": totals[1].item() / seen,
            "seconds": seconds, "samples_per_s": totals[2].item() / max(seconds, 1e-9)}


def train_model(kind: str, cfg: TrainConfig, ctx: DistContext, train: Split, test: Split,
                out: str, resume: bool, log=print) -> List[dict]:
    """Trains one model for cfg.epochs (continuing from its last checkpoint if resume), writing a
    checkpoint per epoch. Returns its per-epoch history."""
    n_inputs = train.images[0].numel()
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    seed_everything(cfg.seed + 1000 * ctx.rank + (0 if kind == "spiking" else 1))
    model = build_model(kind, cfg, n_inputs, n_classes).to(ctx.device)
    history: List[dict] = []
    start_epoch = 1
    optimizer_state = None
    if resume:
        path = latest_checkpoint(out, kind)
        if path is not None:
            ckpt = load_checkpoint(path)
            load_model_state(model, ckpt["model"], path)
            history = ckpt["history"]
            start_epoch = ckpt["epoch"] + 1
            optimizer_state = ckpt["optimizer"]
            states = ckpt["rng"]
            set_rng_state(states[ctx.rank] if ctx.rank < len(states) else states[0])
            log(f"resuming {kind} from {path} (epoch {ckpt['epoch']} done)")
    ddp_model = model
    if ctx.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    local_batch = cfg.resolved_batch_size() // ctx.world_size
    sampler = DistributedSampler(TensorDataset(train.images, train.labels), num_replicas=ctx.world_size,
                                 rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=False)
    loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=local_batch, sampler=sampler)
    optimizer = make_optimizer(model, cfg, max(start_epoch, 1))
    if optimizer_state is not None and cfg.keep_momentum:
        optimizer.load_state_dict(optimizer_state)
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.keep_momentum:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_for(epoch)
        else:  # the seed: a new SGD optimizer per epoch
            optimizer = make_optimizer(model, cfg, epoch)
        sampler.set_epoch(epoch)
        stats = train_one_epoch(ddp_model, optimizer, loader, epoch, cfg, ctx, kind)
        # The plain module: DDP's forward may broadcast buffers, a collective that ranks with
        # unequal evaluation shards would not all reach.
        stats.update(evaluate(model, test, max(local_batch, 256), ctx))
        stats.update(epoch=epoch, lr=cfg.lr_for(epoch))
        history.append(stats)
        log(f"Test set ({kind}, epoch {epoch}): average loss {stats['test_loss']:.4f}, "
            f"accuracy {100 * stats['test_accuracy']:.2f}% ({stats['seconds']:.1f} s)")
        states = [rng_state()]
        if ctx.world_size > 1:
            gathered = [None] * ctx.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if ctx.is_main:
            atomic_save({"kind": kind, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "epoch": epoch, "config": asdict(cfg), "history": history, "rng": states,
                         "n_inputs": n_inputs, "n_classes": n_classes},
                        checkpoint_path(out, kind, epoch))
    return history


def comparison_table(histories: Dict[str, List[dict]]) -> str:
    epochs = max((len(h) for h in histories.values()), default=0)
    headers = ["model"] + [f"test acc ep{e}" for e in range(1, epochs + 1)] + ["s/epoch (mean)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for name, history in histories.items():
        accs = [f"{100 * h['test_accuracy']:.2f}%" for h in history] + ["-"] * (epochs - len(history))
        secs = np.mean([h["seconds"] for h in history]) if history else float("nan")
        lines.append("| " + " | ".join([name] + accs + [f"{secs:.2f}"]) + " |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_training(cfg: TrainConfig, resume: bool = False) -> Dict[str, List[dict]]:
    ctx = setup_distributed(cfg.device)
    validate(cfg, ctx.world_size)
    cfg.batch_size = cfg.resolved_batch_size()
    if cfg.out is None:
        if resume:
            raise UserError("--resume needs --out: the folder of the run to continue")
        cfg.out = os.path.join("runs", f"{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        if ctx.world_size > 1:  # every rank must agree on the folder
            name = [cfg.out]
            dist.broadcast_object_list(name, src=0)
            cfg.out = name[0]
    kinds = list(MODELS) if cfg.model == "both" else [cfg.model]
    if resume:
        if not any(latest_checkpoint(cfg.out, k) for k in kinds):
            raise UserError(f"--resume: no checkpoint of {', '.join(kinds)} under {cfg.out}")
        for k in kinds:
            path = latest_checkpoint(cfg.out, k)
            if path:
                old = saved_config(load_checkpoint(path)["config"])
                diff = [key for key in RESUME_KEYS if old.get(key) != asdict(cfg).get(key)]
                if diff:
                    raise UserError(
                        f"--resume: {path} was written with different settings: "
                        + ", ".join(f"{key}={old.get(key)!r} (now {asdict(cfg).get(key)!r})" for key in diff)
                    )
    elif any(latest_checkpoint(cfg.out, k) for k in kinds):
        raise UserError(f"{cfg.out} already holds checkpoints: pass --resume to continue that run, "
                        "or choose another --out")
    if ctx.is_main:
        check_writable_folder(cfg.out, "--out")
    log = print if ctx.is_main else (lambda *a, **k: None)
    try:
        train, test = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    except DataError as error:
        raise UserError(str(error)) from None
    train, test = train.subset(cfg.train_limit), test.subset(cfg.test_limit)
    if not 0 <= cfg.plot_index < len(test):
        raise UserError(f"--plot-index must be in [0, {len(test)}) (the test examples), got {cfg.plot_index}")
    log(f"{cfg.dataset}: {len(train)} train / {len(test)} test examples of {tuple(train.images.shape[1:])}; "
        f"device {ctx.device}, {ctx.world_size} process(es), backend {cfg.backend}, T={cfg.time_steps}, "
        f"batch {cfg.batch_size}; writing to {cfg.out}")

    histories: Dict[str, List[dict]] = {}
    for kind in kinds:
        histories[kind] = train_model(kind, cfg, ctx, train, test, cfg.out, resume, log)
        if ctx.is_main:
            write_metrics(cfg, histories)
    if ctx.is_main:
        log("\n" + comparison_table(histories))
        write_pictures(cfg, histories, test, ctx)
    if ctx.world_size > 1:
        # DDP wrappers sit in reference cycles (their hooks); free them, and the reducer threads
        # they hold, before the process group goes: gloo aborts the process otherwise.
        gc.collect()
        dist.barrier()  # rank 0 has written its files
        dist.destroy_process_group()
    return histories


def check_writable_folder(folder: str, option: str) -> None:
    """Before any work: the folder can be created and written to (not a file, not read-only)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{option} {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UserError(f"{option} {folder} is not writable: {error.strerror or error}") from None


def write_metrics(cfg: TrainConfig, histories) -> None:
    atomic_write_json({"config": asdict(cfg), "machine": machine(), "models": histories},
                      os.path.join(cfg.out, "metrics.json"))


def write_pictures(cfg: TrainConfig, histories, test: Split, ctx: DistContext) -> None:
    from .plots import plot_training_curves

    paths = [plot_training_curves(histories, os.path.join(cfg.out, "plots", "training_curves.png"))]
    path = latest_checkpoint(cfg.out, "spiking")
    if path is not None:
        paths += plots_from_checkpoint(path, cfg.plot_index, os.path.join(cfg.out, "plots"), test, ctx.device)
    print(f"wrote {len(paths)} pictures to {os.path.join(cfg.out, 'plots')}")


def plots_from_checkpoint(path: str, index: int, out_dir: str, test: Optional[Split] = None,
                          device=torch.device("cpu"), data_dir: Optional[str] = None) -> List[str]:
    from .plots import plot_example

    check_writable_folder(out_dir, "the pictures' folder (--out)")
    ckpt = load_checkpoint(path)
    if ckpt["kind"] != "spiking":
        raise UserError(f"{path} is a {ckpt['kind']} checkpoint; the neuron pictures need a spiking one")
    missing = [key for key in ("n_inputs", "n_classes") if key not in ckpt]
    if missing or not isinstance(ckpt["config"], dict):
        raise UserError(f"{path} is not a complete snn_cuda checkpoint (missing {', '.join(missing) or 'config'})")
    cfg = TrainConfig(**{k: v for k, v in saved_config(ckpt["config"]).items()
                         if k in TrainConfig.__dataclass_fields__})
    if test is None:
        try:
            _, test = load_dataset(cfg.dataset, data_dir or cfg.data_dir, download=False)
        except DataError as error:
            raise UserError(str(error)) from None
    if not 0 <= index < len(test):
        raise UserError(f"--index must be in [0, {len(test)}) for the {cfg.dataset} test set, got {index}")
    model = build_model("spiking", cfg, ckpt["n_inputs"], ckpt["n_classes"]).to(device)
    load_model_state(model, ckpt["model"], path)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    return plot_example(model, test.images[index], int(test.labels[index]), out_dir, generator)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="digits: scikit-learn's 8x8 digits, no download (default); mnist: the IDX files in --data-dir")
    p.add_argument("--data-dir", default=d.data_dir, help="where the MNIST IDX files are (or go)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never try to download missing MNIST files")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch size (split over torchrun processes); default 1000 for mnist (the seed's), 32 for digits")
    p.add_argument("--time-steps", type=int, default=d.time_steps, help="T (the seed: 128)")
    p.add_argument("--begin-eval", type=int, default=d.begin_eval, help="first step counted in the logits")
    p.add_argument("--lr", type=float, nargs="+", default=None,
                   help="learning rate per epoch, the last one repeating (the seed's: 0.1 0.05 0.01)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--keep-momentum", action="store_true",
                   help="keep one optimizer across epochs (the seed makes a new one per epoch)")
    p.add_argument("--backend", choices=["fused", "reference"], default=d.backend)
    p.add_argument("--model", choices=["spiking", "nonspiking", "both"], default=d.model)
    p.add_argument("--reduction", choices=REDUCTIONS, default=d.reduction,
                   help="how layer 2's states over time become logits (the seed's code: mean)")
    p.add_argument("--mask-stream", choices=MASK_STREAMS, default=d.mask_stream,
                   help="the noise masks: one generator per time step, drawn in parallel (default), "
                        "or one stream on one thread (snn_cuda 0.2.0's numbers)")
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test examples")
    p.add_argument("--plot-index", type=int, default=d.plot_index, help="test example shown in the pictures")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__}
    if values["lr"] is None:  # the seed's schedule; with fewer epochs its first rates
        values["lr"] = list(SEED_LRS)
    elif len(values["lr"]) > max(values["epochs"], 1):
        raise UserError(f"--lr has {len(values['lr'])} values for {values['epochs']} epoch(s): give at "
                        "most one per epoch (the last one repeats)")
    return TrainConfig(**values)
