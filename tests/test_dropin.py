"""Drop-in for real: each fused class runs inside its original's own documented usage, unchanged,
and computes the original's numbers. The originals (installed snnTorch 1.0, SpikingJelly 2.0, the
seed's layer as printed in the seed notebook) are the oracles.

Written for this project: the usage patterns are the peers' documented ones (tutorial loops,
`init_hidden` Sequentials, reset_net/detach_net/set_step_mode); no peer test code is copied.
"""

import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snn_cuda

from helpers import assert_spikes_and_resets, import_peer, rel_err



snn = import_peer("snntorch")
sutils = import_peer("snntorch.utils")
ssur = import_peer("snntorch.surrogate")
sj_neuron = import_peer("spikingjelly.activation_based.neuron")
sj_layer = import_peer("spikingjelly.activation_based.layer")
sj_functional = import_peer("spikingjelly.activation_based.functional")
sj_base = import_peer("spikingjelly.activation_based.base")
sj_sur = import_peer("spikingjelly.activation_based.surrogate")

F64 = torch.float64


def assert_grads_close(ours, theirs, tol, what):
    for name, (a, b) in enumerate(zip(ours, theirs)):
        assert a is not None and b is not None, f"{what}: gradient {name} missing"
        assert a.shape == b.shape, f"{what}: gradient {name} shape"
        assert b.abs().max() > 0, f"{what}: gradient {name} is zero, the comparison is vacuous"
        err = rel_err(a, b)
        assert err <= tol, f"{what}: gradient {name} relative error {err:.3e} > {tol}"


# ================================================================================================
# snnTorch


def tutorial_loop(lif, cur):
    """snnTorch's tutorial: mem = lif.init_leaky(); spk, mem = lif(cur[step], mem) per step."""
    mem = lif.init_leaky()
    spk_rec, mem_rec = [], []
    for step in range(cur.shape[0]):
        spk, mem = lif(cur[step], mem)
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@pytest.mark.parametrize("spike_grad", ["atan", "fast_sigmoid"])
def test_snntorch_tutorial_loop_unchanged(rng, dtype, reset_mechanism, spike_grad):
    T, B, H = 120, 4, 12
    beta = (torch.rand(H, generator=rng) * 0.3 + 0.65)
    threshold = (torch.rand(H, generator=rng) * 0.5 + 0.8)
    # Without a reset the membrane sums the input up to x / (1 - beta): a small mean keeps the
    # neurons from firing at every step.
    offset = 0.04 if reset_mechanism == "none" else 0.35
    cur = (torch.randn(T, B, H, generator=rng) * 0.6 + offset).to(dtype)
    up = torch.randn(2, T, B, H, generator=rng).to(dtype)  # float32-exact: see test_peers.py
    grad_fn = ssur.atan(alpha=2.0) if spike_grad == "atan" else ssur.fast_sigmoid(slope=10.0)
    results = []
    for cls in (snn.Leaky, snn_cuda.Leaky):
        lif = cls(beta=beta.clone(), threshold=threshold.clone(), spike_grad=grad_fn,
                  learn_beta=True, learn_threshold=True, reset_mechanism=reset_mechanism)
        lif = lif.to(dtype)
        x = cur.clone().requires_grad_()
        spk, mem = tutorial_loop(lif, x)
        loss = (spk * up[0]).sum() + (mem * up[1]).sum()
        results.append((spk, mem, torch.autograd.grad(loss, [x, lif.beta, lif.threshold])))
    (p_spk, p_mem, p_grads), (spk, mem, grads) = results
    assert torch.equal(spk, p_spk.to(dtype)) and torch.equal(mem, p_mem)
    assert_spikes_and_resets(spk, min_rate=0.01)
    assert_grads_close(grads, p_grads, 1e-10 if dtype == F64 else 1e-3, "tutorial loop")


def test_one_step_is_never_read_as_a_sequence(rng):
    """The silent wrong answer of 0.1: an init_hidden Sequential called once per step with a
    [batch, features] input. Each call is one time step, as in snnTorch."""
    x = torch.randn(16, 10, generator=rng) + 0.8  # one step: batch 16, 10 neurons
    peer = snn.Leaky(beta=0.9, init_hidden=True)
    ours = snn_cuda.Leaky(beta=0.9, init_hidden=True)
    for _ in range(3):
        assert torch.equal(ours(x), peer(x))
        assert ours.mem.shape == (16, 10) and torch.equal(ours.mem, peer.mem)
    # The whole-sequence form is a named mode and checks its input.
    with pytest.raises(ValueError, match="a multi-step input must be a whole sequence"):
        snn_cuda.Leaky(beta=0.9, step_mode="m")(torch.randn(10))
    with pytest.raises(ValueError, match="step_mode must be 's'"):
        snn_cuda.Leaky(beta=0.9, step_mode="sequence")


