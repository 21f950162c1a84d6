// Host-side plumbing shared by the CPU and CUDA operator implementations: validation, output
// allocation, and the translation from tensors to the raw-pointer argument structs of the math header.
#pragma once

#include "spiking_recurrence.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/util/accumulate.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <vector>

namespace snn_cuda {

// "proportional" -> kResetProportional, "subtract" -> kResetSubtract; anything else is an error.
int parse_reset(c10::string_view reset);

void check_forward_inputs(const at::Tensor& excitation, const at::Tensor& decay,
                          const at::Tensor& threshold, const at::Tensor& penalty,
                          const c10::optional<at::Tensor>& initial, bool delay);

void check_backward_inputs(const c10::optional<at::Tensor>& grad_states,
                           const c10::optional<at::Tensor>& grad_outputs, const at::Tensor& gates,
                           const c10::optional<at::Tensor>& states,
                           const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
                           const at::Tensor& threshold, const at::Tensor& penalty,
                           at::IntArrayRef shape, at::ScalarType dtype, bool need_decay,
                           bool need_threshold, bool need_penalty, int reset,
                           const c10::optional<at::Tensor>& initial, bool delay);

// Lanes of a [T, *batch, H] tensor: everything but the time dim.
inline int64_t lanes_of(at::IntArrayRef shape) {
  return c10::multiply_integers(shape.begin() + 1, shape.end());
}

inline int64_t lanes_of(const at::Tensor& t) { return lanes_of(t.sizes()); }

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
const T* const_data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// An output the kernel writes in full when it runs (T > 0); zero-filled only when it does not.
inline at::Tensor zeros_unless_written(at::IntArrayRef shape, const at::TensorOptions& options,
                                       int64_t T) {
  return T > 0 ? at::empty(shape, options) : at::zeros(shape, options);
}

// Sums the per-lane parameter gradients over the batch: [lanes] = [batch, H] -> [H]. A gradient
// that was not asked for comes back as zeros of shape [H].
inline at::Tensor sum_over_batch(const at::Tensor& per_lane, int64_t H, const at::Tensor& like) {
  if (!per_lane.defined() || per_lane.numel() == 0) return at::zeros_like(like);
  return per_lane.view({-1, H}).sum(0);
}

// A backend's launch object also supplies device_guard(device): what must hold while the operator
// allocates and launches on that device (nothing on the CPU, a CUDAGuard on CUDA). The run_*
// templates create it after their argument checks.
struct NoDeviceGuard {};

// ------------------------------------------------------------------------------------------------
// Binary spikes with surrogate gradients (lif_fwd / lif_bwd).

// "snntorch" -> kConvSnntorch, "snntorch_now" -> kConvSnntorchNow, "spikingjelly" ->
// kConvSpikingjelly, ...; "subtract"/"hard"/"none" (snnTorch's only); the
// surrogate names of SurrogateKind. Anything else is an error that lists the accepted names.
int parse_convention(c10::string_view convention);
int parse_spike_reset(c10::string_view reset, int convention);
int parse_surrogate(c10::string_view surrogate);

void check_lif_forward_inputs(const at::Tensor& input, const c10::optional<at::Tensor>& initial,
                              const at::Tensor& decay, const at::Tensor& threshold,
                              const at::Tensor& reset_value);

void check_lif_backward_inputs(const c10::optional<at::Tensor>& grad_spikes,
                               const c10::optional<at::Tensor>& grad_membrane,
                               const c10::optional<at::Tensor>& grad_state,
                               const at::Tensor& membrane,
                               const c10::optional<at::Tensor>& initial,
                               const c10::optional<at::Tensor>& input, const at::Tensor& decay,
                               const at::Tensor& threshold, const at::Tensor& reset_value,
                               bool input_needed);

template <int V>
using IntConstant = std::integral_constant<int, V>;

// Calls f(IntConstant<kConv>, IntConstant<kReset>) for the runtime convention and reset.
template <typename F>
void dispatch_lif_mode(int convention, int reset, const F& f) {
  if (convention == kConvSnntorch) {
    if (reset == kSpikeResetSubtract) {
      f(IntConstant<kConvSnntorch>{}, IntConstant<kSpikeResetSubtract>{});
    } else if (reset == kSpikeResetHard) {
      f(IntConstant<kConvSnntorch>{}, IntConstant<kSpikeResetHard>{});
    } else {
      f(IntConstant<kConvSnntorch>{}, IntConstant<kSpikeResetNone>{});
    }
  } else if (convention == kConvSnntorchNow) {
    if (reset == kSpikeResetSubtract) {
      f(IntConstant<kConvSnntorchNow>{}, IntConstant<kSpikeResetSubtract>{});
    } else if (reset == kSpikeResetHard) {
      f(IntConstant<kConvSnntorchNow>{}, IntConstant<kSpikeResetHard>{});
    } else {
      f(IntConstant<kConvSnntorchNow>{}, IntConstant<kSpikeResetNone>{});
    }
  } else if (convention == kConvSpikingjelly) {
    if (reset == kSpikeResetSubtract) {
      f(IntConstant<kConvSpikingjelly>{}, IntConstant<kSpikeResetSubtract>{});
    } else {
      f(IntConstant<kConvSpikingjelly>{}, IntConstant<kSpikeResetHard>{});
    }
  } else if (convention == kConvSpikingjellyIf) {
    if (reset == kSpikeResetSubtract) {
      f(IntConstant<kConvSpikingjellyIf>{}, IntConstant<kSpikeResetSubtract>{});
    } else {
      f(IntConstant<kConvSpikingjellyIf>{}, IntConstant<kSpikeResetHard>{});
    }
  } else {
    if (reset == kSpikeResetSubtract) {
      f(IntConstant<kConvSpikingjellyPlif>{}, IntConstant<kSpikeResetSubtract>{});
    } else {
      f(IntConstant<kConvSpikingjellyPlif>{}, IntConstant<kSpikeResetHard>{});
    }
  }
}

// Calls f(IntConstant<kSurrogate>) for the runtime surrogate.
template <typename F>
void dispatch_surrogate(int surrogate, const F& f) {
  switch (surrogate) {
    case kSurrogateFastSigmoid: f(IntConstant<kSurrogateFastSigmoid>{}); break;
    case kSurrogateSuperSpike: f(IntConstant<kSurrogateSuperSpike>{}); break;
    case kSurrogateAtan: f(IntConstant<kSurrogateAtan>{}); break;
    default: f(IntConstant<kSurrogateSigmoid>{}); break;
  }
}

// The whole lif_fwd operator but the loop launch:
// launch(args, IntConstant<kConv>, IntConstant<kReset>) runs the lanes of `args`.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_lif_forward(
    const at::Tensor& input, const c10::optional<at::Tensor>& initial, const at::Tensor& decay,
    const at::Tensor& threshold, const at::Tensor& reset_value, c10::string_view convention,
    c10::string_view reset, bool decay_input, const Launch& launch) {
  const int conv = parse_convention(convention);
  const int reset_mode = parse_spike_reset(reset, conv);
  check_lif_forward_inputs(input, initial, decay, threshold, reset_value);
  [[maybe_unused]] const auto guard = launch.device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor init = initial.has_value() ? initial->contiguous() : at::Tensor();
  at::Tensor spikes = at::empty_like(x);
  at::Tensor membrane = at::empty_like(x);
  at::Tensor state = at::empty(x.sizes().slice(1), x.options());
  if (x.size(0) == 0) {  // no step: the state is the initial one
    if (init.defined()) {
      state.copy_(init);
    } else {
      state.zero_();
    }
  }
  const auto dec = decay.contiguous(), thr = threshold.contiguous(), rv = reset_value.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    NeuronForwardArgs<scalar_t, acc_t> a{};
    a.input = x.const_data_ptr<scalar_t>();
    a.initial[0] = const_data_or_null<scalar_t>(init);
    a.rows[0] = spikes.data_ptr<scalar_t>();
    a.rows[1] = membrane.data_ptr<scalar_t>();
    a.state[0] = state.data_ptr<scalar_t>();
    a.constants[0] = dec.const_data_ptr<acc_t>();
    a.constants[1] = thr.const_data_ptr<acc_t>();
    a.constants[2] = rv.const_data_ptr<acc_t>();
    a.T = x.size(0);
    a.lanes = lanes_of(x);
    a.H = x.size(-1);
    a.flags = decay_input ? kFlagDecayInput : 0;
    if (a.lanes == 0 || a.T == 0) return;
    dispatch_lif_mode(conv, reset_mode, [&](auto c, auto r) { launch(a, c, r); });
  });
  return {spikes, membrane, state};
}

