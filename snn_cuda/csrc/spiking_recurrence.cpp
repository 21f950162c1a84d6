// Operator schemas, input validation shared by every backend, and the CPU kernels.
#include "spiking_recurrence_ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

// `import snn_cuda._C` loads this library, which registers the operators. No Python bindings.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace snn_cuda {

int parse_reset(c10::string_view reset) {
  if (reset == "proportional") return kResetProportional;
  if (reset == "subtract") return kResetSubtract;
  TORCH_CHECK(false, "spiking_recurrence: reset must be \"proportional\" or \"subtract\", got \"",
              std::string(reset), "\"");
}

static void check_param(const at::Tensor& param, const char* name, int64_t H,
                        at::ScalarType dtype, const at::Device& device,
                        const char* op = "spiking_recurrence") {
  const auto acc = at::toOpMathType(dtype);
  TORCH_CHECK(param.dim() == 1 && param.size(0) == H, op, ": ", name, " must have shape [H] = [",
              H, "] (the input's last dim), got shape ", param.sizes());
  TORCH_CHECK(param.scalar_type() == acc, op, ": ", name, " must have dtype ", acc,
              " (the accumulation type of the input's ", dtype, "), got ", param.scalar_type());
  TORCH_CHECK(param.device() == device, op, ": ", name, " must be on device ", device,
              " (the input's), got ", param.device());
}

static void check_excitation(at::IntArrayRef shape, at::ScalarType dtype, const char* name,
                             const char* op = "spiking_recurrence") {
  TORCH_CHECK(shape.size() >= 2, op, ": ", name,
              " must have shape [T, *batch, H] (at least 2 dims), got shape ", shape);
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": ", name, " must be float64, float32, float16 or bfloat16, got ", dtype);
}

static void check_params(const at::Tensor& decay, const at::Tensor& threshold,
                         const at::Tensor& penalty, int64_t H, at::ScalarType dtype,
                         const at::Device& device) {
  check_param(decay, "decay_multiplier", H, dtype, device);
  check_param(threshold, "threshold", H, dtype, device);
  check_param(penalty, "penalty_threshold", H, dtype, device);
}

static void check_like(const c10::optional<at::Tensor>& t, const char* op, const char* name,
                       at::IntArrayRef shape, at::ScalarType dtype, const at::Device& device,
                       const char* whose);

// The initial state v_{-1}: one step of the excitation; only without delay (with delay, row 0
// returns (v_{-1}, o_{-1}), and o_{-1} is not known from v_{-1}).
static void check_initial(const c10::optional<at::Tensor>& initial, const char* op,
                          at::IntArrayRef shape, at::ScalarType dtype, const at::Device& device,
                          bool delay) {
  TORCH_CHECK(!initial.has_value() || !delay, op,
              ": an initial state needs delay=False (with delay=True row 0 would return the "
              "unknown previous output)");
  check_like(initial, op, "initial (one step of excitation)", shape.slice(1), dtype, device,
             "excitation's");
}

void check_forward_inputs(const at::Tensor& excitation, const at::Tensor& decay,
                          const at::Tensor& threshold, const at::Tensor& penalty,
                          const c10::optional<at::Tensor>& initial, bool delay) {
  check_excitation(excitation.sizes(), excitation.scalar_type(), "excitation");
  check_params(decay, threshold, penalty, excitation.size(-1), excitation.scalar_type(),
               excitation.device());
  check_initial(initial, "spiking_recurrence_fwd", excitation.sizes(), excitation.scalar_type(),
                excitation.device(), delay);
}

// A tensor that must match a reference's shape, dtype and device (absent = nothing to check).
static void check_like(const c10::optional<at::Tensor>& t, const char* op, const char* name,
                       at::IntArrayRef shape, at::ScalarType dtype, const at::Device& device,
                       const char* whose) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
              t->sizes());
  TORCH_CHECK(t->scalar_type() == dtype, op, ": ", name, " must have dtype ", dtype, ", got ",
              t->scalar_type());
  TORCH_CHECK(t->device() == device, op, ": ", name, " must be on ", whose, " device ", device,
              ", got ", t->device());
}