def make_snntorch_net(cls, n_in, n_hidden, n_out, seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), cls(beta=0.9, init_hidden=True, spike_grad=ssur.atan()),
        nn.Linear(n_hidden, n_out), cls(beta=0.8, init_hidden=True, output=True),
    )


def snntorch_train(net, data, steps=3):
    """snnTorch's init_hidden training loop: utils.reset(net) per batch, the net called per step."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.5)
    losses = []
    for x, target in data[:steps]:
        sutils.reset(net)
        mem_rec = []
        for step in range(x.shape[0]):
            spk, mem = net(x[step])
            mem_rec.append(mem)
        loss = F.cross_entropy(torch.stack(mem_rec).sum(0), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def test_snntorch_init_hidden_sequential_trains_identically(rng):
    # float32: snnTorch's spikes are float32 whatever the net's dtype, so a float64 net of its
    # own fails at the second Linear. Both sides run the same float32 operations except the
    # order of the sums in the parameter gradients.
    T, B, n_in = 25, 8, 20
    data = [(torch.rand(T, B, n_in, generator=rng) * 1.5,
             torch.randint(0, 5, (B,), generator=rng)) for _ in range(3)]
    peer, ours = (make_snntorch_net(cls, n_in, 30, 5, seed=7) for cls in (snn.Leaky, snn_cuda.Leaky))
    peer_losses, our_losses = snntorch_train(peer, data), snntorch_train(ours, data)
    assert rel_err(our_losses, peer_losses) <= 1e-5
    for (name, a), (_, b) in zip(ours.named_parameters(), peer.named_parameters()):
        assert rel_err(a, b) <= 1e-5, name
    # ...and our neurons are found and reset by snnTorch's utils.reset.
    assert ours[1].mem.abs().max() > 0
    sutils.reset(ours)
    assert not ours[1].mem.any()


def test_snntorch_utilities_find_our_neurons():
    ours = snn_cuda.Leaky(beta=0.9, init_hidden=True)
    assert isinstance(ours, snn.Leaky) and ours in snn.SpikingNeuron.instances
    ours(torch.ones(3, 4) * 2)
    assert ours.mem.abs().sum() > 0
    sutils.reset(nn.Sequential(nn.Identity(), ours))
    assert torch.equal(ours.mem, torch.zeros(3, 4)) and not ours.mem.requires_grad
    # snnTorch's class-wide helpers, called on either class, reach ours.
    x = torch.ones(3, 4, requires_grad=True) * 2
    ours(x)
    snn.Leaky.detach_hidden()
    assert not ours.mem.requires_grad
    snn_cuda.Leaky.reset_hidden()
    assert torch.equal(ours.mem, torch.zeros(3, 4))


def test_snntorch_truncated_bptt_with_detach_hidden(rng):
    """Truncated BPTT as snnTorch documents it: detach_hidden() every k steps. Our membrane is a
    fresh tensor (not a view), so snnTorch's in-place detach works on it."""
    T, B, H, k = 40, 3, 6, 10
    x = torch.randn(T, B, H, generator=rng, dtype=F64) + 0.5
    grads = []
    for cls in (snn.Leaky, snn_cuda.Leaky):
        lif = cls(beta=torch.tensor(0.85, dtype=F64), learn_beta=True, init_hidden=True)
        total = torch.zeros((), dtype=F64)
        for start in range(0, T, k):
            loss = sum(lif(x[t]).sum() for t in range(start, start + k)) + lif.mem.sum()
            total += torch.autograd.grad(loss, lif.beta)[0]
            snn.Leaky.detach_hidden()
        grads.append(total)
    assert rel_err(grads[1], grads[0]) <= 1e-10 and grads[0] != 0


