// The per-lane math of the spiking recurrence, shared by the CPU and the CUDA kernels.
//
// A "lane" is one neuron of one batch element. Every tensor the kernels touch is laid out
// [T, lanes] (time-major, lanes contiguous), so that one time step of neighbouring lanes is one
// contiguous run of memory: coalesced loads on the GPU, vector loads on the CPU. All offsets are
// 64-bit. The spike gates are packed one bit per step: byte [t / 8, lane] holds bit (t % 8).
//
// Everything below is host+device code. The CPU kernel calls the lane-block loops with blocks of
// kCpuBlock lanes; the CUDA kernel calls the very same loops with a block of one lane per thread.
// So every CPU test also exercises the arithmetic, the indexing and the gate packing that the GPU
// runs; the CUDA file only adds the launch.
//
// Equations (per lane; v_{-1} = 0, I_t the input excitation):
//   u_t = I_t + decay * v_{t-1}
//   o_t = relu(u_t - threshold)            g_t = [u_t > threshold] (a constant for autograd)
//   proportional: v_t = u_t - (penalty / threshold) * u_t * g_t
//   subtract:     v_t = u_t - (penalty + o_t) * g_t
//   delay = true returns (v_{t-1}, o_{t-1}) in row t (zeros in row 0), delay = false (v_t, o_t).
// The arithmetic is written in the same order as the reference loop (snn_cuda/reference.py) so that
// float64 results agree to rounding, and NaN/inf propagate the way they do through the reference.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace snn_cuda {

enum ResetMode : int { kResetProportional = 0, kResetSubtract = 1 };

// The neuron's constants, already in the accumulation type (float for half/bfloat16).
template <typename acc_t>
struct NeuronParams {
  acc_t decay;
  acc_t threshold;
  acc_t penalty;
  acc_t ratio;  // penalty / threshold, computed once per lane as the reference computes it once
};

template <typename acc_t>
C10_HOST_DEVICE inline NeuronParams<acc_t> make_neuron_params(acc_t decay, acc_t threshold,
                                                              acc_t penalty) {
  return {decay, threshold, penalty, penalty / threshold};
}

// One forward step of one lane: v is v_{t-1} on entry and v_t on return; o = o_t; fired = g_t (0/1).
// Branch-free, so that the CPU's lane loop vectorises.
template <int kReset, typename acc_t>
C10_HOST_DEVICE inline void lif_fwd_step(acc_t input, const NeuronParams<acc_t>& p, acc_t& v,
                                         acc_t& o, uint32_t& fired) {
  const acc_t u = input + v * p.decay;
  const acc_t x = u - p.threshold;
  fired = x > acc_t(0) ? 1u : 0u;
  // relu that lets NaN through, as torch.relu does.
  o = x < acc_t(0) ? acc_t(0) : x;
  const acc_t g = static_cast<acc_t>(fired);
  if (kReset == kResetProportional) {
    v = u - (p.ratio * u) * g;
  } else {
    v = u - (p.penalty + o) * g;
  }
}

// One backward step of one lane.
//   grad_v: dL/dv_t, everything that reaches v_t (its own output row and the next step);
//   grad_o: dL/do_t;
//   u:      u_t, only read by the proportional reset's parameter gradients (pass 0 otherwise).
// Returns dL/du_t (= dL/dI_t); adds this step's terms of dL/dthreshold and dL/dpenalty.
template <int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t lif_bwd_step(acc_t grad_v, acc_t grad_o, uint32_t fired, acc_t u,
                                          const NeuronParams<acc_t>& p, acc_t& grad_threshold,
                                          acc_t& grad_penalty) {
  const acc_t g = static_cast<acc_t>(fired);
  // relu'(x) = [x > 0] = g (relu'(0) = 0, as in torch).
  if (kReset == kResetProportional) {
    // v = u - ratio * u * g, ratio = penalty / threshold.
    const acc_t grad_ratio = -(grad_v * u * g);
    grad_threshold += -(grad_o * g) - grad_ratio * p.ratio / p.threshold;
    grad_penalty += grad_ratio / p.threshold;
    return grad_v * (acc_t(1) - p.ratio * g) + grad_o * g;
  } else {
    // v = u - (penalty + relu(u - threshold)) * g: once fired, v no longer depends on u.
    grad_threshold += (grad_v - grad_o) * g;
    grad_penalty += -(grad_v * g);
    return grad_v * (acc_t(1) - g) + grad_o * g;
  }
}