void check_backward_inputs(const c10::optional<at::Tensor>& grad_states,
                           const c10::optional<at::Tensor>& grad_outputs, const at::Tensor& gates,
                           const c10::optional<at::Tensor>& states,
                           const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
                           const at::Tensor& threshold, const at::Tensor& penalty,
                           at::IntArrayRef shape, at::ScalarType dtype, bool need_decay,
                           bool need_threshold, bool need_penalty, int reset,
                           const c10::optional<at::Tensor>& initial, bool delay) {
  check_excitation(shape, dtype, "shape/dtype");
  const auto device = gates.device();
  check_initial(initial, "spiking_recurrence_bwd", shape, dtype, device, delay);
  check_params(decay, threshold, penalty, shape.back(), dtype, device);
  const int64_t T = shape[0];
  const int64_t lanes = lanes_of(shape);
  for (const auto& [t, name] : {std::make_pair(&grad_states, "grad_states"),
                                 std::make_pair(&grad_outputs, "grad_outputs"),
                                 std::make_pair(&states, "states"),
                                 std::make_pair(&outputs, "outputs")}) {
    check_like(*t, "spiking_recurrence_bwd", name, shape, dtype, device, "the gates'");
  }
  TORCH_CHECK(gates.scalar_type() == at::kByte && gates.dim() == 2 &&
                  gates.size(0) == (T + 7) / 8 && gates.size(1) == lanes,
              "spiking_recurrence_bwd: gates must be uint8 of shape [ceil(T / 8), lanes] = [",
              (T + 7) / 8, ", ", lanes, "], got ", gates.scalar_type(), " of shape ",
              gates.sizes());
  TORCH_CHECK(!need_decay || states.has_value(),
              "spiking_recurrence_bwd: the decay gradient needs the forward's states");
  TORCH_CHECK(!(reset == kResetProportional && (need_threshold || need_penalty)) ||
                  outputs.has_value(),
              "spiking_recurrence_bwd: threshold/penalty gradients with reset=\"proportional\" "
              "need the forward's outputs");
}

int parse_convention(c10::string_view convention) {
  if (convention == "snntorch") return kConvSnntorch;
  if (convention == "snntorch_now") return kConvSnntorchNow;
  if (convention == "spikingjelly") return kConvSpikingjelly;
  if (convention == "spikingjelly_if") return kConvSpikingjellyIf;
  if (convention == "spikingjelly_plif") return kConvSpikingjellyPlif;
  TORCH_CHECK(false,
              "lif: convention must be \"snntorch\", \"snntorch_now\", \"spikingjelly\", "
              "\"spikingjelly_if\" or \"spikingjelly_plif\", got \"", std::string(convention),
              "\"");
}

int parse_spike_reset(c10::string_view reset, int convention) {
  if (reset == "subtract") return kSpikeResetSubtract;
  if (reset == "hard") return kSpikeResetHard;
  if (reset == "none") {
    TORCH_CHECK(convention == kConvSnntorch || convention == kConvSnntorchNow,
                "lif: reset \"none\" exists for the \"snntorch\" and \"snntorch_now\" "
                "conventions only");
    return kSpikeResetNone;
  }
  TORCH_CHECK(false, "lif: reset must be \"subtract\", \"hard\" or \"none\", got \"",
              std::string(reset), "\"");
}

int parse_surrogate(c10::string_view surrogate) {
  if (surrogate == "fast_sigmoid") return kSurrogateFastSigmoid;
  if (surrogate == "super_spike") return kSurrogateSuperSpike;
  if (surrogate == "atan") return kSurrogateAtan;
  if (surrogate == "sigmoid") return kSurrogateSigmoid;
  TORCH_CHECK(false,
              "lif: surrogate must be \"fast_sigmoid\", \"super_spike\", \"atan\" or \"sigmoid\", "
              "got \"", std::string(surrogate), "\"");
}

static void check_lif_params(const at::Tensor& decay, const at::Tensor& threshold,
                             const at::Tensor& reset_value, int64_t H, at::ScalarType dtype,
                             const at::Device& device) {
  check_param(decay, "decay", H, dtype, device, "lif");
  check_param(threshold, "threshold", H, dtype, device, "lif");
  check_param(reset_value, "reset_value", H, dtype, device, "lif");
}


void check_lif_forward_inputs(const at::Tensor& input, const c10::optional<at::Tensor>& initial,
                              const at::Tensor& decay, const at::Tensor& threshold,
                              const at::Tensor& reset_value) {
  check_excitation(input.sizes(), input.scalar_type(), "input", "lif");
  check_lif_params(decay, threshold, reset_value, input.size(-1), input.scalar_type(),
                   input.device());
  check_like(initial, "lif", "initial (one step of input)", input.sizes().slice(1),
             input.scalar_type(), input.device(), "input's");
}