@pytest.mark.parametrize("mode", ["s", "m"])
def test_snntorch_graded_spikes_and_surrogate_disable(rng, mode):
    T, B, H = 60, 3, 7
    x = torch.randn(T, B, H, generator=rng, dtype=F64) * 0.6 + 0.4
    # snnTorch rounds the gradient reaching its (float32) spikes to float32: upstream values and
    # factors whose products are float32-exact keep its float64 gradients float64-exact.
    upstream = torch.randint(-8, 9, (T, B, H), generator=rng).to(F64) / 8
    factors = torch.tensor([0.5, 0.75, 1.25, 1.5, 2.0], dtype=F64)[torch.randint(0, 5, (H,), generator=rng)]
    options = [dict(graded_spikes_factor=2.5), dict(graded_spikes_factor=factors,
                                                    learn_graded_spikes_factor=True),
               dict(surrogate_disable=True, learn_beta=True)]
    for kwargs in options:
        results = []
        for cls in (snn.Leaky, snn_cuda.Leaky):
            extra = {} if cls is snn.Leaky else {"step_mode": mode}
            lif = cls(beta=torch.tensor(0.9, dtype=F64), **kwargs, **extra)
            xx = x.clone().requires_grad_()
            if cls is snn_cuda.Leaky and mode == "m":
                spk, mem = lif(xx)
            else:
                spk, mem = tutorial_loop(lif, xx)
            params = [p for p in (lif.beta, lif.graded_spikes_factor) if p.requires_grad]
            loss = (spk * upstream).sum() + (mem * 0.5).sum()
            results.append((spk, mem, torch.autograd.grad(loss, [xx] + params)))
        (p_spk, p_mem, p_grads), (spk, mem, grads) = results
        assert torch.equal(spk, p_spk.to(F64)) and torch.equal(mem, p_mem), kwargs
        assert_grads_close(grads, p_grads, 1e-10, str(kwargs))


@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_snntorch_reset_delay_false(rng, reset_mechanism, mode):
    """reset_delay=False: a spike resets the membrane in its own step (the op's "snntorch_now":
    one fused call per step, or per sequence in step_mode="m"), also with surrogate_disable."""
    T, B, H = 80, 3, 9
    offset = 0.04 if reset_mechanism == "none" else 0.5
    x = torch.randn(T, B, H, generator=rng, dtype=F64) * 0.6 + offset
    upstream = torch.randint(-8, 9, (2, T, B, H), generator=rng).to(F64) / 8
    for disable in (False, True):
        results = []
        for cls in (snn.Leaky, snn_cuda.Leaky):
            extra = {} if cls is snn.Leaky else {"step_mode": mode}
            lif = cls(beta=torch.full((H,), 0.85, dtype=F64), threshold=torch.tensor(1.0, dtype=F64),
                      learn_beta=True, learn_threshold=True, reset_mechanism=reset_mechanism,
                      reset_delay=False, surrogate_disable=disable, **extra)
            xx = x.clone().requires_grad_()
            spk, mem = lif(xx) if (cls is snn_cuda.Leaky and mode == "m") else tutorial_loop(lif, xx)
            loss = (spk * upstream[0]).sum() + (mem * upstream[1]).sum()
            # With surrogate_disable only the subtractive reset lets the threshold into the graph.
            wanted = [xx, lif.beta] + ([lif.threshold] if not disable or reset_mechanism == "subtract" else [])
            results.append((spk, mem, torch.autograd.grad(loss, wanted), lif.mem))
        (p_spk, p_mem, p_grads, p_last), (spk, mem, grads, last) = results
        assert torch.equal(spk, p_spk.to(F64)) and torch.equal(mem, p_mem), disable
        assert torch.equal(last, p_last)
        assert_spikes_and_resets(spk, min_rate=0.01, min_resets=5)
        # snnTorch's spikes are float32, so the gradient reaching them is rounded to float32; the
        # immediate reset sends -threshold * grad(mem) there, which is not float32-exact: its
        # float64 gradients are float32-accurate in this mode (seen: up to ~8e-8 for the input, and
        # ~2.3e-6 for the threshold, a sum of T x batch such terms).
        assert_grads_close(grads, p_grads, 1e-5, f"reset_delay=False, surrogate_disable={disable}")
    if mode == "m":  # the whole sequence is one fused call, forward and backward
        lif = snn_cuda.Leaky(beta=0.85, reset_mechanism=reset_mechanism, reset_delay=False,
                             step_mode="m")
        xx = x.clone().requires_grad_()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            spk, mem = lif(xx)
            (spk.sum() + mem.sum()).backward()
        names = [event.name for event in prof.events()]
        assert names.count("snn_cuda::lif_fwd") == 1 and names.count("snn_cuda::lif_bwd") == 1