// The whole lif_bwd operator but the loop launch:
// launch(args, IntConstant<kConv>, IntConstant<kReset>, IntConstant<kSurrogate>).
// Returns (grad_input, grad_initial [*batch, H], grad_decay [H], grad_threshold [H]); gradients
// not asked for come back as zeros.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_lif_backward(
    const c10::optional<at::Tensor>& grad_spikes, const c10::optional<at::Tensor>& grad_membrane,
    const c10::optional<at::Tensor>& grad_state, const at::Tensor& membrane, const c10::optional<at::Tensor>& initial,
    const c10::optional<at::Tensor>& input, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& reset_value, c10::string_view convention, c10::string_view reset,
    bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool need_decay, bool need_threshold, const Launch& launch) {
  const int conv = parse_convention(convention);
  const int reset_mode = parse_spike_reset(reset, conv);
  const int surrogate_kind = parse_surrogate(surrogate);
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0,
              "lif_bwd: alpha (the surrogate's scale) must be finite and > 0, got ", alpha);
  // snntorch_now recomputes the charge from the input.
  const bool input_needed =
      conv == kConvSnntorchNow ||
      ((conv == kConvSpikingjelly || conv == kConvSpikingjellyPlif) && decay_input && need_decay);
  check_lif_backward_inputs(grad_spikes, grad_membrane, grad_state, membrane, initial, input,
                            decay, threshold, reset_value, input_needed);
  [[maybe_unused]] const auto guard = launch.device_guard(membrane.device());
  const at::Tensor mem = membrane.contiguous();
  const at::Tensor gs = grad_spikes.has_value() ? grad_spikes->contiguous() : at::Tensor();
  const at::Tensor gm = grad_membrane.has_value() ? grad_membrane->contiguous() : at::Tensor();
  const at::Tensor gst = grad_state.has_value() ? grad_state->contiguous() : at::Tensor();
  const at::Tensor init = initial.has_value() ? initial->contiguous() : at::Tensor();
  const at::Tensor x = input_needed ? input->contiguous() : at::Tensor();
  const int64_t lanes = lanes_of(mem);
  const int64_t H = mem.size(-1);
  const auto acc_options = mem.options().dtype(at::toOpMathType(mem.scalar_type()));
  at::Tensor grad_input = at::empty_like(mem);
  // Zero-filled so that T = 0 gives zero gradients without a launch.
  const int64_t T = mem.size(0);
  at::Tensor grad_initial = zeros_unless_written(mem.sizes().slice(1), mem.options(), T);
  if (mem.size(0) == 0 && gst.defined()) grad_initial.copy_(gst);  // no step: state = initial
  at::Tensor grad_decay = need_decay ? zeros_unless_written({lanes}, acc_options, T) : at::Tensor();
  at::Tensor grad_threshold =
      need_threshold ? zeros_unless_written({lanes}, acc_options, T) : at::Tensor();
  const auto dec = decay.contiguous(), thr = threshold.contiguous(), rv = reset_value.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mem.scalar_type(), "lif_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    NeuronBackwardArgs<scalar_t, acc_t> a{};
    a.grad_rows[0] = const_data_or_null<scalar_t>(gs);
    a.grad_rows[1] = const_data_or_null<scalar_t>(gm);
    a.grad_state[0] = const_data_or_null<scalar_t>(gst);
    a.saved[0] = mem.const_data_ptr<scalar_t>();
    a.initial[0] = const_data_or_null<scalar_t>(init);
    a.input = const_data_or_null<scalar_t>(x);
    a.constants[0] = dec.const_data_ptr<acc_t>();
    a.constants[1] = thr.const_data_ptr<acc_t>();
    a.constants[2] = rv.const_data_ptr<acc_t>();
    a.alpha = static_cast<acc_t>(alpha);
    a.grad_input = grad_input.data_ptr<scalar_t>();
    a.grad_initial[0] = grad_initial.data_ptr<scalar_t>();
    a.grad_constants[0] = data_or_null<acc_t>(grad_decay);
    a.grad_constants[1] = data_or_null<acc_t>(grad_threshold);
    a.T = mem.size(0);
    a.lanes = lanes;
    a.H = H;
    a.flags = (decay_input ? kFlagDecayInput : 0) | (detach_reset ? kFlagDetachReset : 0);
    if (a.lanes == 0 || a.T == 0) return;
    dispatch_lif_mode(conv, reset_mode, [&](auto c, auto r) {
      dispatch_surrogate(surrogate_kind, [&](auto s) { launch(a, c, r, s); });
    });
  });
  return {grad_input, grad_initial, sum_over_batch(grad_decay, H, decay),
          sum_over_batch(grad_threshold, H, decay)};
}

