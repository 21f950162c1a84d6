// Operator schemas, input validation shared by every backend, and the CPU kernels.
#include "spiking_recurrence_ops.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>

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
                        at::ScalarType dtype, const at::Device& device) {
  const auto acc = at::toOpMathType(dtype);
  TORCH_CHECK(param.dim() == 1 && param.size(0) == H, "spiking_recurrence: ", name,
              " must have shape [H] = [", H, "] (the last dim of excitation), got shape ",
              param.sizes());
  TORCH_CHECK(param.scalar_type() == acc, "spiking_recurrence: ", name, " must have dtype ", acc,
              " (the accumulation type of excitation's ", dtype, "), got ", param.scalar_type());
  TORCH_CHECK(param.device() == device, "spiking_recurrence: ", name, " must be on device ",
              device, " (excitation's), got ", param.device());
}

static void check_excitation(at::IntArrayRef shape, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(shape.size() >= 2, "spiking_recurrence: ", name,
              " must have shape [T, *batch, H] (at least 2 dims), got shape ", shape);
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "spiking_recurrence: ", name,
              " must be float64, float32, float16 or bfloat16, got ", dtype);
}

static void check_params(const at::Tensor& decay, const at::Tensor& threshold,
                         const at::Tensor& penalty, int64_t H, at::ScalarType dtype,
                         const at::Device& device) {
  check_param(decay, "decay_multiplier", H, dtype, device);
  check_param(threshold, "threshold", H, dtype, device);
  check_param(penalty, "penalty_threshold", H, dtype, device);
}

void check_forward_inputs(const at::Tensor& excitation, const at::Tensor& decay,
                          const at::Tensor& threshold, const at::Tensor& penalty) {
  check_excitation(excitation.sizes(), excitation.scalar_type(), "excitation");
  check_params(decay, threshold, penalty, excitation.size(-1), excitation.scalar_type(),
               excitation.device());
}

void check_backward_inputs(const c10::optional<at::Tensor>& grad_states,
                           const c10::optional<at::Tensor>& grad_outputs, const at::Tensor& gates,
                           const c10::optional<at::Tensor>& states,
                           const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
                           const at::Tensor& threshold, const at::Tensor& penalty,
                           at::IntArrayRef shape, at::ScalarType dtype, bool need_decay,
                           bool need_threshold, bool need_penalty, int reset) {
  check_excitation(shape, dtype, "shape/dtype");
  const auto device = gates.device();
  check_params(decay, threshold, penalty, shape.back(), dtype, device);
  const int64_t T = shape[0];
  const int64_t lanes = c10::multiply_integers(shape.begin() + 1, shape.end());
  auto check_like = [&](const c10::optional<at::Tensor>& t, const char* name) {
    if (!t.has_value()) return;
    TORCH_CHECK(t->sizes() == shape, "spiking_recurrence_bwd: ", name, " must have shape ", shape,
                ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == dtype, "spiking_recurrence_bwd: ", name, " must have dtype ",
                dtype, ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == device, "spiking_recurrence_bwd: ", name,
                " must be on the gates' device ", device, ", got ", t->device());
  };
  check_like(grad_states, "grad_states");
  check_like(grad_outputs, "grad_outputs");
  check_like(states, "states");
  check_like(outputs, "outputs");
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

namespace {

// Lanes per block. Each time step of a block reads and writes runs of kCpuBlock contiguous
// elements per tensor: long enough for the hardware prefetcher (rows are `lanes` apart, so short runs
// mean a new page per step: 64 lanes ran ~3x slower than 1024 at T=128, 10^5 lanes), while the
// block's per-lane arrays (~10 x kCpuBlock x 4-8 bytes in the backward) stay in L2.
constexpr int kCpuBlock = 1024;

int64_t cpu_grain(int64_t T) {
  // Enough blocks per task that a task moves at least ~256K elements.
  return std::max<int64_t>(1, (int64_t{1} << 18) / (std::max<int64_t>(T, 1) * kCpuBlock));
}

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

struct ForwardCpu {
  template <typename scalar_t, typename acc_t, int kReset>
  void operator()(const ForwardArgs<scalar_t, acc_t>& args,
                  std::integral_constant<int, kReset>) const {
    for_each_block(args.lanes, args.T, [&](int64_t lane0, int n) {
      lif_forward_lanes<kCpuBlock, kReset>(args, lane0, n);
    });
  }
};

struct BackwardCpu {
  template <typename scalar_t, typename acc_t, int kReset>
  void operator()(const BackwardArgs<scalar_t, acc_t>& args,
                  std::integral_constant<int, kReset>) const {
    for_each_block(args.lanes, args.T, [&](int64_t lane0, int n) {
      lif_backward_lanes<kCpuBlock, kReset>(args, lane0, n);
    });
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_fwd_cpu(
    const at::Tensor& excitation, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& penalty, c10::string_view reset, bool delay) {
  return run_forward(excitation, decay, threshold, penalty, reset, delay, ForwardCpu{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_bwd_cpu(
    const c10::optional<at::Tensor>& grad_states, const c10::optional<at::Tensor>& grad_outputs,
    const at::Tensor& gates, const c10::optional<at::Tensor>& states,
    const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
    const at::Tensor& threshold, const at::Tensor& penalty, at::IntArrayRef shape,
    at::ScalarType dtype, c10::string_view reset, bool delay, bool need_decay,
    bool need_threshold, bool need_penalty) {
  return run_backward(grad_states, grad_outputs, gates, states, outputs, decay, threshold,
                      penalty, shape, dtype, reset, delay, need_decay, need_threshold,
                      need_penalty, BackwardCpu{});
}

}  // namespace

TORCH_LIBRARY(snn_cuda, m) {
  // excitation: [T, *batch, H]; decay/threshold/penalty: [H] in the accumulation dtype.
  // Returns states and outputs shaped like excitation, and the gates bit-packed over time,
  // uint8 [ceil(T / 8), lanes] with lanes = numel / T.
  m.def(
      "spiking_recurrence_fwd(Tensor excitation, Tensor decay, Tensor threshold, Tensor penalty, "
      "str reset, bool delay) -> (Tensor states, Tensor outputs, Tensor gates)");
  // Grads are optional (None = zero). shape and dtype are the excitation's; the device is the
  // gates'. states are needed for the decay gradient, outputs for the threshold and penalty
  // gradients of the proportional reset. Parameter gradients come back as [H] tensors in the
  // accumulation dtype, zeros for those not asked for.
  m.def(
      "spiking_recurrence_bwd(Tensor? grad_states, Tensor? grad_outputs, Tensor gates, "
      "Tensor? states, Tensor? outputs, Tensor decay, Tensor threshold, Tensor penalty, "
      "SymInt[] shape, ScalarType dtype, str reset, bool delay, bool need_decay, bool need_threshold, "
      "bool need_penalty) -> (Tensor grad_excitation, Tensor grad_decay, Tensor grad_threshold, "
      "Tensor grad_penalty)");
}

TORCH_LIBRARY_IMPL(snn_cuda, CPU, m) {
  m.impl("spiking_recurrence_fwd", &spiking_recurrence_fwd_cpu);
  m.impl("spiking_recurrence_bwd", &spiking_recurrence_bwd_cpu);
}

}  // namespace snn_cuda