void check_lif_backward_inputs(const c10::optional<at::Tensor>& grad_spikes,
                               const c10::optional<at::Tensor>& grad_membrane,
                               const c10::optional<at::Tensor>& grad_state,
                               const at::Tensor& membrane,
                               const c10::optional<at::Tensor>& initial,
                               const c10::optional<at::Tensor>& input, const at::Tensor& decay,
                               const at::Tensor& threshold, const at::Tensor& reset_value,
                               bool input_needed) {
  check_excitation(membrane.sizes(), membrane.scalar_type(), "membrane", "lif");
  const auto dtype = membrane.scalar_type();
  const auto device = membrane.device();
  check_lif_params(decay, threshold, reset_value, membrane.size(-1), dtype, device);
  check_like(grad_spikes, "lif_bwd", "grad_spikes", membrane.sizes(), dtype, device, "membrane's");
  check_like(grad_membrane, "lif_bwd", "grad_membrane", membrane.sizes(), dtype, device,
             "membrane's");
  check_like(grad_state, "lif_bwd", "grad_state (one step of membrane)", membrane.sizes().slice(1),
             dtype, device, "membrane's");
  check_like(input, "lif_bwd", "input", membrane.sizes(), dtype, device, "membrane's");
  check_like(initial, "lif_bwd", "initial (one step of membrane)", membrane.sizes().slice(1),
             dtype, device, "membrane's");
  TORCH_CHECK(!input_needed || input.has_value(),
              "lif_bwd: the backward of convention \"snntorch_now\" and tau's gradient with "
              "decay_input (convention \"spikingjelly\"; the rate's with \"spikingjelly_plif\") "
              "need the forward's input");
}


ModelSpec parse_model(c10::string_view model, c10::string_view reset) {
  ModelSpec spec;
  const char* resets;
  if (model == "snntorch_synaptic" || model == "snntorch_rleaky" || model == "snntorch_rsynaptic") {
    spec = model == "snntorch_synaptic"
               ? ModelSpec{kModelSnntorchSynaptic, 0, 2, 3, 3, false, "snntorch_synaptic"}
           : model == "snntorch_rleaky"
               ? ModelSpec{kModelSnntorchRleaky, 0, 2, 2, 3, false, "snntorch_rleaky"}
               : ModelSpec{kModelSnntorchRsynaptic, 0, 3, 3, 4, false, "snntorch_rsynaptic"};
    resets = "\"subtract\", \"zero\" or \"none\"";
    if (reset == "subtract") {
      spec.reset = kSpikeResetSubtract;
      return spec;
    }
    if (reset == "zero") {
      spec.reset = kSpikeResetHard;
      return spec;
    }
    if (reset == "none") {
      spec.reset = kSpikeResetNone;
      return spec;
    }
  } else if (model == "norse_lif") {
    spec = {kModelNorseLif, kSpikeResetHard, 2, 3, 5, true, "norse_lif"};
    resets = "\"hard\" (to v_reset)";
    if (reset == "hard") return spec;
  } else if (model == "norse_lsnn") {
    spec = {kModelNorseLsnn, kSpikeResetHard, 3, 4, 7, false, "norse_lsnn"};
    resets = "\"hard\" (to v_reset)";
    if (reset == "hard") return spec;
  } else if (model == "norse_li") {
    spec = {kModelNorseLi, kSpikeResetNone, 2, 2, 3, true, "norse_li"};
    resets = "\"none\" (no spike)";
    if (reset == "none") return spec;
  } else if (model == "alif") {
    spec = {kModelAlif, kSpikeResetSubtract, 3, 3, 4, true, "alif"};
    resets = "\"subtract\" (by the adaptive threshold)";
    if (reset == "subtract") return spec;
  } else {
    TORCH_CHECK(false, "neuron: model must be \"snntorch_synaptic\", \"snntorch_rleaky\", "
                "\"snntorch_rsynaptic\", \"norse_lif\", \"norse_li\", \"norse_lsnn\" or "
                "\"alif\", got \"", std::string(model), "\"");
  }
  TORCH_CHECK(false, "neuron: reset of model \"", spec.name, "\" must be ", resets, ", got \"",
              std::string(reset), "\"");
}

static void check_counts(const ModelSpec& spec, const char* op, const char* what, size_t given,
                         int expected) {
  TORCH_CHECK(given == static_cast<size_t>(expected), op, ": model \"", spec.name, "\" takes ",
              expected, " ", what, ", got ", given);
}

static void check_neuron_constants(const ModelSpec& spec, const char* op, at::TensorList constants,
                                   int64_t H, at::ScalarType dtype, const at::Device& device) {
  check_counts(spec, op, "constants", constants.size(), spec.constants);
  for (const auto& c : constants) check_param(c, "each constant", H, dtype, device, op);
}

void check_neuron_forward_inputs(const ModelSpec& spec, const at::Tensor& input,
                                 const c10::List<c10::optional<at::Tensor>>& initial,
                                 at::TensorList constants) {
  check_excitation(input.sizes(), input.scalar_type(), "input", "neuron_fwd");
  check_counts(spec, "neuron_fwd", "initial states (None for zeros)", initial.size(), spec.states);
  check_neuron_constants(spec, "neuron_fwd", constants, input.size(-1), input.scalar_type(),
                         input.device());
  for (size_t s = 0; s < initial.size(); ++s) {
    check_like(initial.get(s), "neuron_fwd", "each initial state (one step of input)",
               input.sizes().slice(1), input.scalar_type(), input.device(), "input's");
  }
}

