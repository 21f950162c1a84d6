"""Every public entry point and every registered operator, called with every wrong kind of argument:
each call raises an error that names the argument (never a silent coercion, never a crash deep in
torch). And the values rule for neuron constants (see snn_cuda.ops.check_value)."""

import math

import pytest
import torch

import snn_cuda
from snn_cuda import reference

NAN, INF = float("nan"), float("inf")
ERRORS = (TypeError, ValueError, RuntimeError)


def x():
    return torch.randn(4, 2, 3)


def sparse():
    return torch.ones(3).to_sparse()


# Wrong values for each kind of argument.
NOT_A_TENSOR = [[[0.1, 0.2, 0.3]] * 4, "x", None, 3.0]
# (A meta input is not wrong: with float constants the whole call runs on meta tensors.)
BAD_TENSOR = [torch.zeros(4, 2, 3, dtype=torch.int32), torch.zeros(4, 2, 3, dtype=torch.complex64),
              torch.zeros(4, 2, 3, dtype=torch.bool), torch.zeros(4, 2, 3).to_sparse()]
BAD_CONSTANT = ["0.9", True, 1 + 2j, NAN, INF, -INF, None, [0.9], torch.ones(5), torch.ones(2, 3, 4),
                torch.ones(3, dtype=torch.complex64), torch.ones(3, dtype=torch.bool), sparse(),
                torch.ones(3, device="meta")]
BAD_FLAG = ["no", None, 1, 0.0, torch.tensor(True)]
BAD_STATE = ["x", [0.0] * 3, torch.zeros(5), torch.zeros(2, 3, dtype=torch.complex64),
             torch.zeros(2, 3).to_sparse(), torch.zeros(2, 3, device="meta")]


def table():
    """(entry point, call(**kwargs), valid kwargs, {argument: wrong values})."""
    rec = dict(excitation=x(), decay_multiplier=0.9, threshold=1.0, penalty_threshold=1.5,
               reset="proportional", delay=False, initial=None)
    rec_bad = {
        "excitation": NOT_A_TENSOR + BAD_TENSOR + [torch.zeros(5)],
        "decay_multiplier": BAD_CONSTANT,
        "threshold": BAD_CONSTANT + [0.0, -1.0],
        "penalty_threshold": BAD_CONSTANT,
        "reset": ["hard", None, 1],
        "delay": BAD_FLAG,
        "initial": BAD_STATE,
    }
    lif = dict(input=x(), decay=0.9, threshold=1.0, convention="snntorch", reset="subtract",
               reset_value=0.0, detach_reset=None, surrogate=None, initial=None, return_state=False)
    lif_bad = {
        "input": NOT_A_TENSOR + BAD_TENSOR,
        "decay": BAD_CONSTANT,
        "threshold": BAD_CONSTANT,
        "reset_value": BAD_CONSTANT,
        "convention": ["snn", None],
        "reset": ["zero", None],
        "detach_reset": ["no", 1, 0.0],  # None: the convention's default
        "surrogate": ["nope", 3, lambda z: z],
        "initial": BAD_STATE,
        "return_state": BAD_FLAG,
    }
    sj = dict(lif, convention="spikingjelly", decay=2.0, decay_input=True)
    sj_bad = {"decay": [0.0, -2.0, -INF], "decay_input": BAD_FLAG}
    step = dict(lif, input=torch.randn(2, 3))
    step_bad = dict(lif_bad, input=NOT_A_TENSOR + [t[0] for t in BAD_TENSOR])
    return [
        ("spiking_recurrence", lambda **k: snn_cuda.spiking_recurrence(**k), rec, rec_bad),
        ("reference.spiking_recurrence", lambda **k: reference.spiking_recurrence(**k), rec, rec_bad),
        ("lif", lambda **k: snn_cuda.lif(**k), lif, lif_bad),
        ("lif spikingjelly", lambda **k: snn_cuda.lif(**k), sj, sj_bad),
        ("reference.lif", lambda **k: reference.lif(**k), lif,
         {k: v for k, v in lif_bad.items() if k != "return_state"}),
        ("lif_step", lambda **k: snn_cuda.lif_step(**k), step, step_bad),
    ]


def cases():
    for entry, call, valid, bad in table():
        for name, values in bad.items():
            for i, value in enumerate(values):
                yield pytest.param(call, valid, name, value, id=f"{entry}-{name}-{i}")