// ------------------------------------------------------------------------------------------------
// The generic neuron ops (neuron_fwd / neuron_bwd): one schema for every model of the interface
// (docs/design-neuron-interface.md). A model is named by a string and a reset; the launches get a
// ModelTag<M> and run the generic lane loops with M.

template <class M>
struct ModelTag {
  using type = M;
};

// A model's name, reset and sizes, as the op checks its arguments.
struct ModelSpec {
  int kind;
  int reset;
  int states, rows, constants;
  bool needs_input;  // the backward reads the forward's input
  const char* name;
  int flags = 0;     // the NeuronFlag bits the model reads (none of the models of neuron_* yet)
};

enum NeuronModelKind : int {
  kModelSnntorchSynaptic = 0,
  kModelNorseLif = 1,
  kModelNorseLi = 2,
  kModelNorseLsnn = 3,
  kModelSnntorchRleaky = 4,
  kModelSnntorchRsynaptic = 5,
  kModelAlif = 6,
};

// "snntorch_synaptic", "snntorch_rleaky" and "snntorch_rsynaptic" with "subtract" / "zero" /
// "none"; "norse_lif" and "norse_lsnn" with "hard" (to v_reset); "norse_li" with "none"; "alif"
// with "subtract". Anything
// else is an error listing the accepted names.
ModelSpec parse_model(c10::string_view model, c10::string_view reset);