void check_neuron_backward_inputs(const ModelSpec& spec,
                                  const c10::List<c10::optional<at::Tensor>>& grad_rows,
                                  const c10::List<c10::optional<at::Tensor>>& grad_state,
                                  at::TensorList saved,
                                  const c10::List<c10::optional<at::Tensor>>& initial,
                                  const c10::optional<at::Tensor>& input,
                                  at::TensorList constants, bool input_needed) {
  const char* op = "neuron_bwd";
  check_counts(spec, op, "saved rows (one per state)", saved.size(), spec.states);
  check_counts(spec, op, "row gradients (None for zero)", grad_rows.size(), spec.rows);
  check_counts(spec, op, "state gradients (None for zero)", grad_state.size(), spec.states);
  check_counts(spec, op, "initial states (None for zeros)", initial.size(), spec.states);
  const at::Tensor& like = saved[0];
  check_excitation(like.sizes(), like.scalar_type(), "each saved row", op);
  const auto dtype = like.scalar_type();
  const auto device = like.device();
  for (const auto& t : saved) {
    check_like(t, op, "each saved row", like.sizes(), dtype, device, "the first saved row's");
  }
  check_neuron_constants(spec, op, constants, like.size(-1), dtype, device);
  for (size_t r = 0; r < grad_rows.size(); ++r) {
    check_like(grad_rows.get(r), op, "each row gradient", like.sizes(), dtype, device,
               "the saved rows'");
  }
  for (size_t s = 0; s < grad_state.size(); ++s) {
    check_like(grad_state.get(s), op, "each state gradient (one step of a row)",
               like.sizes().slice(1), dtype, device, "the saved rows'");
    check_like(initial.get(s), op, "each initial state (one step of a row)", like.sizes().slice(1),
               dtype, device, "the saved rows'");
  }
  check_like(input, op, "input", like.sizes(), dtype, device, "the saved rows'");
  TORCH_CHECK(!input_needed || input.has_value(), op, ": this gradient needs the forward's input");
}

namespace {

// Lanes per block. Each time step of a block reads and writes runs of kCpuBlock contiguous
// elements per tensor: long enough for the hardware prefetcher (rows are `lanes` apart, so short runs
// mean a new page per step: 64 lanes ran ~3x slower than 1024 at T=128, 10^5 lanes), while the
// block's per-lane arrays (~10 x kCpuBlock x 4-8 bytes in the backward) stay in L2.
constexpr int kCpuBlock = 1024;

int64_t cpu_grain(int64_t T) {
  // Enough blocks per task that a task moves at least ~32K elements (at::internal::GRAIN_SIZE, what
  // torch's own elementwise kernels use): a T = 1 call on 10^5 lanes is then split over the threads
  // (with 256K it ran on one).
  return std::max<int64_t>(1, (int64_t{1} << 15) / (std::max<int64_t>(T, 1) * kCpuBlock));
}

// The neuron constants as the CPU lane loops read them (see LaneConstant in the math header):
// tiled, tiled[i] = c[i % H] for every index a block reads (i < lanes and i < H + kCpuBlock - 1),
// so that each block's constants are one contiguous run. Built once per call, H + kCpuBlock values
// per constant; where the lanes do not wrap around (lanes <= H) the [H] array itself.
template <typename acc_t>
class TiledConstants {
 public:
  // The arguments of one call with their constants tiled.
  template <typename Args>
  Args operator()(Args a) {
    tile_model(a);
    return a;
  }

 private:
  std::vector<acc_t> storage_[kMaxConstants];  // one slot per constant

  static size_t length(int64_t H, int64_t lanes) {
    return static_cast<size_t>(std::min<int64_t>(lanes, H + kCpuBlock - 1));
  }
  const acc_t* tile(const acc_t* c, int64_t H, int64_t lanes, int slot) {
    if (lanes <= H) return c;
    std::vector<acc_t>& out = storage_[slot];
    out.resize(length(H, lanes));
    // Whole copies of c, then a partial one (a division per value cost more than the call).
    for (size_t i = 0; i < out.size(); i += static_cast<size_t>(H)) {
      std::copy_n(c, std::min<size_t>(static_cast<size_t>(H), out.size() - i), out.data() + i);
    }
    return out.data();
  }
  template <typename Args>
  void tile_model(Args& a) {
    for (int q = 0; q < kMaxConstants; ++q) {
      if (a.constants[q] != nullptr) a.constants[q] = tile(a.constants[q], a.H, a.lanes, q);
    }
  }
};

// Calls lanes_fn(lane0, n) for every block of kCpuBlock lanes (the last one partial), blocks
// spread over the intra-op threads.
template <typename LanesFn>
void for_each_block(int64_t lanes, int64_t T, const LanesFn& lanes_fn) {
  const int64_t blocks = (lanes + kCpuBlock - 1) / kCpuBlock;
  at::parallel_for(0, blocks, cpu_grain(T), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t lane0 = b * kCpuBlock;
      lanes_fn(lane0, static_cast<int>(std::min<int64_t>(kCpuBlock, lanes - lane0)));
    }
  });
}