def describe(value):
    if isinstance(value, torch.Tensor):
        return f"tensor {value.dtype} {value.layout} {value.device} {tuple(value.shape)}"
    return repr(value)


@pytest.mark.parametrize("call, valid, name, value", list(cases()))
def test_functions_name_the_bad_argument(call, valid, name, value):
    call(**valid)  # the valid call works
    kwargs = dict(valid, **{name: value})
    with pytest.raises(ERRORS) as error:
        call(**kwargs)
    assert name in str(error.value), f"{name}={describe(value)}: {error.value}"


def module_table():
    return [
        ("SpikingNeuronLayer", lambda **k: snn_cuda.SpikingNeuronLayer(**k),
         dict(n_inputs=3, n_hidden=4, decay_multiplier=0.9, threshold=1.0, penalty_threshold=1.5,
              reset="proportional", delay=True, backend="fused"),
         {"n_inputs": [3.5, "3", 0, True, None], "n_hidden": [4.0, -1, None],
          "decay_multiplier": BAD_CONSTANT[:7], "threshold": BAD_CONSTANT[:7] + [0.0, -1.0],
          "penalty_threshold": BAD_CONSTANT[:7], "reset": ["hard"], "delay": BAD_FLAG,
          "backend": ["cuda", None]}),
        ("SpikingNeuronLayerRNN", lambda **k: snn_cuda.SpikingNeuronLayerRNN(**k),
         dict(device=None, n_inputs=3, n_hidden=4, decay_multiplier=0.9, threshold=1.0,
              penalty_threshold=1.5),
         {"n_inputs": [3.5, "3", 0], "n_hidden": [4.0, 0], "decay_multiplier": [NAN, INF],
          "threshold": [NAN, 0.0, torch.tensor([1.0, 0.0, 1.0, 1.0])],
          "penalty_threshold": [NAN, torch.tensor(INF)], "step_mode": ["x", None]}),
        ("Leaky", lambda **k: snn_cuda.Leaky(**k), dict(beta=0.9, threshold=1.0),
         {"beta": ["0.9", True, None, NAN, torch.tensor([0.9, NAN]), torch.tensor(1j)],
          "threshold": ["1", INF, torch.tensor(NAN)],
          "graded_spikes_factor": ["1", NAN, torch.tensor(INF)],
          "reset_mechanism": ["hard", None], "step_mode": ["x"]}),
        ("LIFNode", lambda **k: snn_cuda.LIFNode(**k), dict(tau=2.0, v_threshold=1.0),
         {"tau": [0.5, NAN, "2", True, torch.tensor([2.0, 0.0]), torch.tensor(NAN)],
          "v_threshold": ["1", NAN, torch.tensor(INF)], "v_reset": ["0", NAN, INF],
          "decay_input": BAD_FLAG, "detach_reset": BAD_FLAG, "store_v_seq": BAD_FLAG,
          "step_mode": ["x", None], "surrogate_function": ["sigmoid?", 3]}),
    ]


def module_cases():
    for entry, make, valid, bad in module_table():
        for name, values in bad.items():
            for i, value in enumerate(values):
                yield pytest.param(make, valid, name, value, id=f"{entry}-{name}-{i}")


@pytest.mark.parametrize("make, valid, name, value", list(module_cases()))
def test_modules_name_the_bad_argument(make, valid, name, value):
    make(**valid)
    with pytest.raises(ERRORS) as error:
        make(**dict(valid, **{name: value}))
    message = str(error.value)
    # The seed's and snnTorch's own wording for these two is kept.
    aliases = {"reset_mechanism": "reset_mechanism", "surrogate_function": "surrogate"}
    assert aliases.get(name, name) in message, f"{name}={describe(value)}: {message}"


# ------------------------------------------------------------------------------------------------
# The registered operators check every tensor argument themselves (they are public).


