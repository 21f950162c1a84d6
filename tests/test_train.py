"""The seed's networks, the data readers, and the training command (short runs on small data)."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from snn_cuda import NonSpikingNet, SpikingNet
from snn_cuda.cli import main as cli_main
from snn_cuda.data import DataError, load_mnist, read_idx, write_idx

from helpers import assert_close

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_spiking_net_backends_agree(rng):
    """Same weights, same noise masks: fused and reference SpikingNet give the same log-probabilities
    and parameter gradients (float64)."""
    T, B = 37, 6
    nets = {b: SpikingNet(n_time_steps=T, begin_eval=5, n_inputs=64, backend=b).double()
            for b in ("fused", "reference")}
    nets["reference"].load_state_dict(nets["fused"].state_dict())
    x = torch.rand(B, 1, 8, 8, generator=rng, dtype=torch.float64) * 3 - 0.5
    masks = nets["fused"].noise_masks(B, generator=rng)
    target = torch.randint(0, 10, (B,), generator=rng)
    out = {}
    for name, net in nets.items():
        logp = net(x, masks=masks)
        torch.nn.functional.nll_loss(logp, target).backward()
        out[name] = [logp] + [p.grad for p in net.parameters()]
        _, (s1, o1, s2, o2) = net.forward_through_time(x, masks=masks)
        assert (o1 > 0).any() and (o2 > 0).any(), "no spikes: the comparison would be vacuous"
    for a, b in zip(out["fused"], out["reference"]):
        assert_close(a, b, torch.float64, "fused vs reference SpikingNet", atol=1e-10, rtol=1e-10)


def test_noise_mask_streams(rng):
    """"parallel": uniform [0, 1), one generator per step seeded from the caller's generator, the
    same numbers whatever the thread count and for the same generator state; "single": exactly the
    one torch.rand call of snn_cuda 0.2.0."""
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    parallel = SpikingNet(n_time_steps=24, n_inputs=784)
    threads = torch.get_num_threads()
    try:
        draws = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            draws.append(parallel.noise_masks(50, torch.Generator().manual_seed(seed)))
    finally:
        torch.set_num_threads(threads)
    assert draws[0].shape == (24, 50, 784) and draws[0].dtype == torch.float32
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    m = draws[0]
    assert 0 <= m.min() and m.max() < 1 and abs(m.mean().item() - 0.5) < 0.01
    assert abs(m.var().item() - 1 / 12) < 0.005
    assert not torch.equal(m[0], m[1])  # each step its own stream
    # Successive draws from one generator differ, and the global generator is used by default.
    g = torch.Generator().manual_seed(seed)
    assert not torch.equal(parallel.noise_masks(50, g), parallel.noise_masks(50, g))
    torch.manual_seed(seed)
    a = parallel.noise_masks(3)
    torch.manual_seed(seed)
    assert torch.equal(a, parallel.noise_masks(3))
    single = SpikingNet(n_time_steps=24, n_inputs=784, mask_stream="single")
    expected = torch.rand(24, 50, 784, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(single.noise_masks(50, torch.Generator().manual_seed(seed)), expected)
    assert not torch.equal(draws[0], expected)
    with pytest.raises(ValueError, match='mask_stream must be "parallel" or "single"'):
        SpikingNet(mask_stream="threads")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_parallel_uniform_in_every_dtype(dtype):
    """[0, 1) in the target dtype (never 1 after rounding), uniform, the same under any thread
    count, different seeds giving different streams."""
    from snn_cuda.models import parallel_uniform

    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = parallel_uniform((3, 200_000), g(), "cpu", dtype)
        torch.set_num_threads(2)
        two = parallel_uniform((3, 200_000), g(), "cpu", dtype)
    finally:
        torch.set_num_threads(threads)
    assert one.dtype == dtype and torch.equal(one, two)
    assert one.min() >= 0 and one.max() < 1
    values = one.double()
    assert abs(values.mean().item() - 0.5) < 0.01 and abs(values.var().item() - 1 / 12) < 0.01
    # Each of 10 equal bins holds ~10% (a biased generator or a stuck bit would not).
    counts = torch.histc(values, bins=10, min=0, max=1) / values.numel()
    assert (counts - 0.1).abs().max() < 0.01, counts
    other = parallel_uniform((3, 200_000), torch.Generator().manual_seed(12), "cpu", dtype)
    assert not torch.equal(one, other)


def test_spiking_net_is_the_seed_network(rng):
    """The logits are the mean of layer 2's returned states over steps begin_eval..T-1 (or the sum)."""
    net = SpikingNet(n_time_steps=20, begin_eval=3, n_inputs=64).double()
    x = torch.rand(4, 64, generator=rng, dtype=torch.float64)
    masks = net.noise_masks(4, generator=rng)
    logits, (s1, o1, s2, o2) = net.forward_through_time(x, masks=masks)
    states1, outputs1 = net.layer1(masks * x)
    states2, _ = net.layer2(outputs1)
    assert torch.equal(s2, states2)
    assert_close(logits, states2[3:].mean(0), torch.float64, "mean logits")
    net.reduction = "sum"
    logits_sum, _ = net.forward_through_time(x, masks=masks)
    assert_close(logits_sum, states2[3:].sum(0), torch.float64, "sum logits")
    with pytest.raises(ValueError, match="begin_eval < n_time_steps"):
        SpikingNet(n_time_steps=4, begin_eval=4)
    with pytest.raises(ValueError, match=r"masks must have shape \[T, B, n_inputs\]"):
        net(x, masks=masks[:3])