// Calls f(ModelTag<M<kReset>>{}) for a model templated on snnTorch's resets.
template <template <int> class M, typename F>
void dispatch_snntorch_reset(int reset, const F& f) {
  switch (reset) {
    case kSpikeResetSubtract: f(ModelTag<M<kSpikeResetSubtract>>{}); break;
    case kSpikeResetHard: f(ModelTag<M<kSpikeResetHard>>{}); break;
    default: f(ModelTag<M<kSpikeResetNone>>{}); break;
  }
}

// Calls f(ModelTag<M>{}) for the model of `spec`.
template <typename F>
void dispatch_model(const ModelSpec& spec, const F& f) {
  switch (spec.kind) {
    case kModelNorseLif: f(ModelTag<NorseLif>{}); break;
    case kModelNorseLi: f(ModelTag<NorseLi>{}); break;
    case kModelNorseLsnn: f(ModelTag<NorseLsnn>{}); break;
    case kModelAlif: f(ModelTag<Alif>{}); break;
    case kModelSnntorchRleaky: dispatch_snntorch_reset<SnntorchRleaky>(spec.reset, f); break;
    case kModelSnntorchRsynaptic: dispatch_snntorch_reset<SnntorchRsynaptic>(spec.reset, f); break;
    default: dispatch_snntorch_reset<SnntorchSynaptic>(spec.reset, f); break;
  }
}

// A model reads only the option flags it declares; any other bit is an error rather than an
// option silently ignored.
inline void check_model_flags(const ModelSpec& spec, const char* op, int64_t flags) {
  TORCH_CHECK(flags >= 0 && (flags & ~int64_t{spec.flags}) == 0, op, ": model \"", spec.name,
              "\" takes the option flags ", spec.flags, " at most, got ", flags);
}