def op_table():
    x32 = torch.randn(4, 2, 3)
    p = torch.ones(3)
    gates = torch.zeros(1, 6, dtype=torch.uint8)
    rec_fwd = (torch.ops.snn_cuda.spiking_recurrence_fwd,
               dict(excitation=x32, decay=p, threshold=p, penalty=p, reset="proportional",
                    delay=False, initial=None))
    rec_bwd = (torch.ops.snn_cuda.spiking_recurrence_bwd,
               dict(grad_states=x32, grad_outputs=x32, gates=gates, states=x32, outputs=x32,
                    decay=p, threshold=p, penalty=p, shape=[4, 2, 3], dtype=torch.float32,
                    reset="proportional", delay=False, need_decay=True, need_threshold=True,
                    need_penalty=True, initial=None, need_initial=False))
    lif_fwd = (torch.ops.snn_cuda.lif_fwd,
               dict(input=x32, initial=None, decay=p, threshold=p, reset_value=p,
                    convention="snntorch", reset="subtract", decay_input=True))
    lif_bwd = (torch.ops.snn_cuda.lif_bwd,
               dict(grad_spikes=x32, grad_membrane=x32, grad_state=None, membrane=x32,
                    initial=None, input=x32, decay=p, threshold=p, reset_value=p,
                    convention="snntorch", reset="subtract", decay_input=True, detach_reset=True,
                    surrogate="atan", alpha=2.0, need_decay=True, need_threshold=True))
    # Each op checks the other tensors against one (its "input"): that one is wrong in kinds of its
    # own (a dtype no kernel takes, too few dims); the others also in shape, dtype and device.
    wrong_anchor = {
        "dtype": lambda t: t.int() if t.dtype != torch.uint8 else t.float(),
        "rank": lambda t: t.reshape(-1),
    }
    wrong_tensors = {
        "shape": lambda t: t.new_zeros(t.shape[0] + 1, *t.shape[1:]),
        "dtype": lambda t: t.double() if t.dtype != torch.uint8 else t.int(),
        "meta": lambda t: t.to("meta"),
    }
    for (op, valid), op_name, anchor in zip(
        (rec_fwd, rec_bwd, lif_fwd, lif_bwd),
        ("spiking_recurrence_fwd", "spiking_recurrence_bwd", "lif_fwd", "lif_bwd"),
        ("excitation", "gates", "input", "membrane"),
    ):
        for name, value in valid.items():
            if isinstance(value, torch.Tensor):
                for kind, make in (wrong_anchor if name == anchor else wrong_tensors).items():
                    yield pytest.param(op, valid, name, make(value), id=f"{op_name}-{name}-{kind}")


@pytest.mark.parametrize("op, valid, name, value", list(op_table()))
def test_registered_ops_name_the_bad_tensor(op, valid, name, value):
    op(**valid)
    with pytest.raises(RuntimeError) as error:
        op(**dict(valid, **{name: value}))
    assert name in str(error.value), f"{name}={describe(value)}: {error.value}"


# ------------------------------------------------------------------------------------------------
# The values rule.


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_float_constants_are_refused_on_every_call(bad):
    for name in ("decay_multiplier", "threshold", "penalty_threshold"):
        with pytest.raises(ValueError, match=f"spiking_recurrence: {name} must be finite"):
            snn_cuda.spiking_recurrence(x(), **{name: bad})
    for name in ("decay", "threshold", "reset_value"):
        kwargs = dict(decay=0.9, threshold=1.0, reset_value=0.0)
        kwargs[name] = bad
        with pytest.raises(ValueError, match=f"lif: {name} must be finite"):
            snn_cuda.lif(x(), **kwargs)
        with pytest.raises(ValueError, match=f"lif_step: {name} must be finite"):
            snn_cuda.lif_step(x()[0], **kwargs)


