"""NIR export and import (snn_cuda.export_nir / import_nir): our models through NIR and back give
the same spikes; graphs written by snnTorch import and run to snnTorch's outputs, ours run in
snnTorch's importer to ours; CubaLIF graphs run in Norse's importer to ours; files written with
nir.write and read with nir.read; and every case NIR cannot hold is an error or, asked for, a
warned approximation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import snn_cuda
import snn_cuda.norse as fused_norse

from helpers import import_peer

nir = import_peer("nir")

T = 40


def reset_all():
    for cls in (snn_cuda.Leaky, snn_cuda.Synaptic, snn_cuda.RLeaky, snn_cuda.RSynaptic):
        cls.reset_hidden()


def run_steps(model, x):
    """The model called once per step (snnTorch's init_hidden pattern); spikes stacked."""
    reset_all()
    return torch.stack([model(x_t) for x_t in x])


def run_norse(model, x):
    """A model from Norse's from_nir, called per step with its state passed along."""
    state, out = None, []
    for x_t in x:
        z, state = model(x_t, state)
        out.append(z)
    return torch.stack(out)


def assert_through_file_and_fused(graph, x, spikes, path):
    """The graph written with nir.write and read back imports to the same spikes, per step and
    run over the whole sequence fused layer by layer."""
    nir.write(path, graph)
    from_file = snn_cuda.import_nir(path)
    assert torch.equal(run_steps(from_file, x), spikes)
    reset_all()
    assert torch.equal(snn_cuda.run_sequence(from_file, x), spikes)


def dense_net(g):
    return nn.Sequential(
        nn.Linear(6, 5),
        snn_cuda.Leaky(beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=0.5,
                       reset_mechanism="zero", init_hidden=True),
        nn.Sequential(nn.Linear(5, 4, bias=False),
                      snn_cuda.Synaptic(alpha=0.8, beta=torch.rand(4, generator=g) * 0.5 + 0.4,
                                        threshold=torch.rand(4, generator=g) * 0.3 + 0.2,
                                        reset_mechanism="zero", reset_delay=False, init_hidden=True)),
    )


def conv_net(g):
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        snn_cuda.Leaky(beta=0.85, threshold=0.4, reset_mechanism="zero", init_hidden=True),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
        snn_cuda.Leaky(beta=1.0, threshold=0.3, reset_mechanism="zero", init_hidden=True),  # -> IF
    )


def conv1d_net(g):
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1, bias=False),
        snn_cuda.Leaky(beta=0.8, threshold=0.3, reset_mechanism="zero", init_hidden=True),
        nn.Flatten(),
        nn.Linear(3 * 8, 4),
        snn_cuda.Synaptic(alpha=0.6, beta=0.7, threshold=0.4, reset_mechanism="zero",
                          reset_delay=False, init_hidden=True),
    )


KINDS = {
    dense_net: ["Input", "Affine", "LIF", "Linear", "CubaLIF", "Output"],
    conv_net: ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "IF", "Output"],
    conv1d_net: ["Input", "Conv1d", "LIF", "Flatten", "Affine", "CubaLIF", "Output"],
}


@pytest.mark.parametrize("make, shape", [(dense_net, (3, 6)), (conv_net, (2, 2, 8, 8)),
                                         (conv1d_net, (3, 2, 8))])
def test_ours_through_nir_and_back_is_exact(make, shape, tmp_path):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)  # the layers' initialisation
    with torch.no_grad():
        model = make(g)
    x = torch.randn((T, *shape), generator=g) * 2.0
    graph = snn_cuda.export_nir(model, x[0])
    assert [type(n).__name__ for n in graph.nodes.values()] == KINDS[make]
    spikes = run_steps(model, x)
    assert 0.02 < spikes.mean() < 0.9, "degenerate case"
    imported = snn_cuda.import_nir(graph)
    assert torch.equal(run_steps(imported, x), spikes)
    # The constants come back (to the float64 -> float32 rounding of tau = dt / (1 - beta)).
    neurons = [m for m in model.modules() if isinstance(m, (snn_cuda.Leaky, snn_cuda.Synaptic))]
    back = [m for m in imported.modules() if isinstance(m, (snn_cuda.Leaky, snn_cuda.Synaptic))]
    for a, b in zip(neurons, back):
        for name in ("beta", "threshold") + (("alpha",) if isinstance(a, snn_cuda.Synaptic) else ()):
            got, want = torch.broadcast_tensors(torch.as_tensor(getattr(b, name)), getattr(a, name))
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # Grouped into subgraph nodes (NIR allows any chain as one node): nested Sequentials.
    names = list(graph.nodes)
    nodes = {n: graph.nodes[n] for n in (names[0], names[-1])}
    inner_names = names[1:-1]
    half = len(inner_names) // 2
    for key, part in (("a", inner_names[:half]), ("b", inner_names[half:])):
        sub = {"input": nir.Input(input_type={"input": np.asarray(graph.nodes[part[0]].input_type["input"])}),
               **{n: graph.nodes[n] for n in part},
               "output": nir.Output(output_type={"output": np.asarray(graph.nodes[part[-1]].output_type["output"])})}
        chain_names = list(sub)
        nodes[key] = nir.NIRGraph(nodes=sub, edges=list(zip(chain_names[:-1], chain_names[1:])))
    nested = nir.NIRGraph(nodes=nodes, edges=[(names[0], "a"), ("a", "b"), ("b", names[-1])])
    imported_nested = snn_cuda.import_nir(nested)
    assert [type(m) for m in imported_nested] == [nn.Sequential, nn.Sequential]
    assert torch.equal(run_steps(imported_nested, x), spikes)
    assert_through_file_and_fused(graph, x, spikes, tmp_path / "model.nir")