def test_snntorch_reset_mechanism_is_settable_and_loaded(rng):
    x = torch.randn(50, 2, 5, generator=rng, dtype=F64) + 0.6
    ours = snn_cuda.Leaky(beta=0.9)
    ours.reset_mechanism = "zero"
    assert ours.reset_mechanism == "zero" and int(ours.reset_mechanism_val) == 1
    peer = snn.Leaky(beta=0.9, reset_mechanism="zero")
    assert torch.equal(tutorial_loop(ours, x)[1], tutorial_loop(peer, x)[1])
    # A state_dict's reset_mechanism_val decides the mechanism of the module it is loaded into.
    fresh = snn_cuda.Leaky(beta=0.9)
    fresh.load_state_dict(peer.state_dict())
    assert fresh.reset_mechanism == "zero"
    ours.reset_mechanism = "none"
    assert torch.equal(tutorial_loop(ours, x)[1], tutorial_loop(snn.Leaky(beta=0.9, reset_mechanism="none"), x)[1])
    with pytest.raises(ValueError, match="reset_mechanism must be set to either"):
        ours.reset_mechanism = "hard"


def test_leaky_rejects_bad_constants():
    with pytest.raises(TypeError, match="beta must be a float or a tensor, got str"):
        snn_cuda.Leaky(beta="0.9")
    with pytest.raises(TypeError, match="threshold must be a real tensor"):
        snn_cuda.Leaky(beta=0.9, threshold=torch.tensor(1 + 1j))


def test_peers_are_not_imported_with_snn_cuda():
    code = ("import sys, snn_cuda; bad = [m for m in ('snntorch', 'spikingjelly') if m in sys.modules];"
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_modules_pickle_and_copy_with_their_peer_base(tmp_path):
    leaky = snn_cuda.Leaky(beta=torch.full((4,), 0.9), learn_beta=True)
    node = snn_cuda.LIFNode(tau=3.0, step_mode="m")
    for module, peer in ((leaky, snn.Leaky), (node, sj_base.MemoryModule)):
        back = pickle.loads(pickle.dumps(module))
        assert isinstance(back, type(module).__mro__[1]) and isinstance(back, peer)
        path = tmp_path / "m.pt"
        torch.save(module, path)
        loaded = torch.load(path, weights_only=False)
        assert type(loaded) is type(module)


# ================================================================================================
# SpikingJelly


def make_sj_net(node_cls, seed, **node_kwargs):
    torch.manual_seed(seed)
    net = nn.Sequential(
        sj_layer.Linear(12, 24), node_cls(tau=2.0, surrogate_function=sj_sur.ATan(), **node_kwargs),
        sj_layer.Linear(24, 6), node_cls(tau=3.0, v_reset=None, detach_reset=True, **node_kwargs),
    ).double()
    with torch.no_grad():  # strong enough weights that both layers fire
        net[0].weight.mul_(3)
        net[2].weight.mul_(6).abs_()
    return net


def test_spikingjelly_single_step_net_with_reset_net(rng):
    T, N = 30, 5
    x = torch.rand(T, N, 12, generator=rng, dtype=F64) * 2
    results = []
    for cls in (sj_neuron.LIFNode, snn_cuda.LIFNode):
        net = make_sj_net(cls, seed=3)
        for _ in range(2):  # reset_net between samples, as documented
            sj_functional.reset_net(net)
            out = torch.stack([net(x[t]) for t in range(T)])
        loss = (out * torch.arange(6, dtype=F64)).sum() + net[1].v.sum()
        results.append((out, net[1].v, torch.autograd.grad(loss, list(net.parameters()))))
    (p_out, p_v, p_grads), (out, v, grads) = results
    assert torch.equal(out, p_out) and torch.equal(v, p_v)
    assert out.mean() > 0.02
    assert_grads_close(grads, p_grads, 1e-10, "single-step net")


def test_spikingjelly_memory_protocol():
    node = snn_cuda.LIFNode(v_reset=-0.2)
    assert isinstance(node, sj_base.MemoryModule) and isinstance(node, sj_base.StepModule)
    assert dict(node.named_memories()) == {"v": -0.2}
    assert list(sj_base.named_memories(nn.Sequential(node))) == [("0.v", -0.2)]
    node(torch.ones(2, 3) * 3)
    assert isinstance(node.v, torch.Tensor) and "v" in dir(node)
    sj_functional.reset_net(nn.Sequential(node))
    assert node.v == -0.2 and node.get_reset_value("v") == -0.2
    sj_functional.set_step_mode(nn.Sequential(node), "m")
    assert node.step_mode == "m"
    with pytest.raises(ValueError, match="step_mode must be one of"):
        node.step_mode = "x"


def test_spikingjelly_multi_step_with_set_step_mode_and_seq_to_ann(rng):
    T, N = 40, 4
    x = torch.rand(T, N, 12, generator=rng, dtype=F64) * 2
    outs = []
    for cls in (sj_neuron.LIFNode, snn_cuda.LIFNode):
        net = make_sj_net(cls, seed=5)
        sj_functional.set_step_mode(net, "m")
        a = net(x)
        sj_functional.reset_net(net)
        torch.manual_seed(5)
        container = nn.Sequential(
            sj_layer.SeqToANNContainer(nn.Linear(12, 24)), cls(tau=2.0, step_mode="m"),
        ).double()
        b = container(x)
        outs.append((a, b))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][0].mean() > 0.02