def test_nonspiking_net():
    net = NonSpikingNet(n_inputs=64)
    out = net(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_reader_roundtrip(tmp_path, suffix, rng):
    images = torch.randint(0, 256, (7, 5, 3), generator=rng, dtype=torch.uint8).numpy()
    path = str(tmp_path / f"imgs-idx3-ubyte{suffix}")
    write_idx(path, images)
    assert np.array_equal(read_idx(path), images)


def test_idx_reader_rejects_corrupt_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="is not an IDX file: its header starts with 12340801"):
        read_idx(str(bad_magic))
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big")
                      + (28).to_bytes(4, "big") + b"\x00" * 100)
    with pytest.raises(DataError, match=r"header says shape \(10, 28, 28\).*but 100 bytes follow"):
        read_idx(str(short))
    truncated_gz = tmp_path / "t.gz"
    truncated_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abcde")[:-6])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(str(truncated_gz))


def write_fake_mnist(folder, rng, n_train=40, n_test=20, gz=True):
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"),
                  torch.randint(0, 256, (n, 28, 28), generator=rng, dtype=torch.uint8).numpy())
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"),
                  torch.randint(0, 10, (n,), generator=rng, dtype=torch.uint8).numpy())


def test_load_mnist_with_dotted_file_names(tmp_path, rng):
    """train-images.idx3-ubyte (a dot before idx), as several distributions name the files."""
    write_fake_mnist(str(tmp_path), rng, gz=True)
    for name in os.listdir(tmp_path):
        os.rename(tmp_path / name, tmp_path / name.replace("-idx", ".idx"))
    assert all(".idx" in name for name in os.listdir(tmp_path))
    train, test = load_mnist(str(tmp_path), download=False)
    assert train.images.shape == (40, 1, 28, 28) and test.labels.shape == (20,)


def test_load_mnist_from_idx_files(tmp_path, rng):
    write_fake_mnist(str(tmp_path), rng, gz=False)
    train, test = load_mnist(str(tmp_path), download=False)
    assert train.images.shape == (40, 1, 28, 28) and test.labels.shape == (20,)
    assert train.images.min() >= -0.5 and train.images.max() <= 0.5  # the seed's scaling
    with pytest.raises(DataError, match="MNIST files missing from .*train-images-idx3-ubyte"):
        load_mnist(str(tmp_path / "nowhere"), download=False)


def run_cli(*args):
    return cli_main(list(args))