void check_neuron_forward_inputs(const ModelSpec& spec, const at::Tensor& input,
                                 const c10::List<c10::optional<at::Tensor>>& initial,
                                 at::TensorList constants);

void check_neuron_backward_inputs(const ModelSpec& spec,
                                  const c10::List<c10::optional<at::Tensor>>& grad_rows,
                                  const c10::List<c10::optional<at::Tensor>>& grad_state,
                                  at::TensorList saved,
                                  const c10::List<c10::optional<at::Tensor>>& initial,
                                  const c10::optional<at::Tensor>& input,
                                  at::TensorList constants, bool input_needed);

inline at::Tensor defined_or_empty(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// The whole neuron_fwd operator but the loop launch: launch(args, ModelTag<M>) runs the lanes.
// Returns (rows, each [T, *batch, H]; states after the last step, each [*batch, H]).
template <typename Launch>
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> run_neuron_forward(
    c10::string_view model, c10::string_view reset, const at::Tensor& input,
    const c10::List<c10::optional<at::Tensor>>& initial, at::TensorList constants, int64_t flags,
    const Launch& launch) {
  const ModelSpec spec = parse_model(model, reset);
  check_model_flags(spec, "neuron_fwd", flags);
  check_neuron_forward_inputs(spec, input, initial, constants);
  [[maybe_unused]] const auto guard = launch.device_guard(input.device());
  const at::Tensor x = input.contiguous();
  std::vector<at::Tensor> init, consts, rows, states;
  for (int s = 0; s < spec.states; ++s) init.push_back(defined_or_empty(initial.get(s)));
  for (int q = 0; q < spec.constants; ++q) consts.push_back(constants[q].contiguous());
  for (int r = 0; r < spec.rows; ++r) rows.push_back(at::empty_like(x));
  for (int s = 0; s < spec.states; ++s) {
    states.push_back(at::empty(x.sizes().slice(1), x.options()));
    if (x.size(0) == 0) {  // no step: the state is the initial one
      if (init[s].defined()) {
        states[s].copy_(init[s]);
      } else {
        states[s].zero_();
      }
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    NeuronForwardArgs<scalar_t, acc_t> a{};
    a.input = x.const_data_ptr<scalar_t>();
    for (int s = 0; s < spec.states; ++s) {
      a.initial[s] = const_data_or_null<scalar_t>(init[s]);
      a.state[s] = states[s].data_ptr<scalar_t>();
    }
    for (int r = 0; r < spec.rows; ++r) a.rows[r] = rows[r].data_ptr<scalar_t>();
    for (int q = 0; q < spec.constants; ++q) a.constants[q] = consts[q].const_data_ptr<acc_t>();
    a.T = x.size(0);
    a.lanes = lanes_of(x);
    a.H = x.size(-1);
    a.flags = static_cast<int>(flags);
    if (a.lanes == 0 || a.T == 0) return;
    dispatch_model(spec, [&](auto tag) { launch(a, tag); });
  });
  return {rows, states};
}

// The whole neuron_bwd operator but the loop launch: launch(args, ModelTag<M>,
// IntConstant<kSurrogate>). `saved` holds, per state, the row the forward wrote for it (the model's
// saved rows); need_constants is a bit mask of the constants whose gradient is wanted. Returns
// (grad_input, per state dL/d(initial) [*batch, H], per constant its gradient [H]); gradients not
// asked for come back as zeros.
template <typename Launch>
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> run_neuron_backward(
    c10::string_view model, c10::string_view reset,
    const c10::List<c10::optional<at::Tensor>>& grad_rows,
    const c10::List<c10::optional<at::Tensor>>& grad_state, at::TensorList saved,
    const c10::List<c10::optional<at::Tensor>>& initial, const c10::optional<at::Tensor>& input,
    at::TensorList constants, int64_t flags, c10::string_view surrogate, double alpha,
    int64_t need_constants, const Launch& launch) {
  const ModelSpec spec = parse_model(model, reset);
  const int surrogate_kind = parse_surrogate(surrogate);
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, "neuron_bwd: alpha (the surrogate's scale) must "
              "be finite and > 0, got ", alpha);
  TORCH_CHECK(need_constants >= 0 && need_constants < (int64_t{1} << spec.constants),
              "neuron_bwd: need_constants must be a bit mask of the model's ", spec.constants,
              " constants, got ", need_constants);
  check_model_flags(spec, "neuron_bwd", flags);
  const bool input_needed = spec.needs_input;
  check_neuron_backward_inputs(spec, grad_rows, grad_state, saved, initial, input, constants,
                               input_needed);
  [[maybe_unused]] const auto guard = launch.device_guard(saved[0].device());
  std::vector<at::Tensor> g_rows, g_state, kept, init, consts;
  for (int r = 0; r < spec.rows; ++r) g_rows.push_back(defined_or_empty(grad_rows.get(r)));
  for (int s = 0; s < spec.states; ++s) {
    g_state.push_back(defined_or_empty(grad_state.get(s)));
    kept.push_back(saved[s].contiguous());
    init.push_back(defined_or_empty(initial.get(s)));
  }
  for (int q = 0; q < spec.constants; ++q) consts.push_back(constants[q].contiguous());
  const at::Tensor x = input_needed ? input->contiguous() : at::Tensor();
  const at::Tensor& like = kept[0];
  const int64_t T = like.size(0);
  const int64_t lanes = lanes_of(like);
  const int64_t H = like.size(-1);
  const auto acc_options = like.options().dtype(at::toOpMathType(like.scalar_type()));
  at::Tensor grad_input = at::empty_like(like);
  std::vector<at::Tensor> grad_initial, grad_lanes;
  for (int s = 0; s < spec.states; ++s) {
    // Zero-filled so that T = 0 gives zero gradients without a launch.
    grad_initial.push_back(zeros_unless_written(like.sizes().slice(1), like.options(), T));
    if (T == 0 && g_state[s].defined()) grad_initial[s].copy_(g_state[s]);  // state = initial
  }
  for (int q = 0; q < spec.constants; ++q) {
    grad_lanes.push_back((need_constants >> q) & 1 ? zeros_unless_written({lanes}, acc_options, T)
                                                   : at::Tensor());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "neuron_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    NeuronBackwardArgs<scalar_t, acc_t> a{};
    for (int r = 0; r < spec.rows; ++r) a.grad_rows[r] = const_data_or_null<scalar_t>(g_rows[r]);
    for (int s = 0; s < spec.states; ++s) {
      a.grad_state[s] = const_data_or_null<scalar_t>(g_state[s]);
      a.saved[s] = kept[s].const_data_ptr<scalar_t>();
      a.initial[s] = const_data_or_null<scalar_t>(init[s]);
      a.grad_initial[s] = grad_initial[s].data_ptr<scalar_t>();
    }
    a.input = input_needed ? x.const_data_ptr<scalar_t>() : nullptr;
    for (int q = 0; q < spec.constants; ++q) {
      a.constants[q] = consts[q].const_data_ptr<acc_t>();
      a.grad_constants[q] = data_or_null<acc_t>(grad_lanes[q]);
    }
    a.alpha = static_cast<acc_t>(alpha);
    a.grad_input = grad_input.data_ptr<scalar_t>();
    a.T = T;
    a.lanes = lanes;
    a.H = H;
    a.flags = static_cast<int>(flags);
    if (a.lanes == 0 || a.T == 0) return;
    dispatch_model(spec, [&](auto tag) {
      dispatch_surrogate(surrogate_kind, [&](auto s) { launch(a, tag, s); });
    });
  });
  std::vector<at::Tensor> grad_constants;
  for (int q = 0; q < spec.constants; ++q) {
    grad_constants.push_back(sum_over_batch(grad_lanes[q], H, consts[q]));
  }
  return {grad_input, grad_initial, grad_constants};
}