def test_tensor_values_are_checked_only_when_asked(monkeypatch):
    """Default: tensor constants are not read (on CUDA that would wait for the GPU), and the op
    gives what the arithmetic gives. Under validate_parameters(): a clear error."""
    zero_threshold = torch.tensor([1.0, 0.0, 1.0])
    nan_decay = torch.tensor([0.9, NAN, 0.9])
    states, _ = snn_cuda.spiking_recurrence(x(), 0.9, zero_threshold, delay=False)
    assert not torch.isfinite(states[:, :, 1]).all() and torch.isfinite(states[:, :, 0]).all()
    spikes, mem = snn_cuda.lif(x(), nan_decay)
    assert torch.isnan(mem[1:, :, 1]).all() and not torch.isnan(mem[:, :, 0]).any()

    import snn_cuda.ops as ops

    def no_reads(value, *args, **kwargs):
        assert not isinstance(value, torch.Tensor), "a tensor's values were read by default"

    with monkeypatch.context() as m:
        m.setattr(ops, "check_value", no_reads)
        snn_cuda.spiking_recurrence(x(), nan_decay, zero_threshold, torch.ones(3))
        snn_cuda.lif(x(), nan_decay, zero_threshold, reset_value=torch.zeros(3))
        snn_cuda.lif_step(x()[0], nan_decay, zero_threshold)

    assert not snn_cuda.is_validating_parameters()
    with snn_cuda.validate_parameters():
        assert snn_cuda.is_validating_parameters()
        with pytest.raises(ValueError, match=r"spiking_recurrence: threshold must be finite and > 0 "
                                             r"\(reset=\"proportional\" divides by the threshold\), got "
                                             r"a tensor in which 1 of 3 values are not \(the first: 0.0\)"):
            snn_cuda.spiking_recurrence(x(), 0.9, zero_threshold)
        snn_cuda.spiking_recurrence(x(), 0.9, zero_threshold, reset="subtract")  # no division
        with pytest.raises(ValueError, match="spiking_recurrence: decay_multiplier must be finite"):
            snn_cuda.spiking_recurrence(x(), nan_decay)
        with pytest.raises(ValueError, match="lif: decay must be finite, got a tensor"):
            snn_cuda.lif(x(), nan_decay)
        with pytest.raises(ValueError, match="lif_step: decay must be finite and > 0"):
            snn_cuda.lif_step(x()[0], torch.tensor([2.0, -1.0, 2.0]), convention="spikingjelly")
        with pytest.raises(ValueError, match="lif: reset_value must be finite"):
            snn_cuda.lif(x(), 0.9, reset="hard", reset_value=torch.tensor(INF))
    assert not snn_cuda.is_validating_parameters()
    with pytest.raises(TypeError, match="set_validate_parameters: mode must be True or False"):
        snn_cuda.set_validate_parameters("yes")


def test_validation_catches_a_threshold_an_optimizer_pushed_through_zero():
    layer = snn_cuda.SpikingNeuronLayer(3, 4, threshold=0.05, learn_threshold=True)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer.threshold.grad = torch.full((4,), 1.0)  # one step moves every threshold to -0.95
    optimizer.step()
    with pytest.raises(ValueError, match="SpikingNeuronLayer: threshold must be finite and > 0"):
        layer.check_constants()
    with snn_cuda.validate_parameters(), pytest.raises(ValueError, match="threshold must be finite and > 0"):
        layer(torch.rand(5, 2, 3))
    layer(torch.rand(5, 2, 3))  # unchecked by default: runs


@pytest.mark.parametrize("make, name, bad", [
    (lambda: snn_cuda.SpikingNeuronLayer(3, 4), "threshold", torch.zeros(4)),
    (lambda: snn_cuda.SpikingNeuronLayer(3, 4, learn_decay=True), "decay_multiplier",
     torch.nn.Parameter(torch.full((4,), NAN))),
    (lambda: snn_cuda.SpikingNeuronLayerRNN(None, 3, 4), "penalty_threshold", INF),
    (lambda: snn_cuda.Leaky(0.9), "beta", torch.tensor(NAN)),
    (lambda: snn_cuda.Leaky(0.9, learn_threshold=True), "threshold", NAN),
    (lambda: snn_cuda.LIFNode(), "tau", torch.tensor(-2.0)),
    (lambda: snn_cuda.LIFNode(), "v_reset", NAN),
])
def test_assigning_a_bad_constant_to_a_module_raises(make, name, bad):
    module = make()
    before = getattr(module, name)
    with pytest.raises(ValueError, match=f"{type(module).__name__}: {name} must be finite"):
        setattr(module, name, bad)
    assert getattr(module, name) is before


def test_loading_a_bad_state_dict_raises_and_leaves_the_module_as_it_was():
    layer = snn_cuda.SpikingNeuronLayer(3, 4, learn_threshold=True)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["threshold"] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    before = layer.threshold.detach().clone()
    with pytest.raises(ValueError, match="threshold in the loaded state_dict must be finite and > 0"):
        layer.load_state_dict(state)
    assert torch.equal(layer.threshold.detach(), before)
    leaky = snn_cuda.Leaky(torch.ones(3) * 0.9)
    state = dict(leaky.state_dict(), beta=torch.tensor([0.9, NAN, 0.9]))
    with pytest.raises(ValueError, match="Leaky: beta in the loaded state_dict must be finite"):
        leaky.load_state_dict(state)
    # A model of several layers: the prefix finds the layer's own entry.
    net = snn_cuda.SpikingNet(n_inputs=6, n_hidden=5, n_classes=3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    names = [k for k in state if k.endswith("threshold")]
    if names:
        state[names[0]] = torch.full_like(state[names[0]], NAN)
        with pytest.raises(ValueError, match="in the loaded state_dict must be finite"):
            net.load_state_dict(state)
