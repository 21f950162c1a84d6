"""The STDP experiment: its gradients are the reference loop's, and the hand-solved case is exact."""

import json
import os

import pytest
import torch

from snn_cuda import stdp
from snn_cuda.cli import main as cli_main


@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", ["proportional", "subtract"])
def test_isolated_pair_is_decay_to_the_lag_exactly(reset, delay):
    """One input, no reset in the window: dL/dw = decay**(Δt - delay) * dL/do (= 1 here) for inputs
    at or before the spike, 0 after it."""
    for decay in (0.5, 0.9, 0.97):
        s = stdp.WindowSetting(decay=decay, reset=reset, delay=delay)
        m = stdp.measure_window(s, max_lag=12)
        expected = torch.tensor([decay ** (lag - int(delay)) if lag >= int(delay) else 0.0
                                 for lag in m["lags"].tolist()], dtype=torch.float64)
        torch.testing.assert_close(m["grad"], expected, rtol=1e-14, atol=0)
        decay_fit, tau_fit = stdp.fit_exponential(m["lags"], m["grad"], int(delay))
        assert abs(decay_fit - decay) < 1e-12
        assert abs(tau_fit + 1 / torch.log(torch.tensor(decay, dtype=torch.float64)).item()) < 1e-9


@pytest.mark.parametrize("scenario", stdp.SCENARIOS)
@pytest.mark.parametrize("reset", ["proportional", "subtract"])
def test_window_matches_the_reference_loop(reset, scenario):
    s = stdp.WindowSetting(decay=0.85, reset=reset, delay=True, scenario=scenario)
    fused = stdp.measure_window(s, max_lag=10, backend="fused")
    ref = stdp.measure_window(s, max_lag=10, backend="reference")
    torch.testing.assert_close(fused["grad"], ref["grad"], rtol=1e-12, atol=1e-15)


def test_an_earlier_spike_flips_or_cuts_the_window():
    """Proportional reset with penalty/threshold = 1.5: inputs before the earlier spike get the
    gradient times (1 - 1.5) < 0. Subtract: exactly zero."""
    for reset, check in (("proportional", lambda g: (g < 0).all()), ("subtract", lambda g: (g == 0).all())):
        s = stdp.WindowSetting(decay=0.9, reset=reset, delay=True, scenario="early spike")
        m = stdp.measure_window(s, max_lag=12)
        before_early = m["grad"][m["lags"] >= s.gap + 1]
        assert len(before_early) > 0 and check(before_early), (reset, before_early)
        assert m["spikes"].min() == 2  # both driver pulses fired


def test_population_window_against_a_brute_force_count(rng):
    """The window's sums and pair counts equal an explicit loop over every (output spike, lag), and
    the weight gradient it reports is autograd's through the reference backend."""
    from snn_cuda import SpikingNet

    torch.manual_seed(0)
    model = SpikingNet(n_time_steps=12, n_inputs=64).double()
    images = torch.rand(5, 1, 8, 8, generator=rng, dtype=torch.float64) * 3 - 0.5
    labels = torch.randint(0, 10, (5,), generator=rng)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    result = stdp.population_window(model, images, labels, max_lag=4,
                                    generator=torch.Generator().manual_seed(seed))
    g, o1, post = result["excitation_grad"], result["hidden_outputs"], result["output_spikes"]
    T, B, K = g.shape
    sums = torch.zeros(9, dtype=torch.float64)
    counts = torch.zeros(9, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            for t_post in range(T):
                if post[t_post, b, k] == 0:
                    continue
                for i, lag in enumerate(range(-4, 5)):
                    t_pre = t_post - lag
                    if 0 <= t_pre < T:
                        sums[i] += (g[t_pre, b, k] * o1[t_pre, b]).sum()
                        counts[i] += (o1[t_pre, b] > 0).sum()
    assert counts.sum() > 0, "no output spikes: the check would be vacuous"
    torch.testing.assert_close(result["sums"], sums, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result["counts"], counts)

    reference_model = SpikingNet(n_time_steps=12, n_inputs=64, backend="reference").double()
    reference_model.load_state_dict(model.state_dict())
    masks = reference_model.noise_masks(5, torch.Generator().manual_seed(seed))
    loss = torch.nn.functional.nll_loss(reference_model(images, masks=masks), labels)
    loss.backward()
    torch.testing.assert_close(result["weight_grad"], reference_model.layer2.fc.weight.grad,
                               rtol=1e-10, atol=1e-14)


def test_stdp_command_writes_its_files(tmp_path, capsys):
    out = str(tmp_path / "stdp")
    assert cli_main(["stdp", "--decays", "0.9", "--max-lag", "6", "--out", out, "--batch", "32"]) == 0
    printed = capsys.readouterr().out
    assert "| scenario | reset | delay | decay |" in printed and "exactly" in printed
    for name in ("stdp_window.csv", "stdp.json", "stdp_window.png", "summary.md"):
        assert os.path.getsize(os.path.join(out, name)) > 100, name
    doc = json.load(open(os.path.join(out, "stdp.json")))
    assert len(doc["controlled"]) == 2 * 2 * 2 and "population" in doc