// ------------------------------------------------------------------------------------------------
// The seed's graded neuron (spiking_recurrence_fwd / spiking_recurrence_bwd): the model
// GradedNeuron<kReset> of the generic loops, run by the same launches as neuron_fwd / neuron_bwd.

// The graded neuron's fourth constant, ratio = penalty / threshold per neuron (the reference
// computes it once too; IEEE division, so the same value on every device). Both contiguous, in the
// accumulation dtype. On the CPU a plain loop into a host buffer: a tensor (allocation, at::div's
// dispatch) cost ~0.5-1.5 us, a large part of a T = 1 call.
template <typename acc_t>
class GradedRatio {
 public:
  GradedRatio(const at::Tensor& penalty, const at::Tensor& threshold) {
    if (!penalty.is_cpu()) {
      device_ = at::div(penalty, threshold);
      return;
    }
    const acc_t* p = penalty.const_data_ptr<acc_t>();
    const acc_t* t = threshold.const_data_ptr<acc_t>();
    host_.resize(static_cast<size_t>(penalty.numel()));
    for (size_t i = 0; i < host_.size(); ++i) host_[i] = p[i] / t[i];
  }
  const acc_t* data() const {
    return device_.defined() ? device_.const_data_ptr<acc_t>() : host_.data();
  }