def test_snntorch_graphs_import_and_ours_export_to_snntorch():
    snn = import_peer("snntorch")
    import snntorch.utils
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    x = torch.randn((T, 3, 6), generator=g) * 2.0
    # snnTorch's exporter needs per-neuron constants (a scalar's 0-dim node fails nir's type
    # inference) and a sample without the batch dim.
    theirs = nn.Sequential(
        nn.Linear(6, 5),
        snn.Leaky(beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=torch.full((5,), 0.5),
                  reset_mechanism="zero", init_hidden=True),
        nn.Linear(5, 4),
        snn.Synaptic(alpha=torch.full((4,), 0.8), beta=torch.rand(4, generator=g) * 0.5 + 0.4,
                     threshold=torch.full((4,), 0.3), reset_mechanism="zero", reset_delay=False,
                     init_hidden=True),
    )
    snntorch.utils.reset(theirs)
    expected = torch.stack([theirs(x_t) for x_t in x])
    assert expected.any()
    ours = snn_cuda.import_nir(export_to_nir(theirs, torch.randn(6)))
    assert torch.equal(run_steps(ours, x), expected)

    # Ours -> NIR -> snnTorch's importer (an fx GraphModule returning (output, state)); it takes
    # one threshold per layer.
    model = nn.Sequential(
        nn.Linear(6, 5),
        snn_cuda.Leaky(beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=0.5,
                       reset_mechanism="zero", init_hidden=True),
        nn.Linear(5, 4),
        snn_cuda.Synaptic(alpha=0.8, beta=torch.rand(4, generator=g) * 0.5 + 0.4, threshold=0.3,
                          reset_mechanism="zero", reset_delay=False, init_hidden=True))
    spikes = run_steps(model, x)
    back = import_from_nir(snn_cuda.export_nir(model, x[0]))
    out = [back(x_t) for x_t in x]
    assert torch.equal(torch.stack([o[0] if isinstance(o, tuple) else o for o in out]), spikes)


def test_norse_runs_our_cubalif_and_its_own_export_is_off_by_dt():
    norse = import_peer("norse.torch")
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    x = torch.randn((T, 3, 6), generator=g) * 2.0
    model = nn.Sequential(nn.Linear(6, 5), snn_cuda.Synaptic(
        alpha=0.8, beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=0.5,
        reset_mechanism="zero", reset_delay=False, init_hidden=True))
    spikes = run_steps(model, x)
    assert spikes.any()
    theirs = norse.from_nir(snn_cuda.export_nir(model, x[0]), dt=1e-4)
    assert torch.equal(run_norse(theirs, x), spikes)
    # Norse 1.1's own exporter writes tau = dt / tau_mem_inv (seconds * seconds), not 1 /
    # tau_mem_inv, so its files do not describe its neurons (its own round trip changes the model).
    # Pinned so that a fixed Norse shows up here: then its graphs can be tested against ours.
    cell = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0)))
    graph = norse.to_nir(norse.SequentialState(nn.Linear(6, 5), cell), torch.randn(1, 6))
    lif = next(n for n in graph.nodes.values() if isinstance(n, nir.LIF))
    assert np.allclose(np.asarray(lif.tau), 0.001 / 100.0)
    with pytest.raises(ValueError, match="tau must be finite and >= dt"):
        snn_cuda.import_nir(graph, dt=1e-3)


