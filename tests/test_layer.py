"""SpikingNeuronLayer: against a stateful per-step layer written the seed's way, backends, compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snn_cuda
from snn_cuda import SpikingNeuronLayer
from snn_cuda.ops import RESETS

from helpers import assert_close, assert_fires_and_resets


class SeedStyleLayer(nn.Module):
    """The seed's SpikingNeuronLayerRNN, one call per time step with state kept between calls (the
    seed's code, minus the device plumbing; `reset` adds the prose's subtractive rule)."""

    def __init__(self, n_inputs, n_hidden, decay_multiplier, threshold, penalty_threshold, reset):
        super().__init__()
        self.n_hidden = n_hidden
        self.decay_multiplier = decay_multiplier
        self.threshold = threshold
        self.penalty_threshold = penalty_threshold
        self.reset = reset
        self.fc = nn.Linear(n_inputs, n_hidden)
        self.reset_state()

    def reset_state(self):
        self.prev_inner = torch.zeros([self.n_hidden], dtype=self.fc.weight.dtype)
        self.prev_outer = torch.zeros([self.n_hidden], dtype=self.fc.weight.dtype)

    def forward(self, x):
        if self.prev_inner.dim() == 1:
            batch_size = x.shape[0]
            self.prev_inner = torch.stack(batch_size * [self.prev_inner])
            self.prev_outer = torch.stack(batch_size * [self.prev_outer])
        input_excitation = self.fc(x)
        inner_excitation = input_excitation + self.prev_inner * self.decay_multiplier
        outer_excitation = F.relu(inner_excitation - self.threshold)
        do_penalize_gate = (outer_excitation > 0).to(inner_excitation.dtype)
        if self.reset == "proportional":
            inner_excitation = inner_excitation - (
                self.penalty_threshold / self.threshold * inner_excitation
            ) * do_penalize_gate
        else:
            inner_excitation = inner_excitation - (
                self.penalty_threshold + outer_excitation
            ) * do_penalize_gate
        delayed_return_state = self.prev_inner
        delayed_return_output = self.prev_outer
        self.prev_inner = inner_excitation
        self.prev_outer = outer_excitation
        return delayed_return_state, delayed_return_output


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("reset", RESETS)
def test_layer_matches_seed_style_layer(rng, reset, backend):
    T = 2 * int(torch.randint(10, 60, (1,), generator=rng)) + 1
    B, n_in, n_hidden = 7, 23, 11
    # The seed's constants for its hidden layer; an input scale that makes neurons fire.
    seed_layer = SeedStyleLayer(n_in, n_hidden, 0.9, 1.0, 1.5, reset).double()
    layer = SpikingNeuronLayer(n_in, n_hidden, 0.9, 1.0, 1.5, reset=reset, backend=backend).double()
    layer.fc.load_state_dict(seed_layer.fc.state_dict())
    x = torch.rand(T, B, n_in, generator=rng, dtype=torch.float64) * 1.5

    steps = [seed_layer(x[t]) for t in range(T)]
    seed_states = torch.stack([s for s, _ in steps])
    seed_outputs = torch.stack([o for _, o in steps])
    states, outputs = layer(x)
    assert_fires_and_resets(seed_outputs, delay=True)
    assert_close(states, seed_states, torch.float64, "states")
    assert_close(outputs, seed_outputs, torch.float64, "outputs")

    upstream_s = torch.randn(states.shape, generator=rng, dtype=torch.float64)
    upstream_o = torch.randn(states.shape, generator=rng, dtype=torch.float64)
    ((states * upstream_s).sum() + (outputs * upstream_o).sum()).backward()
    ((seed_states * upstream_s).sum() + (seed_outputs * upstream_o).sum()).backward()
    assert_close(layer.fc.weight.grad, seed_layer.fc.weight.grad, torch.float64, "weight grad", atol=1e-11)
    assert_close(layer.fc.bias.grad, seed_layer.fc.bias.grad, torch.float64, "bias grad", atol=1e-11)


def test_layer_init_like_the_seed():
    torch.manual_seed(0)
    layer = SpikingNeuronLayer(784, 100)
    bound = (6.0 / (784 + 100)) ** 0.5  # xavier-uniform
    assert layer.fc.weight.abs().max() <= bound
    assert layer.fc.weight.abs().max() > 0.9 * bound
    assert layer.decay_multiplier == 0.9 and layer.threshold == 2.0 and layer.penalty_threshold == 2.5
    assert [n for n, _ in layer.named_parameters()] == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("reset", RESETS)
def test_learnable_constants_match_reference_backend(rng, reset):
    kwargs = dict(reset=reset, learn_decay=True, learn_threshold=True, learn_penalty=True)
    fused = SpikingNeuronLayer(9, 6, 0.8, 0.7, 1.2, **kwargs).double()
    ref = SpikingNeuronLayer(9, 6, 0.8, 0.7, 1.2, backend="reference", **kwargs).double()
    ref.load_state_dict(fused.state_dict())
    x = torch.rand(40, 3, 9, generator=rng, dtype=torch.float64) * 2
    for layer in (fused, ref):
        states, outputs = layer(x)
        (states.square().sum() + outputs.sum()).backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), ref.named_parameters()):
        assert a.grad is not None, name
        assert_close(a.grad, b.grad, torch.float64, f"grad {name}", atol=1e-10, rtol=1e-10)
    assert fused.threshold.shape == (6,)


def test_layer_errors():
    with pytest.raises(ValueError, match='backend must be "fused" or "reference", got \'cuda\''):
        SpikingNeuronLayer(3, 4, backend="cuda")
    with pytest.raises(ValueError, match="SpikingNeuronLayer: n_inputs must be an int >= 1, got int 0"):
        SpikingNeuronLayer(0, 4)
    with pytest.raises(ValueError, match="n_inputs must be an int >= 1, got float 3.5"):
        SpikingNeuronLayer(3.5, 5)
    with pytest.raises(ValueError, match="n_inputs must be an int >= 1, got str '3'"):
        SpikingNeuronLayer("3", 5)
    with pytest.raises(TypeError, match="SpikingNeuronLayer: delay must be True or False, got str 'no'"):
        SpikingNeuronLayer(3, 4, delay="no")
    with pytest.raises(ValueError, match=r"expects x of shape \[T, \*batch, 3\], got \(5, 2, 4\)"):
        SpikingNeuronLayer(3, 4)(torch.zeros(5, 2, 4))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_compile_fullgraph(rng, dynamic):
    """torch.compile(fullgraph=True) traces the layer (fake kernels, autograd.Function) and gives the
    eager results and gradients."""
    torch._dynamo.reset()
    layer = SpikingNeuronLayer(12, 8, 0.9, 1.0, 1.5, learn_threshold=True, learn_decay=True).double()
    compiled = torch.compile(layer, fullgraph=True, dynamic=dynamic)
    for T, B in ((33, 5), (20, 3)):
        x = torch.rand(T, B, 12, generator=rng, dtype=torch.float64) * 1.5
        results = []
        for module in (layer, compiled):
            module.zero_grad()
            states, outputs = module(x)
            (states.sum() + outputs.square().sum()).backward()
            results.append([states, outputs] + [p.grad.clone() for p in module.parameters()])
        assert_fires_and_resets(results[0][1], delay=True)
        for a, b in zip(*results):
            assert_close(b, a, torch.float64, "compiled vs eager", atol=1e-10, rtol=1e-10)