 private:
  std::vector<acc_t> host_;
  at::Tensor device_;
};

// Calls f(ModelTag<GradedNeuron<kReset>>{}) for the runtime reset.
template <typename F>
void dispatch_graded(int reset, const F& f) {
  if (reset == kResetProportional) {
    f(ModelTag<GradedNeuron<kResetProportional>>{});
  } else {
    f(ModelTag<GradedNeuron<kResetSubtract>>{});
  }
}

// The whole forward operator but the loop launch, which each backend supplies:
// launch(args, ModelTag<M>) runs the lanes of `args` (the generic neuron launch).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_forward(
    const at::Tensor& excitation, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& penalty, c10::string_view reset, bool delay,
    const c10::optional<at::Tensor>& initial, const Launch& launch) {
  const int reset_mode = parse_reset(reset);
  check_forward_inputs(excitation, decay, threshold, penalty, initial, delay);
  // After the checks, so that a wrong device gets our message, not the device guard's.
  [[maybe_unused]] const auto guard = launch.device_guard(excitation.device());
  const at::Tensor x = excitation.contiguous();
  const at::Tensor init = initial.has_value() ? initial->contiguous() : at::Tensor();
  const int64_t T = x.size(0);
  const int64_t lanes = lanes_of(x);
  at::Tensor states = at::empty_like(x);
  at::Tensor outputs = at::empty_like(x);
  at::Tensor gates = at::empty({(T + 7) / 8, lanes}, x.options().dtype(at::kByte));
  const auto dec = decay.contiguous(), thr = threshold.contiguous(), pen = penalty.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "spiking_recurrence_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (lanes == 0 || T == 0) return;
    const GradedRatio<acc_t> ratio(pen, thr);
    NeuronForwardArgs<scalar_t, acc_t> a{};
    a.input = x.const_data_ptr<scalar_t>();
    a.initial[0] = const_data_or_null<scalar_t>(init);
    a.rows[0] = states.data_ptr<scalar_t>();
    a.rows[1] = outputs.data_ptr<scalar_t>();
    a.state[0] = nullptr;  // the last row holds it (without delay)
    a.constants[0] = dec.const_data_ptr<acc_t>();
    a.constants[1] = thr.const_data_ptr<acc_t>();
    a.constants[2] = pen.const_data_ptr<acc_t>();
    a.constants[3] = ratio.data();
    a.bits = gates.data_ptr<uint8_t>();
    a.T = T;
    a.lanes = lanes;
    a.H = x.size(-1);
    a.flags = delay ? kFlagDelay : 0;
    dispatch_graded(reset_mode, [&](auto tag) { launch(a, tag); });
  });
  return {states, outputs, gates};
}

