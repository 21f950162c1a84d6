// CUDA launch plumbing. The math, the time loop, the indexing and the gate packing all live in
// spiking_recurrence.h and are the same code the CPU kernel runs; here each thread takes one lane
// (a block of one), so each time step's loads and stores of a warp are one coalesced transaction.
#include "../spiking_recurrence_ops.h"

#include <limits>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace snn_cuda {
namespace {

constexpr int kThreads = 128;

// The seed's graded neuron (spiking_recurrence_fwd / _bwd); the kernels keep their names.
template <int kReset, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    lif_forward_kernel(const NeuronForwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane < args.lanes) neuron_forward_lanes<1, GradedNeuron<kReset>>(args, lane, 1);
}

template <int kReset, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    lif_backward_kernel(const NeuronBackwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // The model has no surrogate: one flavour.
  if (lane < args.lanes) {
    neuron_backward_lanes<1, GradedNeuron<kReset>, kSurrogateSigmoid>(args, lane, 1);
  }
}

template <int kConv, int kReset, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    lif_spike_forward_kernel(const NeuronForwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane < args.lanes) neuron_forward_lanes<1, LifModel<kConv, kReset>>(args, lane, 1);
}

template <int kConv, int kReset, int kSurrogate, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    lif_spike_backward_kernel(const NeuronBackwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane < args.lanes) {
    neuron_backward_lanes<1, LifModel<kConv, kReset>, kSurrogate>(args, lane, 1);
  }
}

// Any model of the generic interface (neuron_fwd / neuron_bwd).
template <class Model, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    neuron_forward_kernel(const NeuronForwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane < args.lanes) neuron_forward_lanes<1, Model>(args, lane, 1);
}

template <class Model, int kSurrogate, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    neuron_backward_kernel(const NeuronBackwardArgs<scalar_t, acc_t> args) {
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane < args.lanes) neuron_backward_lanes<1, Model, kSurrogate>(args, lane, 1);
}

unsigned int num_blocks(int64_t lanes) {
  const int64_t blocks = (lanes + kThreads - 1) / kThreads;
  // gridDim.x is at most 2^31 - 1: 2.7e11 lanes at 128 threads a block.
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "snn_cuda: ", lanes,
              " lanes need more CUDA blocks (", blocks, ") than a grid can hold");
  return static_cast<unsigned int>(blocks);
}

struct CudaLaunch {
  c10::cuda::CUDAGuard device_guard(const at::Device& device) const {
    return c10::cuda::CUDAGuard(device);
  }
};