// While set, the CPU kernels run the GPU's flavour of the lane loops: one lane at a time (kBlock =
// 1), each chunk's loads staged in values as a GPU thread stages them in registers (see the math
// header). Slower; for the tests, which so check the staging that only the GPU would otherwise run.
std::atomic<bool> g_gpu_lane_loops{false};

bool set_gpu_lane_loops(bool enabled) { return g_gpu_lane_loops.exchange(enabled); }

// Calls lanes_fn(lane0, n) for every block of kCpuBlock lanes as for_each_block does, or, with
// g_gpu_lane_loops, lane_fn(lane) for every lane.
template <typename BlockFn, typename LaneFn>
void for_each_block_or_lane(int64_t lanes, int64_t T, const BlockFn& block_fn,
                            const LaneFn& lane_fn) {
  if (!g_gpu_lane_loops.load(std::memory_order_relaxed)) {
    for_each_block(lanes, T, block_fn);
    return;
  }
  at::parallel_for(0, lanes, cpu_grain(T) * kCpuBlock, [&](int64_t begin, int64_t end) {
    for (int64_t lane = begin; lane < end; ++lane) lane_fn(lane);
  });
}

struct CpuLaunch {
  NoDeviceGuard device_guard(const at::Device&) const { return {}; }
};

// Any model of the generic interface (neuron_fwd / neuron_bwd; LIF's lif_fwd / lif_bwd and the
// graded neuron's spiking_recurrence_fwd / _bwd too).
struct ModelForwardCpu : CpuLaunch {
  template <typename scalar_t, typename acc_t, class Model>
  void operator()(const NeuronForwardArgs<scalar_t, acc_t>& given, ModelTag<Model>) const {
    TiledConstants<acc_t> tiled;
    const auto args = tiled(given);
    for_each_block_or_lane(
        args.lanes, args.T,
        [&](int64_t lane0, int n) { neuron_forward_lanes<kCpuBlock, Model>(args, lane0, n); },
        [&](int64_t lane) { neuron_forward_lanes<1, Model>(args, lane, 1); });
  }
};

struct ModelBackwardCpu : CpuLaunch {
  template <typename scalar_t, typename acc_t, class Model, int kSurrogate>
  void operator()(const NeuronBackwardArgs<scalar_t, acc_t>& given, ModelTag<Model>,
                  IntConstant<kSurrogate>) const {
    TiledConstants<acc_t> tiled;
    const auto args = tiled(given);
    for_each_block_or_lane(
        args.lanes, args.T,
        [&](int64_t lane0, int n) {
          neuron_backward_lanes<kCpuBlock, Model, kSurrogate>(args, lane0, n);
        },
        [&](int64_t lane) { neuron_backward_lanes<1, Model, kSurrogate>(args, lane, 1); });
  }
};

struct LifForwardCpu : CpuLaunch {
  template <typename scalar_t, typename acc_t, int kConv, int kReset>
  void operator()(const NeuronForwardArgs<scalar_t, acc_t>& args, IntConstant<kConv>,
                  IntConstant<kReset>) const {
    ModelForwardCpu{}(args, ModelTag<LifModel<kConv, kReset>>{});
  }
};

