"""Scale-out on PyTorch's own engine: DistributedDataParallel over gloo on CPU."""

import gc
import json
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from snn_cuda import SpikingNet

from helpers import assert_close

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, GLOBAL_BATCH, N_IN = 24, 8, 64


def global_batch():
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(GLOBAL_BATCH, N_IN, generator=g, dtype=torch.float64) * 3 - 0.5
    y = torch.randint(0, 10, (GLOBAL_BATCH,), generator=g)
    masks = torch.rand(T, GLOBAL_BATCH, N_IN, generator=g, dtype=torch.float64)
    return x, y, masks


def one_step(model, x, y, masks):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    loss = F.nll_loss(model(x, masks=masks), y)
    loss.backward()
    optimizer.step()


def fresh_model():
    torch.manual_seed(0)
    return SpikingNet(n_time_steps=T, n_inputs=N_IN).double()


def ddp_step(rank, world_size):
    """One DDP training step on this rank's half of the global batch; returns the weights."""
    model = fresh_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, y, masks = global_batch()
    per = GLOBAL_BATCH // world_size
    part = slice(rank * per, (rank + 1) * per)
    one_step(ddp, x[part], y[part], masks[:, part])
    return model.state_dict()


def ddp_worker(rank, world_size, init_file, result_path):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # The DDP wrapper (and the reducer that holds the process group's threads) is gone once
        # ddp_step returns: tearing gloo down under a live reducer aborts the process at exit.
        state = ddp_step(rank, world_size)
        gc.collect()  # DDP's hooks form reference cycles: collect them now, not at exit
        if rank == 0:
            torch.save(state, result_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process(tmp_path):
    """Two gloo processes, each with half of the global batch, take the same training step as one
    process with the whole batch (same weights, same noise masks)."""
    result = str(tmp_path / "ddp.pt")
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), result), nprocs=2, join=True)
    single = fresh_model()
    one_step(single, *global_batch())
    ddp_state = torch.load(result)
    changed = False
    for name, value in single.state_dict().items():
        assert_close(ddp_state[name], value, torch.float64, f"parameter {name}", atol=1e-12, rtol=1e-10)
        changed |= not torch.equal(value, fresh_model().state_dict()[name])
    assert changed, "the step changed nothing: the comparison would be vacuous"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_command_under_torchrun(tmp_path):
    out = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}",
           "-m", "snn_cuda", "train", "--epochs", "1", "--time-steps", "8", "--train-limit", "96",
           "--test-limit", "40", "--batch-size", "16", "--model", "spiking", "--device", "cpu",
           "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout
    history = json.load(open(os.path.join(out, "metrics.json")))["models"]["spiking"]
    assert len(history) == 1 and 0 <= history[0]["test_accuracy"] <= 1
    assert os.path.exists(os.path.join(out, "spiking", "checkpoint_epoch001.pt"))