// Pointers of one forward call. All strides are in elements; tensors are [T, lanes] unless noted.
template <typename scalar_t, typename acc_t>
struct ForwardArgs {
  const scalar_t* excitation;
  scalar_t* states;
  scalar_t* outputs;
  uint8_t* gates;  // [ceil(T / 8), lanes], one bit per step
  const acc_t* decay;      // [H]
  const acc_t* threshold;  // [H]
  const acc_t* penalty;    // [H]
  int64_t T;
  int64_t lanes;
  int64_t H;
  bool delay;
};

// Pointers of one backward call. Nullable pointers are marked; a null grad means a zero grad.
template <typename scalar_t, typename acc_t>
struct BackwardArgs {
  const scalar_t* grad_states;   // nullable
  const scalar_t* grad_outputs;  // nullable
  const uint8_t* gates;          // [ceil(T / 8), lanes]
  const scalar_t* states;        // nullable; read only for the decay gradient
  const scalar_t* outputs;       // nullable; read only for the proportional reset's parameter grads
  const acc_t* decay;            // [H]
  const acc_t* threshold;        // [H]
  const acc_t* penalty;          // [H]
  scalar_t* grad_excitation;
  acc_t* grad_decay;      // [lanes], nullable: per-lane sums over time
  acc_t* grad_threshold;  // [lanes], nullable
  acc_t* grad_penalty;    // [lanes], nullable
  int64_t T;
  int64_t lanes;
  int64_t H;
  bool delay;
};

// The constants of a block of lanes, one array per constant (structure of arrays, so that the
// CPU's vector loads of lanes j..j+3 are contiguous). params[j] gives lane j's NeuronParams.
template <int kBlock, typename acc_t>
struct LaneParams {
  acc_t decay[kBlock];
  acc_t threshold[kBlock];
  acc_t penalty[kBlock];
  acc_t ratio[kBlock];

  C10_HOST_DEVICE inline void load(const acc_t* d, const acc_t* t, const acc_t* p, int64_t H,
                                   int64_t lane0, int n) {
    for (int j = 0; j < n; ++j) {
      const int64_t h = (lane0 + j) % H;
      const NeuronParams<acc_t> np = make_neuron_params(d[h], t[h], p[h]);
      decay[j] = np.decay;
      threshold[j] = np.threshold;
      penalty[j] = np.penalty;
      ratio[j] = np.ratio;
    }
  }

  C10_HOST_DEVICE inline NeuronParams<acc_t> operator[](int j) const {
    return {decay[j], threshold[j], penalty[j], ratio[j]};
  }
};

// The loops below keep per-lane state in small arrays and split each time step into simple loops
// over the block's lanes, each free of branches inside (conditions depend on t only), so that the
// CPU compiler vectorises them; on the GPU kBlock = 1 and the arrays are registers.

// Runs the forward recurrence of lanes [lane0, lane0 + n), n <= kBlock, over all T steps.
template <int kBlock, int kReset, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void lif_forward_lanes(const ForwardArgs<scalar_t, acc_t>& a,
                                              int64_t lane0, int n) {
  LaneParams<kBlock, acc_t> params;
  acc_t v[kBlock];
  uint32_t bits[kBlock];
  params.load(a.decay, a.threshold, a.penalty, a.H, lane0, n);
  for (int j = 0; j < n; ++j) {
    v[j] = acc_t(0);
    bits[j] = 0;
  }
  const int64_t shift = a.delay ? 1 : 0;
  if (a.delay && a.T > 0) {
    // Row 0 of a delayed layer is the initial state: zeros.
    for (int j = 0; j < n; ++j) {
      a.states[lane0 + j] = scalar_t(0);
      a.outputs[lane0 + j] = scalar_t(0);
    }
  }
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = t + shift;
    const scalar_t* in = a.excitation + t * a.lanes + lane0;
    const int bit = static_cast<int>(t & 7);
    if (row < a.T) {
      scalar_t* st = a.states + row * a.lanes + lane0;
      scalar_t* out = a.outputs + row * a.lanes + lane0;
      for (int j = 0; j < n; ++j) {
        uint32_t fired;
        acc_t o;
        lif_fwd_step<kReset>(static_cast<acc_t>(in[j]), params[j], v[j], o, fired);
        bits[j] |= fired << bit;
        st[j] = static_cast<scalar_t>(v[j]);
        out[j] = static_cast<scalar_t>(o);
      }
    } else {  // the last step of a delayed layer: only its gate is kept
      for (int j = 0; j < n; ++j) {
        uint32_t fired;
        acc_t o;
        lif_fwd_step<kReset>(static_cast<acc_t>(in[j]), params[j], v[j], o, fired);
        bits[j] |= fired << bit;
      }
    }
    if (bit == 7 || t == a.T - 1) {
      uint8_t* gate_row = a.gates + (t >> 3) * a.lanes + lane0;
      for (int j = 0; j < n; ++j) {
        gate_row[j] = static_cast<uint8_t>(bits[j]);
        bits[j] = 0;
      }
    }
  }
}