// The whole backward operator but the loop launch: launch(args, ModelTag<M>, IntConstant<k>)
// (the graded neuron has no surrogate; the launch's surrogate parameter is not read).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_backward(
    const c10::optional<at::Tensor>& grad_states, const c10::optional<at::Tensor>& grad_outputs,
    const at::Tensor& gates, const c10::optional<at::Tensor>& states,
    const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
    const at::Tensor& threshold, const at::Tensor& penalty, at::IntArrayRef shape,
    at::ScalarType dtype, c10::string_view reset, bool delay, bool need_decay,
    bool need_threshold, bool need_penalty, const c10::optional<at::Tensor>& initial,
    bool need_initial, const Launch& launch) {
  const int reset_mode = parse_reset(reset);
  check_backward_inputs(grad_states, grad_outputs, gates, states, outputs, decay, threshold,
                        penalty, shape, dtype, need_decay, need_threshold, need_penalty,
                        reset_mode, initial, delay);
  [[maybe_unused]] const auto guard = launch.device_guard(gates.device());
  const auto options = gates.options().dtype(dtype);
  const auto acc_options = gates.options().dtype(at::toOpMathType(dtype));
  const int64_t T = shape[0];
  const int64_t lanes = gates.size(1);
  const int64_t H = shape.back();
  const at::Tensor gs = defined_or_empty(grad_states);
  const at::Tensor go = defined_or_empty(grad_outputs);
  const at::Tensor bits = gates.contiguous();
  // States are read only for the decay gradient (with v_{-1}), outputs only for the proportional
  // reset's threshold and penalty gradients.
  const at::Tensor st = need_decay ? states->contiguous() : at::Tensor();
  const at::Tensor init = need_decay ? defined_or_empty(initial) : at::Tensor();
  const at::Tensor out = reset_mode == kResetProportional && (need_threshold || need_penalty)
                             ? outputs->contiguous()
                             : at::Tensor();
  at::Tensor grad_excitation = at::empty(shape, options);
  // The kernel writes every lane of these; zeros only where it does not run (T = 0).
  const at::Tensor grad_decay = need_decay ? zeros_unless_written({lanes}, acc_options, T)
                                           : at::Tensor();
  const at::Tensor grad_threshold =
      need_threshold ? zeros_unless_written({lanes}, acc_options, T) : at::Tensor();
  const at::Tensor grad_penalty = need_penalty ? zeros_unless_written({lanes}, acc_options, T)
                                               : at::Tensor();
  at::Tensor grad_initial = need_initial ? zeros_unless_written(shape.slice(1), options, T)
                                         : at::empty({0}, options);
  const auto dec = decay.contiguous(), thr = threshold.contiguous(), pen = penalty.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "spiking_recurrence_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (lanes == 0 || T == 0) return;
    const GradedRatio<acc_t> ratio(pen, thr);
    NeuronBackwardArgs<scalar_t, acc_t> a{};
    a.grad_rows[0] = const_data_or_null<scalar_t>(gs);
    a.grad_rows[1] = const_data_or_null<scalar_t>(go);
    a.saved[0] = const_data_or_null<scalar_t>(st);
    a.saved[1] = const_data_or_null<scalar_t>(out);
    a.initial[0] = const_data_or_null<scalar_t>(init);
    a.bits = bits.const_data_ptr<uint8_t>();
    a.constants[0] = dec.const_data_ptr<acc_t>();
    a.constants[1] = thr.const_data_ptr<acc_t>();
    a.constants[2] = pen.const_data_ptr<acc_t>();
    a.constants[3] = ratio.data();
    a.grad_input = grad_excitation.data_ptr<scalar_t>();
    a.grad_initial[0] = need_initial ? grad_initial.data_ptr<scalar_t>() : nullptr;
    a.grad_constants[0] = data_or_null<acc_t>(grad_decay);
    a.grad_constants[1] = data_or_null<acc_t>(grad_threshold);
    a.grad_constants[2] = data_or_null<acc_t>(grad_penalty);
    a.T = T;
    a.lanes = lanes;
    a.H = H;
    a.flags = delay ? kFlagDelay : 0;
    dispatch_graded(reset_mode, [&](auto tag) { launch(a, tag, IntConstant<kSurrogateSigmoid>{}); });
  });
  return {grad_excitation, sum_over_batch(grad_decay, H, decay),
          sum_over_batch(grad_threshold, H, decay), sum_over_batch(grad_penalty, H, decay),
          grad_initial};
}

}  // namespace snn_cuda