def test_train_writes_everything_and_learns(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = run_cli("train", "--epochs", "2", "--time-steps", "16", "--train-limit", "640",
                   "--test-limit", "100", "--batch-size", "16", "--lr", "0.1", "0.05", "--out", out)
    assert code == 0
    printed = capsys.readouterr().out
    assert "| model | test acc ep1 | test acc ep2 | s/epoch (mean) |" in printed
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for kind in ("spiking", "nonspiking"):
        history = metrics["models"][kind]
        assert [h["epoch"] for h in history] == [1, 2]
        # It learns: the second epoch's training loss is below the first's and well below chance.
        assert history[1]["train_loss"] < history[0]["train_loss"]
        assert history[1]["test_accuracy"] > 0.3, (kind, history)
        for epoch in (1, 2):
            assert os.path.getsize(os.path.join(out, kind, f"checkpoint_epoch{epoch:03d}.pt")) > 0
    plots = os.listdir(os.path.join(out, "plots"))
    for name in ("training_curves.png", "input.png", "layer0_states.png", "layer0_outputs.png",
                 "layer1_states.png", "layer1_outputs.png", "hidden_neuron_states.png",
                 "label_neuron_states.png"):
        assert name in plots and os.path.getsize(os.path.join(out, "plots", name)) > 1000, name


def test_resume_gives_the_uninterrupted_result(tmp_path):
    common = ["train", "--time-steps", "12", "--train-limit", "192", "--test-limit", "60",
              "--batch-size", "32", "--model", "spiking"]
    full = str(tmp_path / "full")
    assert run_cli(*common, "--epochs", "3", "--out", full) == 0
    part = str(tmp_path / "part")
    assert run_cli(*common, "--epochs", "3", "--out", part) == 0
    # Simulate a crash during epoch 3: its checkpoint never got written.
    os.remove(os.path.join(part, "spiking", "checkpoint_epoch003.pt"))
    assert run_cli(*common, "--epochs", "3", "--out", part, "--resume") == 0
    a = json.load(open(os.path.join(full, "metrics.json")))["models"]["spiking"]
    b = json.load(open(os.path.join(part, "metrics.json")))["models"]["spiking"]
    for ha, hb in zip(a, b):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert ha[key] == hb[key], (key, ha, hb)
    # Checkpoints hold only what torch's safe loader accepts.
    wa = torch.load(os.path.join(full, "spiking", "checkpoint_epoch003.pt"), weights_only=True)["model"]
    wb = torch.load(os.path.join(part, "spiking", "checkpoint_epoch003.pt"), weights_only=True)["model"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_cli_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--batch-size", "-3"], "--batch-size must be >= 1"),
        (["--time-steps", "8", "--begin-eval", "8"], "--begin-eval must be in [0, time steps)"),
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--no-download"], "MNIST files missing"),
        (["--resume", "--out", str(tmp_path / "nothing")], "no checkpoint of spiking, nonspiking"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--test-limit", "10", "--plot-index", "10", "--out", str(tmp_path / "p")], "--plot-index must be in [0, 10)"),
    ]
    for args, message in cases:
        assert run_cli("train", *args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_corrupt_idx_and_checkpoint_errors(tmp_path, rng, capsys):
    data = tmp_path / "mnist"
    write_fake_mnist(str(data), rng)
    with open(data / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(gzip.compress(b"\x07\x00\x08\x01garbage"))
    assert run_cli("train", "--dataset", "mnist", "--data-dir", str(data), "--no-download") == 2
    assert "is not an IDX file" in capsys.readouterr().err

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run_cli("plot", "--checkpoint", str(bad)) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_existing_checkpoints_are_never_overwritten(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--epochs", "1", "--time-steps", "8", "--train-limit", "64", "--test-limit", "20",
            "--model", "spiking", "--out", out]
    assert run_cli(*args) == 0
    path = os.path.join(out, "spiking", "checkpoint_epoch001.pt")
    before = open(path, "rb").read()
    assert run_cli(*args) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    # Resuming with different settings is refused, and leaves the checkpoint alone.
    assert run_cli(*args[:-2], "--time-steps", "9", "--out", out, "--resume") == 2
    assert "different settings: time_steps=8 (now 9)" in capsys.readouterr().err
    assert open(path, "rb").read() == before


def test_plot_command(tmp_path):
    out = str(tmp_path / "run")
    assert run_cli("train", "--epochs", "1", "--time-steps", "8", "--train-limit", "64",
                   "--test-limit", "20", "--model", "spiking", "--out", out) == 0
    pictures = str(tmp_path / "pics")
    assert run_cli("plot", "--checkpoint", os.path.join(out, "spiking", "checkpoint_epoch001.pt"),
                   "--index", "3", "--out", pictures) == 0
    assert len([n for n in os.listdir(pictures) if n.endswith(".png")]) == 9


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "snn_cuda", "train", "--epochs", "0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --epochs must be >= 1, got 0"


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = {"kind": "spiking", "model": {}, "epoch": 1, "config": {}, "payload": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    torch.save(evil, path)
    assert run_cli("plot", "--checkpoint", str(path), "--out", str(tmp_path / "pics")) == 2
    err = capsys.readouterr().err
    assert "refusing to load checkpoint" in err and "posix.system" in err
    # --resume reads the latest checkpoint of the run folder the same way.
    run = tmp_path / "run"
    os.makedirs(run / "spiking")
    torch.save(evil, run / "spiking" / "checkpoint_epoch001.pt")
    assert run_cli("train", "--time-steps", "4", "--train-limit", "64", "--test-limit", "32",
                   "--epochs", "2", "--model", "spiking", "--out", str(run), "--resume") == 2
    assert "refusing to load checkpoint" in capsys.readouterr().err
    assert not marker.exists(), "a checkpoint ran code"


def test_checkpoints_of_version_0_1_still_load(tmp_path):
    """0.1 stored numpy's RNG state as its own tuple (an ndarray inside): still read with the safe
    loader (numpy's array reconstruction allowed, nothing else), and the state restored."""
    import random

    from snn_cuda.train import load_checkpoint, set_rng_state

    np.random.seed(5)
    old = {"kind": "spiking", "model": {}, "epoch": 1, "config": {},
           "rng": [{"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": np.random.get_state()}]}
    expected = np.random.rand(3)
    torch.save(old, tmp_path / "old.pt")
    set_rng_state(load_checkpoint(str(tmp_path / "old.pt"))["rng"][0])
    assert np.array_equal(np.random.rand(3), expected)


def test_downloaded_mnist_is_checked_against_the_published_checksums(tmp_path, monkeypatch, rng):
    """A mirror serving a file whose content is not the standard one: the file is deleted and the
    error says which files failed and why; a file with the expected content is kept."""
    import io
    import urllib.request

    from snn_cuda import data as data_module

    served = tmp_path / "served"
    os.makedirs(served)
    for name in data_module.MNIST_FILES.values():
        shape = (5, 4, 4) if "images" in name else (5,)
        write_idx(str(served / (name + ".gz")), torch.randint(0, 10, shape, generator=rng).numpy().astype(np.uint8))

    def fake_urlopen(url, timeout=None):
        return io.BytesIO((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "mnist"
    with pytest.raises(DataError, match="does not have the published content"):
        load_mnist(str(target))
    assert not any(p.name.endswith((".gz", ".part")) for p in target.iterdir()), list(target.iterdir())
    # With the served files' own checksums published, they are accepted and read.
    monkeypatch.setattr(data_module, "MNIST_MD5", {
        name: data_module._content_md5(str(served / (name + ".gz")))
        for name in data_module.MNIST_FILES.values()})
    train, test = load_mnist(str(target))
    assert train.images.shape[0] == 5 and test.labels.shape[0] == 5


SMALL = ["--time-steps", "6", "--train-limit", "96", "--test-limit", "32", "--batch-size", "32",
         "--model", "spiking"]


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "--lr needs positive, finite learning rates"),
    (["--lr", "inf"], "--lr needs positive, finite learning rates"),
    (["--momentum", "nan"], "--momentum must be finite and >= 0"),
    (["--epochs", "2", "--lr", "0.1", "0.1", "0.1"], "--lr has 3 values for 2 epoch"),
])
def test_nonsense_hyperparameters_are_refused(tmp_path, capsys, args, message):
    assert run_cli("train", *SMALL, "--out", str(tmp_path / "run"), *args) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "spiking")


def test_diverging_training_stops_with_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", *SMALL, "--epochs", "1", "--lr", "1e30", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "training diverged: spiking epoch 1, batch" in err and "error:" in err
    assert not os.path.exists(out / "spiking" / "checkpoint_epoch001.pt")


def test_unwritable_output_is_refused_before_training(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run_cli("train", *SMALL, "--out", str(a_file)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert run_cli("train", *SMALL, "--out", str(a_file / "below")) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "epoch" not in err


def test_data_problems_are_one_line_errors(tmp_path, rng, capsys):
    # A .gz whose deflate stream is damaged (zlib.error, not an OSError).
    data = tmp_path / "corrupt"
    write_fake_mnist(str(data), rng)
    raw = bytearray(gzip.compress(os.urandom(4000), compresslevel=1))
    raw[20:40] = bytes(20)
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    assert run_cli("train", "--dataset", "mnist", "--data-dir", str(data), "--no-download") == 2
    assert "cannot read IDX file" in capsys.readouterr().err
    # Labels outside [0, 10).
    data = tmp_path / "labels"
    write_fake_mnist(str(data), rng)
    write_idx(str(data / "t10k-labels-idx1-ubyte.gz"), np.full(20, 12, dtype=np.uint8))
    assert run_cli("train", "--dataset", "mnist", "--data-dir", str(data), "--no-download") == 2
    assert "labels must be in [0, 10), found values from 12 to 12" in capsys.readouterr().err
    # No examples at all.
    data = tmp_path / "empty"
    write_fake_mnist(str(data), rng, n_train=0, n_test=0)
    assert run_cli("train", "--dataset", "mnist", "--data-dir", str(data), "--no-download") == 2
    assert "the data set is empty" in capsys.readouterr().err


def test_plot_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", *SMALL, "--epochs", "1", "--out", str(out)) == 0
    capsys.readouterr()
    ckpt_path = out / "spiking" / "checkpoint_epoch001.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run_cli("plot", "--checkpoint", str(ckpt_path), "--out", str(a_file)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    partial = {k: v for k, v in ckpt.items() if k != "n_inputs"}
    torch.save(partial, tmp_path / "partial.pt")
    assert run_cli("plot", "--checkpoint", str(tmp_path / "partial.pt")) == 2
    assert "not a complete snn_cuda checkpoint (missing n_inputs)" in capsys.readouterr().err
    wrong = dict(ckpt, model={k: v[..., :1] if v.dim() else v for k, v in ckpt["model"].items()})
    torch.save(wrong, tmp_path / "wrong.pt")
    assert run_cli("plot", "--checkpoint", str(tmp_path / "wrong.pt")) == 2
    assert "its model does not fit" in capsys.readouterr().err


def test_training_curves_have_whole_epoch_ticks(tmp_path, monkeypatch):
    from snn_cuda import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e, "test_accuracy": 0.5 + e / 10}
               for e in (1, 2, 3)]
    plots.plot_training_curves({"spiking": history}, str(tmp_path / "c.png"))
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_masks_times_the_image_in_one_pass(rng, dtype):
    """The CPU draws the masks and multiplies them by the image in one pass: the same numbers as
    drawing the masks, then multiplying; and the network's forward is the one with those masks."""
    from snn_cuda.models import parallel_uniform

    x = torch.rand(4, 64, generator=rng).to(dtype) - 0.5
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    fused = parallel_uniform((9, 4, 64), torch.Generator().manual_seed(seed), "cpu", dtype, x)
    masks = parallel_uniform((9, 4, 64), torch.Generator().manual_seed(seed), "cpu", dtype)
    assert torch.equal(fused, masks * x)
    if dtype in (torch.float64, torch.float32):
        net = SpikingNet(n_time_steps=9, n_inputs=64).to(dtype)
        a = net(x, generator=torch.Generator().manual_seed(seed))
        b = net(x, masks=net.noise_masks(4, torch.Generator().manual_seed(seed)))
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="factor must have out's shape without its first dim"):
        torch.ops.snn_cuda.uniform_noise_(torch.empty(9, 4, 64, dtype=dtype), 1, x[:2])