def test_export_refuses_what_nir_cannot_hold():
    x = torch.randn(2, 6)
    leaky = lambda **kw: nn.Sequential(nn.Linear(6, 5), snn_cuda.Leaky(beta=0.9, init_hidden=True, **kw))  # noqa: E731
    with pytest.raises(ValueError, match=r"layer 1 \(Leaky\) has no exact NIR form: "
                                         r"reset_mechanism='subtract'"):
        snn_cuda.export_nir(leaky(), x)
    with pytest.raises(ValueError, match="reset_mechanism='none' never resets"):
        snn_cuda.export_nir(leaky(reset_mechanism="none"), x)
    with pytest.warns(UserWarning, match=r"layer 1 \(Leaky\) exported approximately"):
        graph = snn_cuda.export_nir(leaky(), x, approximate=True)
    assert np.all(graph.nodes["1"].v_reset == 0)
    synaptic = nn.Sequential(snn_cuda.Synaptic(alpha=0.5, beta=0.9, reset_mechanism="zero",
                                               init_hidden=True))
    with pytest.raises(ValueError, match="reset_delay=True zeroes the whole next membrane"):
        snn_cuda.export_nir(synaptic, x)
    with pytest.raises(ValueError, match="graded_spikes_factor must be 1"):
        snn_cuda.export_nir(leaky(reset_mechanism="zero", graded_spikes_factor=2.0), x)
    with pytest.raises(ValueError, match=r"IFNode\) has no NIR form: SpikingJelly's neurons fire at h >= threshold"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.IFNode()), x)
    with pytest.raises(ValueError, match=r"LICell\) has no NIR form: Norse's LI feeds the input"):
        snn_cuda.export_nir(nn.Sequential(fused_norse.LICell()), x)
    with pytest.raises(ValueError, match=r"layer 0 \(RLeaky\) has no exact NIR form: RLeaky's "
                                         r"reset_mechanism='zero' with reset_delay=True"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.RLeaky(beta=0.9, linear_features=6,
                                                          reset_mechanism="zero")), x)
    with pytest.raises(ValueError, match=r"\(RSynaptic\) has no exact NIR form: reset_mechanism='subtract'"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.RSynaptic(alpha=0.5, beta=0.9, linear_features=6,
                                                             reset_delay=False)), x)
    with pytest.raises(ValueError, match="a threshold <= 0 with reset_delay=False"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.Leaky(beta=0.9, threshold=torch.tensor([0.5, 0.0]),
                                                         reset_mechanism="zero", reset_delay=False)),
                            torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"ALIF\) has no NIR form"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.ALIF()), x)
    with pytest.raises(TypeError, match=r"torch.nn.modules.activation.ReLU\) is not supported"):
        snn_cuda.export_nir(nn.Sequential(nn.ReLU()), x)
    with pytest.raises(TypeError, match="model must be a container of layers .* got the single "
                                        "layer Linear"):
        snn_cuda.export_nir(nn.Linear(6, 5), x)
    with pytest.raises(ValueError, match="a Flatten over the batch dim"):
        snn_cuda.export_nir(nn.Sequential(nn.Flatten(0)), x)
    with pytest.raises(ValueError, match=r"sample_input must be what the model takes, at least "
                                         r"\[batch, \*features\], got shape \(6,\)"):
        snn_cuda.export_nir(leaky(reset_mechanism="zero"), torch.randn(6))
    with pytest.raises(ValueError, match="dt must be a finite float > 0"):
        snn_cuda.export_nir(leaky(reset_mechanism="zero"), x, dt=0.0)


def test_import_refuses_what_it_cannot_run():
    shape = np.array([3])
    ones, zeros = np.ones(3), np.zeros(3)

    def chain(*nodes, edges=None):
        named = {"input": nir.Input(input_type={"input": shape}),
                 **{f"n{i}": n for i, n in enumerate(nodes)},
                 "output": nir.Output(output_type={"output": shape})}
        names = list(named)
        return nir.NIRGraph(nodes=named, edges=edges or list(zip(names[:-1], names[1:])),
                            type_check=False)

    lif = lambda **kw: nir.LIF(**{**dict(tau=ones * 1e-3, r=ones * 10, v_leak=zeros,  # noqa: E731
                                       v_threshold=ones, v_reset=zeros), **kw})
    with pytest.raises(ValueError, match=r"node 'n0' \(LIF\) has v_leak != 0"):
        snn_cuda.import_nir(chain(lif(v_leak=ones)))
    with pytest.raises(ValueError, match=r"has v_reset != 0"):
        snn_cuda.import_nir(chain(lif(v_reset=ones)))
    with pytest.raises(ValueError, match=r"node 'n0' \(LIF\): its input scale .* must be finite and > 0"):
        snn_cuda.import_nir(chain(lif(r=-ones)))  # would flip the spike condition
    with pytest.raises(ValueError, match=r"\(IF\): its input scale"):
        snn_cuda.import_nir(chain(nir.IF(r=zeros, v_threshold=ones)))
    with pytest.raises(ValueError, match=r"\(CubaLIF\): its input scale"):
        snn_cuda.import_nir(chain(nir.CubaLIF(tau_syn=ones, tau_mem=ones, r=ones, v_leak=zeros,
                                              v_threshold=ones, w_in=-ones)))
    with pytest.raises(ValueError, match="tau must be finite and >= dt = 0.01"):
        snn_cuda.import_nir(chain(lif()), dt=1e-2)
    with pytest.raises(ValueError, match=r"node 'n0' \(Threshold\) is not supported"):
        snn_cuda.import_nir(chain(nir.Threshold(threshold=ones)))
    with pytest.raises(ValueError, match=r"node 'n0' \(LI\) has v_leak != 0"):
        snn_cuda.import_nir(chain(nir.LI(tau=ones, r=ones, v_leak=ones)))
    branched = chain(lif(), lif(), edges=[("input", "n0"), ("input", "n1"), ("n0", "output"),
                                          ("n1", "output")])
    with pytest.raises(ValueError, match=r"only chain graphs .* node 'input' has 2 outgoing edges"):
        snn_cuda.import_nir(branched)
    looped = chain(lif(), lif(), edges=[("input", "n0"), ("n0", "n1"), ("n1", "n0"), ("n1", "output")])
    with pytest.raises(ValueError, match="node 'n0' has 2 incoming edges"):
        snn_cuda.import_nir(looped)  # a cycle of two neurons is no recurrent neuron
    twice = chain(lif(), nir.Linear(weight=np.eye(3)), nir.Scale(scale=ones),
                  edges=[("input", "n0"), ("n0", "n1"), ("n1", "n0"), ("n0", "n2"), ("n2", "n0"),
                         ("n0", "output")])
    with pytest.raises(ValueError, match="only chain graphs"):
        snn_cuda.import_nir(twice)
    readout = chain(nir.LI(tau=ones, r=ones, v_leak=zeros), nir.Linear(weight=np.eye(3)),
                    edges=[("input", "n0"), ("n0", "n1"), ("n1", "n0"), ("n0", "output")])
    with pytest.raises(ValueError, match="only chain graphs"):
        snn_cuda.import_nir(readout)  # an LI feeding itself is no recurrent spiking neuron
    with pytest.raises(ValueError, match=r"node 'n0': v_threshold must be > 0"):
        snn_cuda.import_nir(chain(lif(v_threshold=-ones)))
    bad_conv = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2, 4, 4])}),
               "n": nir.LIF(tau=np.full((2, 4, 4), 1e-3), r=np.full((2, 4, 4), 10.0),
                            v_leak=np.zeros((2, 4, 4)), v_threshold=np.ones((2, 4, 4))),
               "w": nir.Conv2d(input_shape=(4, 4), weight=np.zeros((2, 2, 3, 3)), stride=1,
                               padding=0, dilation=1, groups=1, bias=np.zeros(2)),
               "output": nir.Output(output_type={"output": np.array([2, 4, 4])})},
        edges=[("input", "n"), ("n", "w"), ("w", "n"), ("n", "output")], type_check=False)
    with pytest.raises(ValueError, match=r"recurrent weights 'w' \(Conv2d\): only a convolution"):
        snn_cuda.import_nir(bad_conv)
    inner = chain(nir.Threshold(threshold=ones))
    with pytest.raises(ValueError, match=r"node 'n0.n0' \(Threshold\) is not supported"):
        snn_cuda.import_nir(chain(inner))
    with pytest.raises(ValueError, match=r"subgraph node 'n0': only chain graphs"):
        snn_cuda.import_nir(chain(branched))
    # Node names that only differ in a dot keep both layers (module names cannot hold dots).
    two = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": shape}), "a.b": lif(),
                              "a_b": lif(), "output": nir.Output(output_type={"output": shape})},
                       edges=[("input", "a.b"), ("a.b", "a_b"), ("a_b", "output")], type_check=False)
    assert len(snn_cuda.import_nir(two)) == 2
    with pytest.raises(TypeError, match="graph must be a nir.NIRGraph or a file path"):
        snn_cuda.import_nir({"nodes": {}})
    # A LIF whose input scale r dt / tau is not 1 imports with the threshold divided by it: same
    # spikes as the unit-scale neuron fed the scaled input.
    scaled = snn_cuda.import_nir(chain(lif(r=ones * 30)))
    unit = snn_cuda.import_nir(chain(lif()))
    x = torch.rand(T, 2, 3) * 0.6
    assert torch.equal(run_steps(scaled, x), run_steps(unit, 3 * x))
    assert run_steps(unit, 3 * x).any()