struct LifBackwardCpu : CpuLaunch {
  template <typename scalar_t, typename acc_t, int kConv, int kReset, int kSurrogate>
  void operator()(const NeuronBackwardArgs<scalar_t, acc_t>& args, IntConstant<kConv>,
                  IntConstant<kReset>, IntConstant<kSurrogate> s) const {
    ModelBackwardCpu{}(args, ModelTag<LifModel<kConv, kReset>>{}, s);
  }
};

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> neuron_fwd_cpu(
    c10::string_view model, c10::string_view reset, const at::Tensor& input,
    const c10::List<c10::optional<at::Tensor>>& initial, at::TensorList constants, int64_t flags) {
  return run_neuron_forward(model, reset, input, initial, constants, flags, ModelForwardCpu{});
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> neuron_bwd_cpu(
    c10::string_view model, c10::string_view reset,
    const c10::List<c10::optional<at::Tensor>>& grad_rows,
    const c10::List<c10::optional<at::Tensor>>& grad_state, at::TensorList saved,
    const c10::List<c10::optional<at::Tensor>>& initial, const c10::optional<at::Tensor>& input,
    at::TensorList constants, int64_t flags, c10::string_view surrogate, double alpha,
    int64_t need_constants) {
  return run_neuron_backward(model, reset, grad_rows, grad_state, saved, initial, input,
                             constants, flags, surrogate, alpha, need_constants,
                             ModelBackwardCpu{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_fwd_cpu(const at::Tensor& input,
                                               const c10::optional<at::Tensor>& initial,
                                               const at::Tensor& decay, const at::Tensor& threshold,
                                               const at::Tensor& reset_value,
                                               c10::string_view convention, c10::string_view reset,
                                               bool decay_input) {
  return run_lif_forward(input, initial, decay, threshold, reset_value, convention, reset,
                         decay_input, LifForwardCpu{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_bwd_cpu(
    const c10::optional<at::Tensor>& grad_spikes, const c10::optional<at::Tensor>& grad_membrane,
    const c10::optional<at::Tensor>& grad_state, const at::Tensor& membrane, const c10::optional<at::Tensor>& initial,
    const c10::optional<at::Tensor>& input, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& reset_value, c10::string_view convention, c10::string_view reset,
    bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool need_decay, bool need_threshold) {
  return run_lif_backward(grad_spikes, grad_membrane, grad_state, membrane, initial, input, decay,
                          threshold, reset_value, convention, reset, decay_input, detach_reset,
                          surrogate, alpha, need_decay, need_threshold, LifBackwardCpu{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_fwd_cpu(
    const at::Tensor& excitation, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& penalty, c10::string_view reset, bool delay,
    const c10::optional<at::Tensor>& initial) {
  return run_forward(excitation, decay, threshold, penalty, reset, delay, initial, ModelForwardCpu{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_bwd_cpu(
    const c10::optional<at::Tensor>& grad_states, const c10::optional<at::Tensor>& grad_outputs,
    const at::Tensor& gates, const c10::optional<at::Tensor>& states,
    const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
    const at::Tensor& threshold, const at::Tensor& penalty, at::IntArrayRef shape,
    at::ScalarType dtype, c10::string_view reset, bool delay, bool need_decay,
    bool need_threshold, bool need_penalty, const c10::optional<at::Tensor>& initial,
    bool need_initial) {
  return run_backward(grad_states, grad_outputs, gates, states, outputs, decay, threshold,
                      penalty, shape, dtype, reset, delay, need_decay, need_threshold,
                      need_penalty, initial, need_initial, ModelBackwardCpu{});
}

// ------------------------------------------------------------------------------------------------
// Uniform [0, 1) noise for the seed's input masks, counter-based: element i of a call seeded with s
// is a function of (s, i) alone -- from SplitMix64's output for state s + (i + 1) * gamma -- so the
// numbers do not depend on how the elements are split over threads, and every thread draws its
// part at once (torch.rand on the CPU runs one Mersenne Twister on one thread: ~8 ns a number, which
// was most of a training step at the seed's shape). The top bits become the value: 24 for float32,
// 53 for float64, 11 for float16, 8 for bfloat16, so that it is < 1 in the target type.

inline uint64_t splitmix64(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + (counter + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// float64 takes one hash per element (53 bits); the narrower types two elements per hash (elements
// 2k and 2k + 1 from hash k: its top kBits and the kBits below them).
// With a factor (one row of out.numel() / rows elements, repeated over out's rows), each number is
// then multiplied by the factor's element, as torch's mul would do it (in float for the half types,
// rounded once): the seed's input encoding, mask * image, in the same pass.
// Element i's factor is factor[i % row]; the loops carry j = i % row along instead of dividing.
template <typename scalar_t>
inline scalar_t scaled(scalar_t value, const scalar_t* factor, int64_t& j, int64_t row) {
  if (factor == nullptr) return value;
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t result = static_cast<scalar_t>(static_cast<acc_t>(value) * static_cast<acc_t>(factor[j]));
  if (++j == row) j = 0;
  return result;
}

template <typename scalar_t, int kBits>
void fill_uniform(scalar_t* out, int64_t n, uint64_t seed, const scalar_t* factor, int64_t row) {
  if (kBits > 32) {
    at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
      int64_t j = begin % row;
      for (int64_t i = begin; i < end; ++i) {
        const uint64_t bits = splitmix64(seed, static_cast<uint64_t>(i)) >> (64 - kBits);
        const scalar_t u = static_cast<scalar_t>(static_cast<double>(bits) * (1.0 / double(uint64_t{1} << kBits)));
        out[i] = scaled(u, factor, j, row);
      }
    });
    return;
  }
  const float scale = 1.0f / static_cast<float>(uint64_t{1} << kBits);
  constexpr uint64_t kMask = (uint64_t{1} << kBits) - 1;
  const int64_t pairs = (n + 1) / 2;
  at::parallel_for(0, pairs, int64_t{1} << 15, [&](int64_t begin, int64_t end) {
    int64_t j = (2 * begin) % row;
    for (int64_t k = begin; k < end; ++k) {
      const uint64_t z = splitmix64(seed, static_cast<uint64_t>(k));
      const scalar_t u0 = static_cast<scalar_t>(static_cast<float>(z >> (64 - kBits)) * scale);
      out[2 * k] = scaled(u0, factor, j, row);
      if (2 * k + 1 < n) {
        const scalar_t u1 =
            static_cast<scalar_t>(static_cast<float>((z >> (64 - 2 * kBits)) & kMask) * scale);
        out[2 * k + 1] = scaled(u1, factor, j, row);
      }
    }
  });
}

at::Tensor& uniform_noise_cpu(at::Tensor& out, int64_t seed, const c10::optional<at::Tensor>& factor) {
  TORCH_CHECK(out.is_contiguous(), "uniform_noise_: out must be contiguous");
  const uint64_t s = static_cast<uint64_t>(seed);
  const int64_t n = out.numel();
  at::Tensor f;
  int64_t row = 1;
  if (factor.has_value()) {
    TORCH_CHECK(out.dim() >= 1 && factor->sizes() == out.sizes().slice(1),
                "uniform_noise_: factor must have out's shape without its first dim, ",
                out.sizes().slice(1), ", got ", factor->sizes());
    TORCH_CHECK(factor->scalar_type() == out.scalar_type() && factor->device() == out.device(),
                "uniform_noise_: factor must have out's dtype and device");
    f = factor->contiguous();
    row = std::max<int64_t>(f.numel(), 1);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "uniform_noise_", [&] {
    const scalar_t* fp = f.defined() ? f.data_ptr<scalar_t>() : nullptr;
    if (std::is_same<scalar_t, double>::value) {
      fill_uniform<scalar_t, 53>(out.data_ptr<scalar_t>(), n, s, fp, row);
    } else if (std::is_same<scalar_t, float>::value) {
      fill_uniform<scalar_t, 24>(out.data_ptr<scalar_t>(), n, s, fp, row);
    } else if (std::is_same<scalar_t, at::Half>::value) {
      fill_uniform<scalar_t, 11>(out.data_ptr<scalar_t>(), n, s, fp, row);
    } else {
      fill_uniform<scalar_t, 8>(out.data_ptr<scalar_t>(), n, s, fp, row);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(snn_cuda, m) {
  // excitation: [T, *batch, H]; decay/threshold/penalty: [H] in the accumulation dtype.
  // Returns states and outputs shaped like excitation, and the gates bit-packed over time,
  // uint8 [ceil(T / 8), lanes] with lanes = numel / T.
  // initial: the state v_{-1} before step 0, [*batch, H], or None (zeros); only with delay=False.
  m.def(
      "spiking_recurrence_fwd(Tensor excitation, Tensor decay, Tensor threshold, Tensor penalty, "
      "str reset, bool delay, Tensor? initial=None) -> (Tensor states, Tensor outputs, "
      "Tensor gates)");
  // Grads are optional (None = zero). shape and dtype are the excitation's; the device is the
  // gates'. states are needed for the decay gradient, outputs for the threshold and penalty
  // gradients of the proportional reset. Parameter gradients come back as [H] tensors in the
  // accumulation dtype, zeros for those not asked for. initial (the forward's, read only for the
  // decay gradient) and need_initial: grad_initial [*batch, H] when asked for, else empty.
  m.def(
      "spiking_recurrence_bwd(Tensor? grad_states, Tensor? grad_outputs, Tensor gates, "
      "Tensor? states, Tensor? outputs, Tensor decay, Tensor threshold, Tensor penalty, "
      "SymInt[] shape, ScalarType dtype, str reset, bool delay, bool need_decay, bool need_threshold, "
      "bool need_penalty, Tensor? initial=None, bool need_initial=False) -> (Tensor grad_excitation, "
      "Tensor grad_decay, Tensor grad_threshold, Tensor grad_penalty, Tensor grad_initial)");
  // Binary spikes (see the math header). input: [T, *batch, H]; initial: [*batch, H] or None
  // (zeros); decay (beta or tau), threshold, reset_value: [H] in the accumulation dtype.
  // convention: "snntorch" | "snntorch_now" (Leaky with reset_delay=False) | "spikingjelly" |
  // "spikingjelly_if" (IFNode: decay is not read) | "spikingjelly_plif" (ParametricLIFNode: decay
  // is the rate sigmoid(w)); reset: "subtract" | "hard" | "none" (snntorch and snntorch_now only).
  // Returns spikes (0/1 in input's dtype), the membrane (snnTorch: m_t; snntorch_now: m~_t after
  // the reset; SpikingJelly: h_t before reset) and the state carried past the last step,
  // [*batch, H] (snnTorch: m_{T-1}; snntorch_now: m~_{T-1}; SpikingJelly: v_{T-1} after its
  // reset; the initial state, or zeros, when T = 0).
  m.def(
      "lif_fwd(Tensor input, Tensor? initial, Tensor decay, Tensor threshold, Tensor reset_value, "
      "str convention, str reset, bool decay_input) -> (Tensor spikes, Tensor membrane, "
      "Tensor state)");
  // Grads are optional (None = zero). input is read by "snntorch_now" and for tau's gradient
  // with decay_input.
  // surrogate: "fast_sigmoid" | "super_spike" | "atan" | "sigmoid", alpha its scale. Returns
  // (grad_input, grad_initial [*batch, H], grad_decay [H], grad_threshold [H]), zeros where not
  // asked for.
  m.def(
      "lif_bwd(Tensor? grad_spikes, Tensor? grad_membrane, Tensor? grad_state, Tensor membrane, "
      "Tensor? initial, "
      "Tensor? input, Tensor decay, Tensor threshold, Tensor reset_value, str convention, "
      "str reset, bool decay_input, bool detach_reset, str surrogate, float alpha, bool need_decay, "
      "bool need_threshold) -> (Tensor grad_input, Tensor grad_initial, Tensor grad_decay, "
      "Tensor grad_threshold)");
  // Any model of the generic neuron interface (docs/design-neuron-interface.md), by name:
  // "snntorch_synaptic", "snntorch_rleaky", "snntorch_rsynaptic" (reset "subtract" | "zero" |
  // "none"), "norse_lif" ("hard"), "norse_li" ("none"), "norse_lsnn" ("hard"), "alif"
  // ("subtract"). input: [T, *batch, H]; initial: one
  // entry per state, [*batch, H] or None (zeros); constants: the model's, [H] each in the
  // accumulation dtype; flags: NeuronFlag bits. Returns the rows written per step ([T, *batch, H]
  // each) and the states after the last step ([*batch, H] each; the initial ones when T = 0).
  // snntorch_synaptic: constants (alpha, beta, threshold), states (syn, mem), rows (spikes, syn,
  // mem). norse_lif: constants (dt * tau_mem_inv, -dt * tau_syn_inv, v_leak, v_th, v_reset), states
  // (v, i), rows (spikes, v, i). norse_li: constants (the first three), states and rows (v, i).
  // norse_lsnn: constants (dt * tau_mem_inv, -dt * tau_syn_inv, dt * tau_adapt_inv, v_leak, v_th,
  // v_reset, beta), states (v, i, b), rows (spikes, v, i, b). snntorch_rleaky: constants (beta,
  // V, threshold), states (spk, mem), rows (spikes, mem). snntorch_rsynaptic: constants (alpha,
  // beta, V, threshold), states (spk, syn, mem), rows (spikes, syn, mem). alif: constants (alpha,
  // rho, beta, threshold), states (v, a, z), rows (spikes, v, a).
  m.def(
      "neuron_fwd(str model, str reset, Tensor input, Tensor?[] initial, Tensor[] constants, "
      "int flags) -> (Tensor[] rows, Tensor[] state)");
  // Grads are optional (None = zero), one per row and one per state; saved: per state the row the
  // forward wrote for it (snntorch_synaptic: rows syn and mem; norse_lif/li: rows v and i;
  // norse_lsnn: rows v, i and b; snntorch_rleaky: rows spikes and mem; snntorch_rsynaptic: rows
  // spikes, syn and mem; alif: rows v, a and spikes); input: the forward's, needed by norse_lif,
  // norse_li and alif (None otherwise); initial as the forward's;
  // need_constants: bit q asks for constant q's gradient. Returns (grad_input, per state the
  // gradient of its initial value, per constant its gradient [H]), zeros where not asked for.
  m.def(
      "neuron_bwd(str model, str reset, Tensor?[] grad_rows, Tensor?[] grad_state, "
      "Tensor[] saved, Tensor?[] initial, Tensor? input, Tensor[] constants, int flags, "
      "str surrogate, float alpha, int need_constants) -> (Tensor grad_input, "
      "Tensor[] grad_initial, Tensor[] grad_constants)");
  // Tests only: the CPU kernels run the GPU's one-lane flavour of the loops while enabled. Returns
  // the previous setting. (snn_cuda.ops.gpu_lane_loops() is the context manager.)
  m.def("_set_gpu_lane_loops(bool enabled) -> bool", &set_gpu_lane_loops);
  // Fills out (contiguous, CPU) with uniform [0, 1) numbers, a function of (seed, index) alone,
  // times factor (out's shape without its first dim, repeated over it) when given.
  m.def("uniform_noise_(Tensor(a!) out, int seed, Tensor? factor=None) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(snn_cuda, CPU, m) {
  m.impl("spiking_recurrence_fwd", &spiking_recurrence_fwd_cpu);
  m.impl("spiking_recurrence_bwd", &spiking_recurrence_bwd_cpu);
  m.impl("lif_fwd", &lif_fwd_cpu);
  m.impl("lif_bwd", &lif_bwd_cpu);
  m.impl("neuron_fwd", &neuron_fwd_cpu);
  m.impl("neuron_bwd", &neuron_bwd_cpu);
  m.impl("uniform_noise_", &uniform_noise_cpu);
}

}  // namespace snn_cuda
