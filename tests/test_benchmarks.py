"""Smoke tests: each benchmark script runs end to end at a tiny size (so it cannot rot). They check
that the scripts produce their tables and files, never how fast anything is."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_bench_recurrence_tiny(tmp_path):
    out = run("bench_recurrence.py", "--T", "4", "9", "--lanes", "300", "--H", "30", "--repeats", "1",
              "--warmup", "0", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"))
    assert "| device | dtype | T | lanes | allocator |" in out
    rows = json.load(open(tmp_path / "r.json"))["rows"]
    assert {r["allocator"] for r in rows} == {"default", "tuned"} and len(rows) == 4
    for r in rows:
        assert r["fused_fwd_bwd_s"] > 0 and r["reference_fwd_bwd_s"] > 0 and r["floor_fwd_bwd_s"] > 0
    assert all("fused_peak_bytes" in r for r in rows if r["allocator"] == "default")
    assert os.path.getsize(tmp_path / "r.png") > 1000


def test_bench_training_tiny(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"config": {"backend": "fused", "dataset": "digits", "batch_size": 4,
                                              "time_steps": 3},
                                   "models": {"spiking": [{"epoch": 1, "seconds": 1.5, "samples_per_s": 9.0}]}}))
    out = run("bench_training.py", "--shapes", "3x4x5", "--repeats", "1", "--warmup", "0",
              "--allocator", "tuned", "--metrics", str(metrics), "--json", str(tmp_path / "t.json"))
    assert "| T x batch x net |" in out and "3x4x784->5->10" in out
    result = json.load(open(tmp_path / "t.json"))
    assert {r["backend"] for r in result["rows"]} == {"seed", "reference", "fused"}
    assert "| seed's code ms |" in out
    assert result["epochs"][0][-2] == 1.5


def test_bench_peers_tiny(tmp_path):
    out = run("bench_peers.py", "--sizes", "16", "--T", "5", "--batch", "2", "--repeats", "1",
              "--warmup", "0", "--json", str(tmp_path / "p.json"))
    assert "| n | library | fwd+bwd s |" in out
    result = json.load(open(tmp_path / "p.json"))
    libraries = {r["library"] for r in result["rows"]}
    assert {"linear", "snn_cuda.Leaky", "snn_cuda.LIFNode", "snn_cuda.IFNode"} <= libraries
    for r in result["rows"]:
        assert r["seconds"] > 0
        if r["library"] == "linear" or r["library"].endswith(".LI"):  # no spikes
            assert r["spike_rate"] is None
        else:
            assert 0 <= r["spike_rate"] <= 1 and "neuron_seconds" in r
    # The peers are in the table when installed (CI installs them), and said to be missing if not.
    for peer in ("snntorch.Leaky", "spikingjelly.LIFNode", "spikingjelly.IFNode", "snntorch.Synaptic",
                 "norse.LIF", "norse.LI"):
        assert (peer in libraries) == (result["versions"][peer] is not None)
    for r in result["rows"]:  # each of ours against the module it replaces, when installed
        if r["library"] == "snn_cuda.IFNode" and "spikingjelly.IFNode" in libraries:
            assert r["speedup_vs_original"] > 0


def test_bench_surrogates_tiny():
    out = run("bench_surrogates.py", "--shape", "5", "2", "3", "--repeats", "1", "--warmup", "0")
    assert "| convention | surrogate | forward s | backward s |" in out
    for convention in ("snntorch", "spikingjelly"):
        for name in ("fast_sigmoid", "super_spike", "atan", "sigmoid"):
            assert f"| {convention} | {name} |" in out


def test_bench_dropin_tiny(tmp_path):
    out = run("bench_dropin.py", "--T", "2", "--batch", "2", "--neurons", "8", "--T-conv", "2",
              "--batch-conv", "2", "--repeats", "1", "--warmup", "0", "--json", str(tmp_path / "d.json"))
    assert "| case | implementation | median s |" in out
    rows = json.load(open(tmp_path / "d.json"))["rows"]
    names = {(r["case"].split(" (")[0], r["implementation"]) for r in rows}
    assert {("Leaky per step", "snn_cuda"), ("LIFNode per step", "snn_cuda"),
            ("seed layer per step", "snn_cuda"), ("seed layer per step", "seed"),
            ("snnTorch tutorial net 784-1000-10", "snn_cuda run_sequence")} <= names
    assert all(r["median_s"] > 0 for r in rows)


def test_bench_fixed_cost_tiny(tmp_path):
    out = run("bench_fixed_cost.py", "--lanes", "1000", "--repeats", "1", "--warmup", "0",
              "--json", str(tmp_path / "f.json"))
    assert "| lanes | rec fwd op us |" in out
    rows = json.load(open(tmp_path / "f.json"))["rows"]
    assert rows[0]["lanes"] == 1000 and rows[0]["rec_fwd_op_us"] > 0