def test_leaky_integrators_import_export_and_run_fused():
    """NIR's LI and CubaLI (non-spiking readouts) on fused neurons: against a plain Euler loop of
    NIR's equations in float64, through NIR and back, and fused over the sequence."""
    H = 4
    g = torch.Generator().manual_seed(5)
    tau, tau_syn = (np.linspace(2e-4, 9e-4, H), np.linspace(3e-4, 6e-4, H))
    r, w_in = np.linspace(1.0, 4.0, H), np.linspace(0.5, 2.0, H)
    shape = np.array([H])
    dt = 1e-4
    for node in (nir.LI(tau=tau, r=r, v_leak=np.zeros(H)),
                 nir.CubaLI(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=np.zeros(H), w_in=w_in)):
        graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": shape}), "li": node,
                                    "output": nir.Output(output_type={"output": shape})},
                             edges=[("input", "li"), ("li", "output")])
        model = snn_cuda.import_nir(graph, dtype=torch.float64)
        x = torch.randn((T, 3, H), generator=g, dtype=torch.float64)
        got = run_steps(model, x)
        v, i, expected = torch.zeros(3, H, dtype=torch.float64), torch.zeros(3, H, dtype=torch.float64), []
        for x_t in x:  # NIR's equations, forward Euler, the current first
            if isinstance(node, nir.CubaLI):
                i = i + dt / torch.as_tensor(tau_syn) * (-i + torch.as_tensor(w_in) * x_t)
                v = v + dt / torch.as_tensor(tau) * (-v + torch.as_tensor(r) * i)
            else:
                v = v + dt / torch.as_tensor(tau) * (-v + torch.as_tensor(r) * x_t)
            expected.append(v)
        torch.testing.assert_close(got, torch.stack(expected), rtol=1e-12, atol=1e-12)
        reset_all()
        assert torch.equal(snn_cuda.run_sequence(model, x), got)
        again = snn_cuda.import_nir(snn_cuda.export_nir(model, x[0]), dtype=torch.float64)
        assert type(again[0].neuron) is type(model[0].neuron)
        torch.testing.assert_close(run_steps(again, x), got, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("recurrent", [False, True], ids=["feed_forward", "recurrent"])
def test_spiking_nodes_run_nir_equations(recurrent):
    """LIF, IF and CubaLIF nodes (input scales not 1, per-neuron constants), alone or feeding
    themselves through Affine weights, imported here give the spikes of a plain forward-Euler loop
    of NIR's equations in which a recurrent edge carries the previous step's spikes (float64)."""
    H, dt = 5, 1e-4
    g = torch.Generator().manual_seed(12 if recurrent else 6)
    tau, tau_syn = np.linspace(2e-4, 9e-4, H), np.linspace(3e-4, 6e-4, H)
    r, w_in, thr = np.linspace(1.0, 4.0, H), np.linspace(0.5, 2.0, H), np.linspace(0.2, 0.6, H)
    W = torch.randn(H, H, generator=g, dtype=torch.float64) * 0.4
    b = torch.randn(H, generator=g, dtype=torch.float64) * 0.1
    zeros = np.zeros(H)
    nodes = [nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=thr, v_reset=zeros),
             nir.IF(r=r / dt / 3, v_threshold=thr, v_reset=zeros),
             nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=zeros, v_threshold=thr,
                         v_reset=zeros, w_in=w_in)]
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    shape = np.array([H])
    for node in nodes:
        named = {"input": nir.Input(input_type={"input": shape}), "n": node,
                 "output": nir.Output(output_type={"output": shape})}
        edges = [("input", "n"), ("n", "output")]
        if recurrent:
            named["w"] = nir.Affine(weight=W.numpy(), bias=b.numpy())
            edges += [("n", "w"), ("w", "n")]
        model = snn_cuda.import_nir(nir.NIRGraph(nodes=named, edges=edges), dtype=torch.float64)
        kinds = (snn_cuda.RLeaky, snn_cuda.RSynaptic) if recurrent else (snn_cuda.Leaky, snn_cuda.Synaptic)
        assert isinstance(model[0], kinds[isinstance(node, nir.CubaLIF)])
        x = torch.rand((T, 3, H), generator=g, dtype=torch.float64) * 0.6
        v = i = z = torch.zeros(3, H, dtype=torch.float64)
        expected = []
        for x_t in x:
            current = x_t + z @ W.T + b if recurrent else x_t  # the recurrent weights' output
            if isinstance(node, nir.CubaLIF):
                i = i + dt / t(tau_syn) * (-i + t(w_in) * current)
                v = v + dt / t(tau) * (-v + t(r) * i)
            elif isinstance(node, nir.LIF):
                v = v + dt / t(tau) * (-v + t(r) * current)
            else:
                v = v + dt * t(node.r) * current
            z = (v > t(thr)).double()
            v = torch.where(z > 0, 0.0, v)
            expected.append(z)
        expected = torch.stack(expected)
        assert 0.02 < expected.mean() < 0.9, type(node).__name__
        assert torch.equal(run_steps(model, x), expected), type(node).__name__