def test_spikingjelly_truncated_bptt_with_detach_net(rng):
    """Chunks of a long sequence, backward per chunk, detach_net in between (the state carries on,
    the graph does not): the same losses, gradients and weights as SpikingJelly's."""
    T, N, chunk = 60, 4, 15
    x = torch.rand(T, N, 12, generator=rng, dtype=F64) * 2
    target = torch.randint(0, 6, (N,), generator=rng)
    results = []
    for cls in (sj_neuron.LIFNode, snn_cuda.LIFNode):
        net = make_sj_net(cls, seed=9, step_mode="m")
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        losses = []
        for start in range(0, T, chunk):
            out = net(x[start:start + chunk])
            loss = F.cross_entropy(out.mean(0) + net[3].v, target)
            optimizer.zero_grad()
            loss.backward()  # a second chunk without detach_net would fail here
            optimizer.step()
            sj_functional.detach_net(net)
            losses.append(loss.detach())
        results.append((torch.stack(losses), [p.detach().clone() for p in net.parameters()]))
    assert rel_err(results[1][0], results[0][0]) <= 1e-12
    for a, b in zip(results[1][1], results[0][1]):
        assert rel_err(a, b) <= 1e-12


def test_spikingjelly_store_v_seq_single_step(rng):
    x = torch.rand(20, 3, 4, generator=rng, dtype=F64) * 2
    peer = sj_neuron.LIFNode(store_v_seq=True)
    ours = snn_cuda.LIFNode(store_v_seq=True)
    for t in range(20):
        assert torch.equal(ours(x[t]), peer(x[t]))
    assert ours.v_seq.shape == (20, 3, 4) and torch.equal(ours.v_seq, peer.v_seq)
    ours.store_v_seq = False
    assert ours.v_seq is None


# ================================================================================================
# The seed's layer and network (as printed in the seed notebook; device plumbing kept)


class SpikingNeuronLayerRNN(nn.Module):
    """The seed's layer, verbatim but for comments."""

    def __init__(self, device, n_inputs=28 * 28, n_hidden=100, decay_multiplier=0.9, threshold=2.0,
                 penalty_threshold=2.5):
        super(SpikingNeuronLayerRNN, self).__init__()
        self.device = device
        self.n_inputs = n_inputs
        self.n_hidden = n_hidden
        self.decay_multiplier = decay_multiplier
        self.threshold = threshold
        self.penalty_threshold = penalty_threshold
        self.fc = nn.Linear(n_inputs, n_hidden)
        self.init_parameters()
        self.reset_state()
        self.to(self.device)

    def init_parameters(self):
        for param in self.parameters():
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param)

    def reset_state(self):
        self.prev_inner = torch.zeros([self.n_hidden]).to(self.device)
        self.prev_outer = torch.zeros([self.n_hidden]).to(self.device)

    def forward(self, x):
        if self.prev_inner.dim() == 1:
            batch_size = x.shape[0]
            self.prev_inner = torch.stack(batch_size * [self.prev_inner])
            self.prev_outer = torch.stack(batch_size * [self.prev_outer])
        input_excitation = self.fc(x)
        inner_excitation = input_excitation + self.prev_inner * self.decay_multiplier
        outer_excitation = F.relu(inner_excitation - self.threshold)
        do_penalize_gate = (outer_excitation > 0).float()
        inner_excitation = inner_excitation - (self.penalty_threshold / self.threshold * inner_excitation) * do_penalize_gate
        delayed_return_state = self.prev_inner
        delayed_return_output = self.prev_outer
        self.prev_inner = inner_excitation
        self.prev_outer = outer_excitation
        return delayed_return_state, delayed_return_output