// Runs the backward recurrence of lanes [lane0, lane0 + n), n <= kBlock, from t = T - 1 down to 0.
// One pass per step: a stream that is absent (no upstream gradient, a row that was never returned,
// a saved tensor that was not needed) reads a row of zeros instead, so the loop has no branches.
template <int kBlock, int kReset, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void lif_backward_lanes(const BackwardArgs<scalar_t, acc_t>& a,
                                               int64_t lane0, int n) {
  LaneParams<kBlock, acc_t> params;
  acc_t carry[kBlock];  // dL/dv_t that arrives through u_{t+1} = I_{t+1} + decay * v_t
  acc_t g_decay[kBlock];
  acc_t g_threshold[kBlock];
  acc_t g_penalty[kBlock];
  uint32_t bits[kBlock];
  scalar_t zeros[kBlock];
  params.load(a.decay, a.threshold, a.penalty, a.H, lane0, n);
  for (int j = 0; j < n; ++j) {
    carry[j] = acc_t(0);
    g_decay[j] = acc_t(0);
    g_threshold[j] = acc_t(0);
    g_penalty[j] = acc_t(0);
    zeros[j] = scalar_t(0);
  }
  const int64_t shift = a.delay ? 1 : 0;
  const bool need_u = kReset == kResetProportional && a.outputs != nullptr;
  for (int64_t t = a.T - 1; t >= 0; --t) {
    // (v_t, o_t) were returned in `row`; with delay the last step's were not returned at all.
    const int64_t row = t + shift;
    const bool returned = row < a.T;
    const int64_t row_off = row * a.lanes + lane0;
    // v_{t-1}: states row t with delay, row t - 1 without; v_{-1} = 0.
    const int64_t prev_row = t - 1 + shift;
    const int bit = static_cast<int>(t & 7);
    if (bit == 7 || t == a.T - 1) {
      const uint8_t* gate_row = a.gates + (t >> 3) * a.lanes + lane0;
      for (int j = 0; j < n; ++j) bits[j] = gate_row[j];
    }
    const scalar_t* gs = returned && a.grad_states != nullptr ? a.grad_states + row_off : zeros;
    const scalar_t* go = returned && a.grad_outputs != nullptr ? a.grad_outputs + row_off : zeros;
    // While fired, o_t = u_t - threshold, so u_t comes back from the returned output.
    const scalar_t* out = returned && need_u ? a.outputs + row_off : zeros;
    const scalar_t* v_prev = a.grad_decay != nullptr && prev_row >= 0
                                 ? a.states + prev_row * a.lanes + lane0
                                 : zeros;
    scalar_t* gx = a.grad_excitation + t * a.lanes + lane0;
    for (int j = 0; j < n; ++j) {
      const uint32_t fired = (bits[j] >> bit) & 1u;
      const acc_t u = static_cast<acc_t>(out[j]) + params.threshold[j];
      const acc_t grad_u =
          lif_bwd_step<kReset>(carry[j] + static_cast<acc_t>(gs[j]), static_cast<acc_t>(go[j]),
                               fired, u, params[j], g_threshold[j], g_penalty[j]);
      gx[j] = static_cast<scalar_t>(grad_u);
      carry[j] = grad_u * params.decay[j];
      g_decay[j] += grad_u * static_cast<acc_t>(v_prev[j]);
    }
  }
  for (int j = 0; j < n; ++j) {
    if (a.grad_decay != nullptr) a.grad_decay[lane0 + j] = g_decay[j];
    if (a.grad_threshold != nullptr) a.grad_threshold[lane0 + j] = g_threshold[j];
    if (a.grad_penalty != nullptr) a.grad_penalty[lane0 + j] = g_penalty[j];
  }
}

}  // namespace snn_cuda