def test_fold_input_scale_lets_norse_run_our_lif():
    norse = import_peer("norse.torch")
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    x = torch.randn((T, 3, 6), generator=g) * 2.0
    model = nn.Sequential(
        nn.Linear(6, 5), snn_cuda.Leaky(beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=0.5,
                                        reset_mechanism="zero", init_hidden=True),
        nn.Linear(5, 4, bias=False), snn_cuda.Leaky(beta=1.0, threshold=0.4, reset_mechanism="zero",
                                                    init_hidden=True))
    spikes = run_steps(model, x)
    assert spikes.mean() > 0.05
    graph = snn_cuda.export_nir(model, x[0], fold_input_scale=True)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Affine", "LIF", "Linear",
                                                                "IF", "Output"]
    assert np.all(graph.nodes["1"].r == 1) and np.all(graph.nodes["3"].r == 1e4)
    # The same network: ours back (float64 to keep the folded products' rounding small) and
    # Norse's importer (dt as ours).
    assert torch.equal(run_steps(snn_cuda.import_nir(graph, dtype=torch.float64), x.double()).float(),
                       spikes)
    theirs = norse.from_nir(graph, dt=1e-4)
    assert torch.equal(run_norse(theirs, x), spikes)
    with pytest.raises(ValueError, match="must follow a weight layer"):
        snn_cuda.export_nir(nn.Sequential(snn_cuda.Leaky(beta=0.5, reset_mechanism="zero")),
                            x[0], fold_input_scale=True)


# ------------------------------------------------------------------------------------------------
# Recurrent neurons: NIR's form is snnTorch's, the neuron and its recurrent weights in a cycle
# (n -> w_rec -> n); the recurrent edge carries the previous step's spikes.

def recurrent_net(g):
    return nn.Sequential(
        nn.Linear(6, 5),
        snn_cuda.RLeaky(beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=0.5,
                        linear_features=5, reset_mechanism="zero", reset_delay=False,
                        init_hidden=True),
        nn.Linear(5, 4),
        snn_cuda.RSynaptic(alpha=0.7, beta=torch.rand(4, generator=g) * 0.5 + 0.4, threshold=0.4,
                           all_to_all=False, V=torch.linspace(-0.6, 0.6, 4), reset_mechanism="zero",
                           reset_delay=False, init_hidden=True),
        nn.Linear(4, 3, bias=False),
        snn_cuda.RLeaky(beta=1.0, threshold=0.3, all_to_all=False, V=-0.4, reset_mechanism="zero",
                        reset_delay=False, init_hidden=True),  # -> IF
    )