class SeedSpikingNet(nn.Module):
    """The seed's SpikingNet (its input/output conversion layers inlined), with the layer class
    as a parameter: the notebook's code with one name swapped."""

    def __init__(self, device, n_time_steps, begin_eval, layer_cls, n_inputs=28 * 28):
        super().__init__()
        self.n_time_steps = n_time_steps
        self.begin_eval = begin_eval
        self.layer1 = layer_cls(device, n_inputs=n_inputs, n_hidden=100, decay_multiplier=0.9,
                                threshold=1.0, penalty_threshold=1.5)
        self.layer2 = layer_cls(device, n_inputs=100, n_hidden=10, decay_multiplier=0.9,
                                threshold=1.0, penalty_threshold=1.5)

    def forward_through_time(self, x):
        self.layer1.reset_state()
        self.layer2.reset_state()
        out, all_states = [], []
        for _ in range(self.n_time_steps):
            x_flat = x.view(x.size(0), -1)
            xi = torch.rand(x_flat.shape) * x_flat
            layer1_state, layer1_output = self.layer1(xi)
            layer2_state, layer2_output = self.layer2(layer1_output)
            all_states.append((layer1_state, layer1_output, layer2_state, layer2_output))
            out.append(layer2_state)
        out = torch.stack(out[self.begin_eval:]).mean(0)
        return out, all_states

    def forward(self, x):
        out, _ = self.forward_through_time(x)
        return F.log_softmax(out, dim=-1)