struct ForwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, int kReset>
  void operator()(const NeuronForwardArgs<scalar_t, acc_t>& args,
                  ModelTag<GradedNeuron<kReset>>) const {
    lif_forward_kernel<kReset><<<num_blocks(args.lanes), kThreads, 0,
                                 c10::cuda::getCurrentCUDAStream()>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct BackwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, int kReset, int kSurrogate>
  void operator()(const NeuronBackwardArgs<scalar_t, acc_t>& args, ModelTag<GradedNeuron<kReset>>,
                  IntConstant<kSurrogate>) const {
    lif_backward_kernel<kReset><<<num_blocks(args.lanes), kThreads, 0,
                                  c10::cuda::getCurrentCUDAStream()>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct LifForwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, int kConv, int kReset>
  void operator()(const NeuronForwardArgs<scalar_t, acc_t>& args, IntConstant<kConv>,
                  IntConstant<kReset>) const {
    lif_spike_forward_kernel<kConv, kReset><<<num_blocks(args.lanes), kThreads, 0,
                                              c10::cuda::getCurrentCUDAStream()>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct LifBackwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, int kConv, int kReset, int kSurrogate>
  void operator()(const NeuronBackwardArgs<scalar_t, acc_t>& args, IntConstant<kConv>,
                  IntConstant<kReset>, IntConstant<kSurrogate>) const {
    lif_spike_backward_kernel<kConv, kReset, kSurrogate><<<num_blocks(args.lanes), kThreads, 0,
                                                           c10::cuda::getCurrentCUDAStream()>>>(
        args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct ModelForwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, class Model>
  void operator()(const NeuronForwardArgs<scalar_t, acc_t>& args, ModelTag<Model>) const {
    neuron_forward_kernel<Model><<<num_blocks(args.lanes), kThreads, 0,
                                   c10::cuda::getCurrentCUDAStream()>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct ModelBackwardCuda : CudaLaunch {
  template <typename scalar_t, typename acc_t, class Model, int kSurrogate>
  void operator()(const NeuronBackwardArgs<scalar_t, acc_t>& args, ModelTag<Model>,
                  IntConstant<kSurrogate>) const {
    neuron_backward_kernel<Model, kSurrogate><<<num_blocks(args.lanes), kThreads, 0,
                                                c10::cuda::getCurrentCUDAStream()>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> neuron_fwd_cuda(
    c10::string_view model, c10::string_view reset, const at::Tensor& input,
    const c10::List<c10::optional<at::Tensor>>& initial, at::TensorList constants, int64_t flags) {
  return run_neuron_forward(model, reset, input, initial, constants, flags, ModelForwardCuda{});
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> neuron_bwd_cuda(
    c10::string_view model, c10::string_view reset,
    const c10::List<c10::optional<at::Tensor>>& grad_rows,
    const c10::List<c10::optional<at::Tensor>>& grad_state, at::TensorList saved,
    const c10::List<c10::optional<at::Tensor>>& initial, const c10::optional<at::Tensor>& input,
    at::TensorList constants, int64_t flags, c10::string_view surrogate, double alpha,
    int64_t need_constants) {
  return run_neuron_backward(model, reset, grad_rows, grad_state, saved, initial, input,
                             constants, flags, surrogate, alpha, need_constants,
                             ModelBackwardCuda{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_fwd_cuda(const at::Tensor& input,
                                                const c10::optional<at::Tensor>& initial,
                                                const at::Tensor& decay,
                                                const at::Tensor& threshold,
                                                const at::Tensor& reset_value,
                                                c10::string_view convention,
                                                c10::string_view reset, bool decay_input) {
  return run_lif_forward(input, initial, decay, threshold, reset_value, convention, reset,
                         decay_input, LifForwardCuda{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_bwd_cuda(
    const c10::optional<at::Tensor>& grad_spikes, const c10::optional<at::Tensor>& grad_membrane,
    const c10::optional<at::Tensor>& grad_state, const at::Tensor& membrane, const c10::optional<at::Tensor>& initial,
    const c10::optional<at::Tensor>& input, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& reset_value, c10::string_view convention, c10::string_view reset,
    bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool need_decay, bool need_threshold) {
  return run_lif_backward(grad_spikes, grad_membrane, grad_state, membrane, initial, input, decay,
                          threshold, reset_value, convention, reset, decay_input, detach_reset,
                          surrogate, alpha, need_decay, need_threshold, LifBackwardCuda{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_fwd_cuda(
    const at::Tensor& excitation, const at::Tensor& decay, const at::Tensor& threshold,
    const at::Tensor& penalty, c10::string_view reset, bool delay,
    const c10::optional<at::Tensor>& initial) {
  return run_forward(excitation, decay, threshold, penalty, reset, delay, initial, ForwardCuda{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spiking_recurrence_bwd_cuda(
    const c10::optional<at::Tensor>& grad_states, const c10::optional<at::Tensor>& grad_outputs,
    const at::Tensor& gates, const c10::optional<at::Tensor>& states,
    const c10::optional<at::Tensor>& outputs, const at::Tensor& decay,
    const at::Tensor& threshold, const at::Tensor& penalty, at::IntArrayRef shape,
    at::ScalarType dtype, c10::string_view reset, bool delay, bool need_decay,
    bool need_threshold, bool need_penalty, const c10::optional<at::Tensor>& initial,
    bool need_initial) {
  return run_backward(grad_states, grad_outputs, gates, states, outputs, decay, threshold,
                      penalty, shape, dtype, reset, delay, need_decay, need_threshold,
                      need_penalty, initial, need_initial, BackwardCuda{});
}

}  // namespace

TORCH_LIBRARY_IMPL(snn_cuda, CUDA, m) {
  m.impl("spiking_recurrence_fwd", &spiking_recurrence_fwd_cuda);
  m.impl("spiking_recurrence_bwd", &spiking_recurrence_bwd_cuda);
  m.impl("lif_fwd", &lif_fwd_cuda);
  m.impl("lif_bwd", &lif_bwd_cuda);
  m.impl("neuron_fwd", &neuron_fwd_cuda);
  m.impl("neuron_bwd", &neuron_bwd_cuda);
}

}  // namespace snn_cuda