def recurrent_conv_net(g):
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        snn_cuda.RLeaky(beta=0.8, threshold=0.5, conv2d_channels=3, kernel_size=3,
                        reset_mechanism="zero", reset_delay=False, init_hidden=True),
        snn_cuda.RSynaptic(alpha=0.6, beta=0.7, threshold=0.4, all_to_all=False,
                           V=torch.rand(3, 4, 4, generator=g) - 0.5, reset_mechanism="zero",
                           reset_delay=False, init_hidden=True),  # one-to-one on [C, H, W]: Scale
    )


RECURRENT_KINDS = {
    recurrent_net: ["Input", "Affine", "LIF", "Affine", "Affine", "CubaLIF", "Linear", "Linear",
                    "IF", "Linear", "Output"],
    recurrent_conv_net: ["Input", "Conv2d", "LIF", "Conv2d", "CubaLIF", "Scale", "Output"],
}


def grouped(graph):
    """The graph with each recurrent neuron as a subgraph node (Input -> neuron <-> w_rec ->
    Output), how snnTorch's importer groups them and NIR allows."""
    nodes, edges = dict(graph.nodes), list(graph.edges)
    for name in [n for n in nodes if n.endswith(".lif")]:
        key = name[:-len(".lif")]
        neuron, weights = nodes.pop(name), nodes.pop(f"{key}.w_rec")
        shape = np.asarray(neuron.input_type["input"])
        nodes[key] = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": shape}), "lif": neuron, "w_rec": weights,
                   "output": nir.Output(output_type={"output": shape})},
            edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
        edges = [(key if a == name else a, key if b == name else b) for a, b in edges
                 if (a, b) not in ((name, f"{key}.w_rec"), (f"{key}.w_rec", name))]
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.mark.parametrize("make, shape", [(recurrent_net, (3, 6)), (recurrent_conv_net, (2, 2, 4, 4))])
def test_recurrent_neurons_through_nir_and_back_are_exact(make, shape, tmp_path):
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    with torch.no_grad():
        model = make(g)
    x = torch.randn((T, *shape), generator=g) * 1.5
    graph = snn_cuda.export_nir(model, x[0])
    assert [type(n).__name__ for n in graph.nodes.values()] == RECURRENT_KINDS[make]
    assert ("1.lif", "1.w_rec") in graph.edges and ("1.w_rec", "1.lif") in graph.edges
    spikes = run_steps(model, x)
    for k, module in enumerate(model):  # every recurrent layer fires, and not always
        if isinstance(module, snn_cuda.RLeaky):
            rate = run_steps(model[:k + 1], x).mean()
            assert 0.02 < rate < 0.9, f"degenerate case: layer {k} fires at {rate}"
    for source in (graph, grouped(graph)):
        imported = snn_cuda.import_nir(source)
        assert torch.equal(run_steps(imported, x), spikes)
    assert not any(isinstance(m, nn.Sequential) for m in imported), "a recurrent neuron's subgraph is the neuron"
    recurrent = [m for m in imported if isinstance(m, snn_cuda.RLeaky)]
    assert len(recurrent) == sum(isinstance(m, snn_cuda.RLeaky) for m in model)
    # A diagonal Linear or a Scale comes back as one-to-one V (fused over a whole sequence).
    assert [m.all_to_all for m in recurrent] == [m.all_to_all for m in model if isinstance(m, snn_cuda.RLeaky)]
    assert_through_file_and_fused(graph, x, spikes, tmp_path / "recurrent.nir")