def test_seed_network_with_fused_layer_trains_identically(rng):
    images = torch.rand(3, 16, 1, 8, 8, generator=rng) * 1.2
    targets = torch.randint(0, 10, (3, 16), generator=rng)
    results = []
    for cls in (SpikingNeuronLayerRNN, snn_cuda.SpikingNeuronLayerRNN):
        torch.manual_seed(11)
        net = SeedSpikingNet("cpu", n_time_steps=40, begin_eval=0, layer_cls=cls, n_inputs=64)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.5)
        losses = []
        for x, target in zip(images, targets):
            loss = F.nll_loss(net(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        _, states = net.forward_through_time(images[0])
        results.append((torch.stack(losses), [p.detach().clone() for p in net.parameters()], states))
    (p_losses, p_params, p_states), (losses, params, states) = results
    # float32, T = 40 steps, the seed's own float32 arithmetic on both sides.
    assert rel_err(losses, p_losses) <= 1e-5
    for a, b in zip(params, p_params):
        assert rel_err(a, b) <= 1e-5
    spikes = torch.stack([s[1] for s in p_states])
    assert_spikes_and_resets(spikes > 0, min_rate=0.01)
    for t, (ours, theirs) in enumerate(zip(states, p_states)):
        for a, b in zip(ours, theirs):
            assert rel_err(a, b) <= 1e-4, f"step {t}"


def test_seed_layer_step_exactness_and_multi_step(rng):
    T, B = 30, 5
    x = torch.rand(T, B, 7, generator=rng, dtype=F64) * 1.5
    torch.manual_seed(4)
    seed_layer = SpikingNeuronLayerRNN("cpu", 7, 9, 0.9, 1.0, 1.5).double()
    ours = snn_cuda.SpikingNeuronLayerRNN("cpu", 7, 9, 0.9, 1.0, 1.5, dtype=F64)
    ours.fc.load_state_dict(seed_layer.fc.state_dict())
    seed_layer.reset_state()
    seed_layer.prev_inner, seed_layer.prev_outer = seed_layer.prev_inner.double(), seed_layer.prev_outer.double()
    expected = [seed_layer(x[t]) for t in range(T)]
    got = [ours(x[t]) for t in range(T)]
    for (a, b), (c, d) in zip(got, expected):
        assert torch.equal(a, c) and torch.equal(b, d)
    # Multi-step: the same returns, stacked, continuing from the kept state across calls.
    multi = snn_cuda.SpikingNeuronLayerRNN("cpu", 7, 9, 0.9, 1.0, 1.5, step_mode="m", dtype=F64)
    multi.fc = ours.fc
    s1, o1 = multi(x[:12])
    s2, o2 = multi(x[12:])
    assert torch.equal(torch.cat([s1, s2]), torch.stack([s for s, _ in expected]))
    assert torch.equal(torch.cat([o1, o2]), torch.stack([o for _, o in expected]))
    with pytest.raises(ValueError, match=r"expects x of shape \[batch, 7\]"):
        ours(x)


# ================================================================================================
# convert and run_sequence


def test_convert_keeps_parameters_buffers_keys_and_hooks(rng):
    net = make_snntorch_net(snn.Leaky, 10, 16, 4, seed=1)
    net[1].beta = nn.Parameter(torch.tensor(0.9, dtype=F64))
    keys, params = list(net.state_dict()), list(net.parameters())
    calls = []
    net[3].register_forward_hook(lambda m, i, o: calls.append(1))
    snn_cuda.convert(net)
    assert isinstance(net[1], snn_cuda.Leaky) and isinstance(net[3], snn_cuda.Leaky)
    assert list(net.state_dict()) == keys
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert net[3].output and net[1].init_hidden
    net(torch.rand(2, 10))
    assert calls == [1]

    sj = make_sj_net(sj_neuron.LIFNode, seed=2)
    converted = snn_cuda.convert(sj)
    assert isinstance(converted[1], snn_cuda.LIFNode) and converted[3].v_reset is None
    assert converted[3].detach_reset

    class MyLeaky(snn.Leaky):
        pass

    with pytest.raises(TypeError, match="MyLeaky subclasses Leaky"):
        snn_cuda.convert(nn.Sequential(MyLeaky(beta=0.9)))
    kept = snn_cuda.convert(nn.Sequential(MyLeaky(beta=0.9)), strict=False)
    assert type(kept[0]) is MyLeaky


def test_convert_seed_network(rng):
    torch.manual_seed(3)
    net = SeedSpikingNet("cpu", n_time_steps=20, begin_eval=0, layer_cls=SpikingNeuronLayerRNN,
                         n_inputs=64)
    x = torch.rand(8, 1, 8, 8, generator=rng)
    torch.manual_seed(0)
    expected = net(x)
    weight = net.layer1.fc.weight
    snn_cuda.convert(net)
    assert isinstance(net.layer1, snn_cuda.SpikingNeuronLayerRNN) and net.layer1.fc.weight is weight
    torch.manual_seed(0)
    assert rel_err(net(x), expected) <= 1e-6


def test_run_sequence_snntorch_net_matches_the_loop(rng):
    T, B = 25, 6
    x = torch.rand(T, B, 20, generator=rng, dtype=F64) * 4
    loop_net = snn_cuda.convert(make_snntorch_net(snn.Leaky, 20, 40, 5, seed=6)).double()
    fast_net = snn_cuda.convert(make_snntorch_net(snn.Leaky, 20, 40, 5, seed=6)).double()
    sutils.reset(loop_net)
    steps = [loop_net(x[t]) for t in range(T)]
    spk, mem = torch.stack([s for s, _ in steps]), torch.stack([m for _, m in steps])
    hidden_mem = loop_net[1].mem
    sutils.reset(fast_net)  # (snnTorch's reset is class-wide: it zeroes loop_net's state too)
    f_spk, f_mem = snn_cuda.run_sequence(fast_net, x)
    assert torch.equal(f_spk, spk) and rel_err(f_mem, mem) <= 1e-12
    assert_spikes_and_resets(spk, min_rate=0.01, min_resets=5)
    assert rel_err(fast_net[1].mem, hidden_mem) <= 1e-12 and hidden_mem.abs().max() > 0
    g = torch.autograd.grad(mem.sum(), list(loop_net.parameters()))
    f_g = torch.autograd.grad(f_mem.sum(), list(fast_net.parameters()))
    assert_grads_close(f_g, g, 1e-11, "run_sequence")


def test_run_sequence_spikingjelly_conv_net_matches_the_loop(rng):
    T, N = 8, 4
    x = torch.rand(T, N, 1, 10, 10, generator=rng, dtype=F64) * 2

    def make():
        torch.manual_seed(8)
        net = nn.Sequential(
            sj_layer.Conv2d(1, 4, 3, padding=1), sj_layer.BatchNorm2d(4), snn_cuda.LIFNode(),
            sj_layer.MaxPool2d(2), sj_layer.Flatten(), sj_layer.Linear(100, 10),
            snn_cuda.LIFNode(v_reset=None),
        ).double()
        with torch.no_grad():
            net[5].weight.mul_(4).abs_()
        return net

    loop_net, fast_net = make(), make()
    out = torch.stack([loop_net(x[t]) for t in range(T)])  # BatchNorm in training mode: per step
    fast = snn_cuda.run_sequence(fast_net, x)
    assert torch.equal(fast, out) and out.mean() > 0.02
    assert rel_err(fast_net[1].running_mean, loop_net[1].running_mean) <= 1e-12
    g = torch.autograd.grad(out.sum() + loop_net[2].v.sum(), list(loop_net.parameters()))
    f_g = torch.autograd.grad(fast.sum() + fast_net[2].v.sum(), list(fast_net.parameters()))
    assert_grads_close(f_g, g, 1e-10, "conv net")


def test_run_sequence_refuses_what_it_cannot_run_exactly():
    x = torch.rand(5, 2, 4)
    with pytest.raises(TypeError, match="call snn_cuda.convert"):
        snn_cuda.run_sequence(nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True)), x)
    with pytest.raises(TypeError, match="different order"):
        snn_cuda.run_sequence(nn.Sequential(nn.Dropout(0.5), snn_cuda.Leaky(beta=0.9, init_hidden=True)), x)
    dropped = nn.Sequential(nn.Dropout(0.5), snn_cuda.Leaky(beta=0.9, init_hidden=True)).eval()
    assert snn_cuda.run_sequence(dropped, x).shape == x.shape
    with pytest.raises(TypeError, match="receives a tuple"):
        snn_cuda.run_sequence(nn.Sequential(snn_cuda.Leaky(beta=0.9), nn.Linear(4, 4)), x)

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="container with its own forward"):
        snn_cuda.run_sequence(Recurrent(), x)
    assert snn_cuda.run_sequence(Recurrent(), x, per_step=(Recurrent,)).shape == x.shape
    with pytest.raises(TypeError, match="not known to be stateless"):
        snn_cuda.run_sequence(nn.Sequential(nn.Flatten(0)), x)
    with pytest.raises(ValueError, match=r"x_seq must be a sequence \[T, batch, ...\]"):
        snn_cuda.run_sequence(nn.Identity(), torch.rand(4))