def test_recurrent_snntorch_graphs_import_and_norse_runs_ours():
    snn = import_peer("snntorch")
    import snntorch.utils
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    norse = import_peer("norse.torch")
    g = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    x = torch.randn((T, 3, 6), generator=g) * 1.5
    # snnTorch's RLeaky with NIR's reset (zero, reset_delay=False), all-to-all and one-to-one:
    # its file imports here and runs to its outputs.
    for options in (dict(linear_features=5), dict(all_to_all=False, V=torch.linspace(-0.5, 0.5, 5))):
        theirs = nn.Sequential(nn.Linear(6, 5), snn.RLeaky(
            beta=torch.rand(5, generator=g) * 0.5 + 0.4, threshold=torch.full((5,), 0.5),
            reset_mechanism="zero", reset_delay=False, init_hidden=True, **options))
        snntorch.utils.reset(theirs)
        expected = torch.stack([theirs(x_t) for x_t in x])
        assert 0.02 < expected.mean() < 0.9
        ours = snn_cuda.import_nir(export_to_nir(theirs, torch.randn(6)))
        assert isinstance(ours[1], snn_cuda.RLeaky)
        assert torch.equal(run_steps(ours, x), expected)

        # snnTorch 1.0's importer runs a recurrent neuron as lif(W_rec(x_t + s_{t-1})): it wires the
        # subgraph's input into the recurrent weights, so its own round trip changes the model.
        # Pinned, so that a fixed snnTorch shows up here (then ours -> snnTorch can be tested).
        back = import_from_nir(export_to_nir(theirs, torch.randn(6)))
        state, out = None, []
        for x_t in x:
            spikes, state = back(x_t, state)
            out.append(spikes)
        lif = snn.Leaky(beta=theirs[1].beta.clamp(0, 1), threshold=0.5, reset_mechanism="zero",
                        reset_delay=False)
        mem, s, wrong = lif.reset_mem(), torch.zeros(3, 5), []
        recurrent = (theirs[1].recurrent if options.get("all_to_all", True)
                     else nn.Linear(5, 5, bias=False))
        if not options.get("all_to_all", True):
            with torch.no_grad():
                recurrent.weight.copy_(torch.diag(theirs[1].V))
        for x_t in x:
            s, mem = lif(recurrent(theirs[0](x_t) + s), mem)
            wrong.append(s)
        assert torch.equal(torch.stack(out), torch.stack(wrong))
        assert not torch.equal(torch.stack(out), expected)

    # Ours -> NIR -> Norse 1.1 (its graph executor feeds the recurrent weights' output of the step
    # before; it starts that output at 0, where ours is W 0 + bias, so the recurrent layers here
    # have no bias): the same spikes in float64; LIF needs fold_input_scale (Norse ignores r).
    model = nn.Sequential(
        nn.Linear(6, 5), snn_cuda.RLeaky(beta=0.8, threshold=0.5, linear_features=5,
                                         reset_mechanism="zero", reset_delay=False, init_hidden=True),
        nn.Linear(5, 4), snn_cuda.RSynaptic(alpha=0.7, beta=0.8, threshold=0.5, linear_features=4,
                                            reset_mechanism="zero", reset_delay=False,
                                            init_hidden=True),
        nn.Linear(4, 3), snn_cuda.RSynaptic(alpha=0.6, beta=0.7, threshold=0.8, all_to_all=False,
                                            V=torch.linspace(-0.8, 0.3, 3), reset_mechanism="zero",
                                            reset_delay=False, init_hidden=True)).double()
    with torch.no_grad():
        model[1].recurrent.bias.zero_()
        model[3].recurrent.bias.zero_()
    xd = x.double()
    spikes = run_steps(model, xd)
    for k in (2, 4, 6):
        rate = run_steps(model[:k], xd).mean()
        assert 0.02 < rate < 0.9, f"degenerate case: layer {k - 1} fires at {rate}"
    theirs = norse.from_nir(snn_cuda.export_nir(model, xd[0], fold_input_scale=True), dt=1e-4).double()
    assert torch.equal(run_norse(theirs, xd), spikes)


# ------------------------------------------------------------------------------------------------
# Models with a forward of their own: the wiring is read from a traced call.

class TutorialNet(nn.Module):
    """snnTorch's tutorial network: its own forward loops over the time steps and passes the
    membranes explicitly (init_hidden=False); with ``per_step_input`` it takes a sequence and
    feeds x[step], else it feeds the same x at every step."""

    def __init__(self, num_steps=T, per_step_input=False):
        super().__init__()
        self.num_steps, self.per_step_input = num_steps, per_step_input
        self.fc1 = nn.Linear(6, 5)
        self.lif1 = snn_cuda.Leaky(beta=0.8, threshold=0.5, reset_mechanism="zero")
        self.fc2 = nn.Linear(5, 4)
        self.lif2 = snn_cuda.Synaptic(alpha=0.7, beta=0.8, threshold=0.4, reset_mechanism="zero",
                                      reset_delay=False)

    def forward(self, x):
        mem1 = self.lif1.reset_mem()
        syn2, mem2 = self.lif2.reset_mem()
        spikes = []
        for step in range(self.num_steps):
            cur1 = self.fc1(x[step] if self.per_step_input else x)
            spk1, mem1 = self.lif1(cur1, mem1)
            spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
            spikes.append(spk2)
        return torch.stack(spikes)


@pytest.mark.parametrize("per_step_input", [False, True], ids=["same_input", "sequence"])
def test_models_with_their_own_forward_export(per_step_input, tmp_path):
    g = torch.Generator().manual_seed(14)
    torch.manual_seed(14)
    model = TutorialNet(per_step_input=per_step_input)
    x = torch.randn((T, 3, 6), generator=g) * 2.0
    sample = x if per_step_input else x[0]
    expected = model(sample)  # with autograd: the states it leaves are not graph leaves
    assert 0.02 < expected.mean() < 0.9
    mem_before = model.lif1.mem
    graph = snn_cuda.export_nir(model, sample)
    assert model.lif1.mem is mem_before, "export touched the model's state"
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Affine", "LIF", "Affine",
                                                                "CubaLIF", "Output"]
    assert list(graph.nodes) == ["input", "fc1", "lif1", "fc2", "lif2", "output"]
    steps = x if per_step_input else x[0].expand(T, *x[0].shape)
    nir.write(tmp_path / "tutorial.nir", graph)
    assert torch.equal(run_steps(snn_cuda.import_nir(tmp_path / "tutorial.nir"), steps), expected)


class Branching(nn.Module):
    def __init__(self, between=None, heads=1):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.lif = snn_cuda.Leaky(beta=0.8, reset_mechanism="zero", init_hidden=True)
        self.heads = nn.ModuleList(nn.Linear(5, 2) for _ in range(heads))
        self.between = between

    def forward(self, x):
        spk = self.lif(self.fc(x))
        if self.between is not None:
            spk = self.between(spk)
        outs = [head(spk) for head in self.heads]
        return outs[0] if len(outs) == 1 else outs


def test_traced_export_refuses_wiring_nir_cannot_read():
    x = torch.randn(2, 6)
    graph = snn_cuda.export_nir(Branching(), x)  # a forward of one's own, module to module
    assert list(graph.nodes) == ["input", "fc", "lif", "heads_0", "output"]
    with pytest.raises(ValueError, match=r"layer heads_0 \(Linear\) takes a tensor that is neither "
                                         r"the model's input .* nor another layer's output"):
        snn_cuda.export_nir(Branching(between=torch.relu), x)
    with pytest.raises(ValueError, match=r"the model's output must be one layer's output; the "
                                         r"outputs of \['heads_0', 'heads_1'\]"):
        snn_cuda.export_nir(Branching(heads=2), x)

    class Rewired(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

        def forward(self, x):
            return self.b(self.a(self.b(x)))  # b takes the input, then a's output

    with pytest.raises(ValueError, match="layer b takes its input from 'input' at one call and "
                                         "from 'a' at another"):
        snn_cuda.export_nir(Rewired(), x)

    class Returns(TutorialNet):
        def __init__(self, what):
            super().__init__(num_steps=4)
            self.what = what

        def forward(self, x):
            mem1, (syn2, mem2) = self.lif1.reset_mem(), self.lif2.reset_mem()
            spk1_rec, spk2_rec, mem2_rec = [], [], []
            for _ in range(self.num_steps):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
                spk1_rec.append(spk1), spk2_rec.append(spk2), mem2_rec.append(mem2)
            if self.what == "spikes and membranes":  # snnTorch's tutorials: fine
                return torch.stack(spk2_rec), torch.stack(mem2_rec)
            if self.what == "last spikes":
                return spk2
            return {"membranes": torch.stack(mem2_rec), "count": torch.stack(spk2_rec).sum(0),
                    "hidden spikes": torch.stack(spk1_rec)}[self.what]

    for what in ("spikes and membranes", "last spikes"):
        assert list(snn_cuda.export_nir(Returns(what), x).nodes)[-2] == "lif2"
    for what in ("membranes", "count"):
        with pytest.raises(ValueError, match="the model returns something other than a layer's output"):
            snn_cuda.export_nir(Returns(what), x)
    with pytest.raises(ValueError, match="the model returns the output of layer lif1, which feeds "
                                         "other layers; the graph's output would be layer lif2's"):
        snn_cuda.export_nir(Returns("hidden spikes"), x)

    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x[:, :4])  # a slice of the input, no step of it

    with pytest.raises(ValueError, match=r"layer fc \(Linear\) takes a tensor that is neither"):
        snn_cuda.export_nir(Sliced(), x)


def test_norse_graphs_import_with_its_convention():
    """Norse 1.1's to_nir writes tau = dt / tau_mem_inv and IAF's r = 1 without dt:
    convention='norse' reads that, and Norse's LIFBox / IAF / LIBox graphs run here to Norse's own
    outputs (spikes equal; the leaky integrator's membrane to rounding)."""
    norse = import_peer("norse.torch")
    g = torch.Generator().manual_seed(15)
    torch.manual_seed(15)
    f64 = dict(dtype=torch.float64)  # Norse's parameters are tuples, not moved by .to()
    model = norse.SequentialState(
        nn.Linear(6, 5),
        norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.linspace(100.0, 300.0, 5, **f64),
                                                v_th=torch.full((5,), 0.3, **f64),
                                                v_leak=torch.zeros(5, **f64))),
        nn.Linear(5, 4),
        norse.IAFCell(norse.IAFParameters(v_th=torch.full((4,), 0.5, **f64))),
        nn.Linear(4, 3),
        norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.full((3,), 150.0, **f64),
                                              v_leak=torch.zeros(3, **f64))),
    ).double()
    x = torch.randn((T, 3, 6), generator=g, dtype=torch.float64) * 3.0
    graph = norse.to_nir(model, x[0, :1], dt=1e-3)
    assert [type(graph.nodes[str(k)]).__name__ for k in range(6)] == ["Affine", "LIF", "Affine",
                                                                      "IF", "Affine", "LI"]
    ours = snn_cuda.import_nir(graph, dt=1e-3, convention="norse", dtype=torch.float64)
    for k in (2, 4):  # the spiking layers: equal spikes, and they fire
        expected = run_norse(norse.SequentialState(*list(model)[:k]), x)
        assert 0.02 < expected.mean() < 0.9, f"degenerate case: layer {k - 1}"
        assert torch.equal(run_steps(ours[:k], x), expected)
    expected = run_norse(model, x)
    torch.testing.assert_close(run_steps(ours, x), expected, rtol=1e-12, atol=1e-12)
    # Read as NIR says, the same file is other neurons (tau = 1e-5 s < dt): refused.
    with pytest.raises(ValueError, match="convention='norse'"):
        snn_cuda.import_nir(graph, dt=1e-3)
    cuba = norse.to_nir(norse.SequentialState(nn.Linear(6, 5), norse.LIFCell()), torch.randn(1, 6))
    with pytest.raises(ValueError, match="Norse writes its LIFCell as CubaLIF, but that cell feeds "
                                         "the input into the current after the step"):
        snn_cuda.import_nir(cuba, dt=1e-3, convention="norse")
    with pytest.raises(ValueError, match="convention must be one of"):
        snn_cuda.import_nir(graph, convention="snntorch")