def test_per_step_modules_compile_fullgraph(rng):
    """The per-step forms (the T = 1 op, the modules' state updates) trace without graph breaks and
    give the eager numbers."""
    torch._dynamo.reset()
    x = torch.randn(6, 2, 8, generator=rng) + 0.6
    lif = snn_cuda.Leaky(beta=torch.full((8,), 0.9), learn_beta=True)
    node = snn_cuda.LIFNode()
    seed_layer = snn_cuda.SpikingNeuronLayerRNN(None, 8, 4, 0.9, 1.0, 1.5)

    def leaky_loop(inp):
        mem = lif.init_leaky()
        outs = []
        for step in inp.unbind(0):
            spk, mem = lif(step, mem)
            outs.append(spk + mem)
        return torch.stack(outs).sum()

    def node_loop(inp):
        node.reset()
        return torch.stack([node(step) for step in inp.unbind(0)]).sum() + node.v.sum()

    def seed_loop(inp):
        seed_layer.reset_state()
        return torch.stack([seed_layer(step)[0] for step in inp.unbind(0)]).sum()

    for fn in (leaky_loop, node_loop, seed_loop):
        xx = x.clone().requires_grad_()
        eager = fn(xx)
        (g_eager,) = torch.autograd.grad(eager, xx)
        compiled = torch.compile(fn, fullgraph=True)(xx)
        (g_compiled,) = torch.autograd.grad(compiled, xx)
        assert torch.allclose(compiled, eager) and torch.allclose(g_compiled, g_eager), fn.__name__
        assert g_eager.abs().max() > 0


def test_state_from_inference_mode_does_not_break_training(rng):
    """A module evaluated under torch.inference_mode() keeps an inference tensor as its state; the
    next training call uses it through a copy instead of failing ("Inference tensors cannot be
    saved for backward"), as snnTorch and SpikingJelly modules do."""
    x = torch.rand(4, 3, 5, generator=rng) * 2
    makers = [
        lambda: snn_cuda.Leaky(beta=torch.full((5,), 0.9), learn_beta=True, init_hidden=True),
        lambda: snn_cuda.Leaky(beta=0.9, step_mode="m", learn_threshold=True),
        lambda: snn_cuda.LIFNode(learn_tau=True),
        lambda: snn_cuda.LIFNode(step_mode="m", learn_tau=True),
    ]
    for make in makers:
        m = make()
        call = (lambda inp: m(inp[0])) if m.step_mode == "s" else m
        with torch.inference_mode():
            call(x)
        out = call(x)
        out = out[0] if isinstance(out, tuple) else out
        (out.sum() * 0 + sum(p.sum() for p in m.parameters()) + (out * x.mean()).sum()).backward()
        assert all(p.grad is not None for p in m.parameters())
    layer = snn_cuda.SpikingNeuronLayerRNN(None, 5, 4, 0.9, 1.0, 1.5)
    with torch.inference_mode():
        layer(x[0])
    layer(x[1])
    _, outputs = layer(x[2])
    (outputs.sum() + layer.prev_inner.sum()).backward()
    assert layer.fc.weight.grad is not None
