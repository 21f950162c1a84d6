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
// Equations (per lane; v_{-1} = the initial state, 0 by default; I_t the input excitation):
//   u_t = I_t + decay * v_{t-1}
//   o_t = relu(u_t - threshold)            g_t = [u_t > threshold] (a constant for autograd)
//   proportional: v_t = u_t - (penalty / threshold) * u_t * g_t
//   subtract:     v_t = u_t - (penalty + o_t) * g_t
//   delay = true returns (v_{t-1}, o_{t-1}) in row t (zeros in row 0), delay = false (v_t, o_t).
// The arithmetic is written in the same order as the reference loop (snn_cuda/reference.py) so that
// float64 results agree to rounding, and NaN/inf propagate the way they do through the reference.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace snn_cuda {

enum ResetMode : int { kResetProportional = 0, kResetSubtract = 1 };

// The graded neuron's constants, already in the accumulation type (float for half/bfloat16).
template <typename acc_t>
struct NeuronParams {
  acc_t decay;
  acc_t threshold;
  acc_t penalty;
  acc_t ratio;  // penalty / threshold, computed once per neuron by the op (GradedRatio), as the
                // reference computes it once
};

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
//   v_reached: 1 if v_t reaches the loss (see GradedNeuron::reach), else 0: then the products of
//              grad_v with u are not formed, as autograd does not run a node the loss does not reach
//              (0 * inf would make NaN where the reference has nothing).
// Returns dL/du_t (= dL/dI_t); adds this step's terms of dL/dthreshold and dL/dpenalty.
template <int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t lif_bwd_step(acc_t grad_v, acc_t grad_o, uint32_t fired, acc_t u,
                                          const NeuronParams<acc_t>& p, acc_t v_reached,
                                          acc_t& grad_threshold, acc_t& grad_penalty) {
  const acc_t g = static_cast<acc_t>(fired);
  // relu'(x) = [x > 0] = g (relu'(0) = 0, as in torch).
  if (kReset == kResetProportional) {
    // v = u - ratio * u * g, ratio = penalty / threshold.
    // The product is always computed and then selected, so the select stays branch-free.
    const acc_t ratio_product = -(grad_v * u * g);
    const acc_t grad_ratio = v_reached > acc_t(0) ? ratio_product : acc_t(0);
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

// A stream a backward step reads that may be absent (no upstream gradient, a row never returned, a
// tensor that was not saved): it reads as zeros. On the CPU an absent stream points at a block-sized
// row of zeros, so the lane loop reads unconditionally and vectorises. On the GPU (one lane per
// thread) an absent stream is a null pointer and the load is selected by value: pointing at a local
// zero would take a local array's address and put it in local memory (a stack frame per kernel).
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t read_or_zero(const scalar_t* stream, int j) {
#if defined(__CUDA_ARCH__)
  return stream != nullptr ? stream[j] : scalar_t(0);
#else
  return stream[j];
#endif
}

// The row absent streams point at: zeros on the CPU, null on the GPU (see read_or_zero).
template <int kBlock, typename scalar_t>
struct ZeroRow {
#if defined(__CUDA_ARCH__)
  C10_HOST_DEVICE inline const scalar_t* get() const { return nullptr; }
#else
  scalar_t values[kBlock];
  C10_HOST_DEVICE inline ZeroRow() {
    for (int j = 0; j < kBlock; ++j) values[j] = scalar_t(0);
  }
  C10_HOST_DEVICE inline const scalar_t* get() const { return values; }
#endif
};

// One constant of the lanes lane0, lane0 + 1, ... of a block. Lanes hold neurons in order, lane l
// neuron l % H. On the CPU the launch hands the loops each constant "tiled" (tiled[i] = c[i % H],
// see tile_constant in the CPU launch), so a block's constants are the contiguous run that starts
// at lane0 % H: the loops read them through that address and nothing is copied per block (copying
// them, and dividing per lane for the ratio, was ~60% of a T = 1 forward). On the GPU (kBlock = 1)
// the [H] array itself and one load into a register; that flavour also reads a tiled array right
// (tiled[lane0 % H] = c[lane0 % H]), so the CPU runs it too.
template <int kBlock, typename acc_t>
struct LaneConstant {
  const acc_t* run;
  C10_HOST_DEVICE inline void load(const acc_t* tiled, int64_t H, int64_t lane0) {
    run = tiled + lane0 % H;
  }
  C10_HOST_DEVICE inline acc_t operator[](int j) const { return run[j]; }
};

template <typename acc_t>
struct LaneConstant<1, acc_t> {
  acc_t value;
  C10_HOST_DEVICE inline void load(const acc_t* c, int64_t H, int64_t lane0) {
    value = c[lane0 % H];
  }
  C10_HOST_DEVICE inline acc_t operator[](int) const { return value; }
};

// The loops below keep per-lane state in small arrays and split each time step into simple loops
// over the block's lanes, each free of branches inside (conditions depend on t only), so that the
// CPU compiler vectorises them; on the GPU kBlock = 1 and the arrays are registers.
//
// Time is walked in chunks of kChunk = 8 steps (one gate byte). A chunk first issues the loads of
// all its steps (every input stream), then runs its steps' dependent chain and stores. On the GPU
// (one lane per thread) that puts 8 loads per stream in flight per thread before the chain needs
// the first, instead of one dependent global round trip per step (a plain loop could not be
// reordered by the compiler: its stores might alias its next loads). The loaded values wait in a
// StagedRow: on the GPU (kBlock = 1) the value itself, in a register. On the CPU a block is
// kCpuBlock lanes wide, so each row is already many independent vector loads, and copying rows into
// a buffer only cost time (10-45% measured): there a StagedRow keeps the row's address and the
// chain reads it, as a plain loop would. The CPU also runs the kBlock = 1 flavour on request
// (set_gpu_lane_loops, used by the tests), so the staging the GPU runs is tested here too. The
// arithmetic order does not depend on any of this: results are bit for bit a step-by-step loop's.

constexpr int kChunk = 8;

#if defined(__CUDA_ARCH__)
#define SNN_UNROLL _Pragma("unroll")
#else
#define SNN_UNROLL
#endif

// Before a model's lane loop: its iterations are independent and its streams never overlap (the ops
// allocate every output; inputs are only read). Said to gcc so that it vectorises without run-time
// overlap checks: with three rows and three constants a Synaptic step needs 15 such checks, over
// gcc's limit of 10, and stayed scalar.
#if !defined(__CUDA_ARCH__) && defined(__GNUC__) && !defined(__clang__)
#define SNN_LANE_LOOP _Pragma("GCC ivdep")
#else
#define SNN_LANE_LOOP
#endif

// Makes a step's reach flags (0/1 floats, the same for every lane) opaque to the host compiler.
// Seeing that a flag is `b ? 1 : 0` for a bool b, gcc folds `flag > 0 ? product : 0` into a select
// on the scalar bool, which it cannot vectorise (Norse's LIF backward stayed scalar); as unknown
// floats they become a vector compare against a broadcast value.
#if !defined(__CUDA_ARCH__) && (defined(__GNUC__) || defined(__clang__))
#define SNN_OPAQUE(value) asm("" : "+m"(value))
#else
#define SNN_OPAQUE(value)
#endif

template <typename T>
C10_HOST_DEVICE inline T min_of(T a, T b) {
  return a < b ? a : b;
}

// One step's row of one stream, loaded in a chunk's load phase and read in its chain (see above).
template <int kBlock, typename scalar_t, typename acc_t>
struct StagedRow {
  const scalar_t* row;
  C10_HOST_DEVICE inline void load(const scalar_t* r) { row = r; }
  C10_HOST_DEVICE inline acc_t operator[](int j) const {
    return static_cast<acc_t>(read_or_zero(row, j));
  }
};

template <typename scalar_t, typename acc_t>
struct StagedRow<1, scalar_t, acc_t> {
  acc_t value;
  C10_HOST_DEVICE inline void load(const scalar_t* r) {
    value = static_cast<acc_t>(read_or_zero(r, 0));
  }
  C10_HOST_DEVICE inline acc_t operator[](int) const { return value; }
};

// The steps of the chunk that starts at t0.
C10_HOST_DEVICE inline int chunk_steps(int64_t T, int64_t t0) {
  return static_cast<int>(min_of<int64_t>(kChunk, T - t0));
}

// A chunk's loads of one [T, lanes] stream: rows t0 .. t0 + steps - 1 of lanes lane0...
template <int kBlock, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void stage_chunk(StagedRow<kBlock, scalar_t, acc_t> (&rows)[kChunk],
                                        const scalar_t* stream, int64_t t0, int steps,
                                        int64_t lanes, int64_t lane0) {
  SNN_UNROLL
  for (int k = 0; k < kChunk; ++k) {
    if (k < steps) rows[k].load(stream + (t0 + k) * lanes + lane0);
  }
}

// The state before step 0 of lanes lane0..: the initial state, or zeros without one.
template <int kBlock, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void load_initial(acc_t (&state)[kBlock], const scalar_t* initial,
                                         int64_t lane0, int n) {
  for (int j = 0; j < n; ++j) {
    state[j] = initial != nullptr ? static_cast<acc_t>(initial[lane0 + j]) : acc_t(0);
  }
}

// ================================================================================================
// Binary spikes with surrogate gradients: the LIF neurons of snnTorch and SpikingJelly
// (snn_cuda.lif, snn_cuda.Leaky, snn_cuda.LIFNode). Same layout and lane-block scheme as above.
//
// Each convention reproduces one library's arithmetic operation for operation (so float32 spikes and
// membranes agree bit for bit, float64 to rounding). Per lane, x_t the input, theta the threshold,
// v_r the reset value:
//
//   kConvSnntorch, snnTorch's Leaky (reset_delay=True). State m, the membrane it returns; m_{-1} =
//   the initial membrane (0 by default). The reset is the previous step's spike:
//       r_t = [m_{t-1} - theta > 0]
//       subtract: m_t = (beta * m_{t-1} + x_t) - r_t * theta
//       hard:     m_t = beta * ((1 - r_t) * m_{t-1} + r_t * v_r) + x_t    (snnTorch's "zero": v_r = 0)
//       none:     m_t = beta * m_{t-1} + x_t                                (snnTorch's "none")
//       s_t = [m_t - theta > 0]                       returned: (s_t, m_t); `decay` holds beta.
//
//   kConvSpikingjelly, SpikingJelly's LIFNode. State v, the potential after reset; v_{-1} = the
//   initial potential. Charge, fire and reset in the same step (rest = v_r for hard, 0 for subtract):
//       decay_input:  h_t = v_{t-1} + (x_t - (v_{t-1} - rest)) / tau
//       otherwise:    h_t = v_{t-1} - (v_{t-1} - rest) / tau + x_t
//       s_t = [h_t - theta >= 0]
//       subtract: v_t = h_t - s_t * theta          hard: v_t = s_t * v_r + (1 - s_t) * h_t
//       returned: (s_t, h_t), the charged potential before reset (v_t follows from h_t and s_t,
//       and the backward needs h_t); `decay` holds tau.
//
// The backward is autograd's through these loops with ds/dz (z = m_t - theta resp. h_t - theta)
// replaced by a surrogate derivative sigma'(z). With detach_reset the reset does not pass gradient
// through the spike (snnTorch's Leaky always detaches). For float16/bfloat16 the arithmetic runs in
// float32 and the membrane (and SpikingJelly's state after the reset) is rounded to the input dtype
// each step, so the forward and the backward (which reads the stored membrane) see the same values,
// and a sequence equals its steps chained through the returned state.

// kConvSpikingjellyIf: SpikingJelly's IFNode, the SpikingJelly convention without the leak:
//       h_t = v_{t-1} + x_t        (fire and reset as kConvSpikingjelly; `decay` is not read)
//
// kConvSnntorchNow: snnTorch's Leaky with reset_delay=False. The charge b_t is kConvSnntorch's m_t
// computed from the state m~_{t-1} (the membrane after the previous step's reset), then the spike
// resets the membrane in its own step, less what the delayed reset r_t already did (snnTorch's
// "avoid double reset"):
//       s_t = [b_t - theta > 0]
//       subtract: m~_t = b_t - (s_t - r_t) * theta
//       hard:     m~_t = b_t - (s_t - r_t) * (b_t - v_r)   (snnTorch's "zero": v_r = 0, b_t - (s_t - r_t) * b_t)
//       none:     m~_t = b_t
//       returned: (s_t, m~_t). r_t is detached; s_t carries its surrogate gradient through the reset
//       unless detach_reset (Leaky's surrogate_disable).
enum SpikeConvention : int {
  kConvSnntorch = 0,
  kConvSpikingjelly = 1,
  kConvSpikingjellyIf = 2,
  kConvSpikingjellyPlif = 3,
  kConvSnntorchNow = 4,
};
// kConvSpikingjellyPlif: SpikingJelly's ParametricLIFNode, the SpikingJelly convention with the
// charge multiplied by a rate q = sigmoid(w) (`decay` holds q, computed by the caller):
//       decay_input:  h_t = v_{t-1} + (x_t - (v_{t-1} - rest)) * q
//       otherwise:    h_t = v_{t-1} - (v_{t-1} - rest) * q + x_t
//
// kSpikeResetNone (no reset: the membrane only leaks) exists for the snnTorch convention only.
enum SpikeReset : int { kSpikeResetSubtract = 0, kSpikeResetHard = 1, kSpikeResetNone = 2 };
enum SurrogateKind : int {
  kSurrogateFastSigmoid = 0,  // 1 / (alpha |z| + 1)^2           (snnTorch fast_sigmoid, slope alpha)
  kSurrogateSuperSpike = 1,   // alpha / (|z| + 1)^2             (SpikingJelly SuperSpike)
  kSurrogateAtan = 2,         // (alpha / 2) / (1 + (pi / 2 * alpha * z)^2)
  kSurrogateSigmoid = 3,      // alpha * sig(alpha z) * (1 - sig(alpha z)) = alpha e / (1 + e)^2
};

// exp(y) for y <= 0, as the sigmoid surrogate needs it. On the GPU, CUDA's expf/exp. On the CPU
// a branch-free version that gcc vectorises (libm's exp is a call it cannot vectorise without
// -ffast-math, and the sigmoid backward ran 8x slower than the other surrogates with it): Cody-Waite
// reduction y = k ln2 + r, |r| <= ln2 / 2, a Taylor polynomial for exp(r) (degree 7 for float,
// 13 for double: truncation below half an ulp), and 2^k assembled in the exponent bits with the
// 2^52 (2^23) + bias trick. Within ~2 ulp of libm's; results below the smallest normal number
// (exp(y) < 1.2e-38 resp. 2.2e-308) flush to 0.
template <typename To, typename From>
C10_HOST_DEVICE inline To bits_as(From from) {
  static_assert(sizeof(To) == sizeof(From), "bits_as: sizes differ");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

C10_HOST_DEVICE inline float exp_nonpositive(float y) {
#if defined(__CUDA_ARCH__)
  return ::expf(y);
#else
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float k = (y * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (y - k * 0.693145751953125f) - k * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^k: k + 127 sits in the low mantissa bits of k + (2^23 + 127); shift it into the exponent.
  const uint32_t e = bits_as<uint32_t>(k + 8388735.0f) << 23;
  const float result = p * bits_as<float>(e);
  return y < -87.0f ? 0.0f : result;
#endif
}

C10_HOST_DEVICE inline double exp_nonpositive(double y) {
#if defined(__CUDA_ARCH__)
  return ::exp(y);
#else
  const double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const double k = (y * 1.4426950408889634 + kMagic) - kMagic;
  const double r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  const double inv_fact[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0,
                             1.0 / 3628800.0,    1.0 / 362880.0,    1.0 / 40320.0,
                             1.0 / 5040.0,       1.0 / 720.0,       1.0 / 120.0,
                             1.0 / 24.0,         1.0 / 6.0,         0.5,
                             1.0};
  double p = inv_fact[0];
  for (int i = 1; i < 13; ++i) p = p * r + inv_fact[i];
  p = p * r + 1.0;
  const uint64_t e = bits_as<uint64_t>(k + 4503599627371519.0) << 52;  // 2^52 + 1023
  const double result = p * bits_as<double>(e);
  return y < -708.0 ? 0.0 : result;
#endif
}

// sigma'(z) of the named surrogate; alpha is its scale (slope).
template <int kSurrogate, typename acc_t>
C10_HOST_DEVICE inline acc_t surrogate_grad(acc_t z, acc_t alpha) {
  const acc_t abs_z = z < acc_t(0) ? -z : z;
  if (kSurrogate == kSurrogateFastSigmoid) {
    const acc_t d = alpha * abs_z + acc_t(1);
    return acc_t(1) / (d * d);
  } else if (kSurrogate == kSurrogateSuperSpike) {
    const acc_t d = abs_z + acc_t(1);
    return alpha / (d * d);
  } else if (kSurrogate == kSurrogateAtan) {
    const acc_t w = acc_t(1.5707963267948966) * alpha * z;
    return alpha / acc_t(2) / (acc_t(1) + w * w);
  } else {
    // = alpha e / (1 + e)^2 with e = exp(-alpha |z|) <= 1: no overflow, and no cancellation in
    // 1 - sig for large z (sig * (1 - sig) loses the relative precision of the tails).
    const acc_t e = exp_nonpositive(-(alpha * abs_z));
    return alpha * e / ((acc_t(1) + e) * (acc_t(1) + e));
  }
}

template <typename acc_t>
struct SpikeParams {
  acc_t decay;  // beta (snnTorch) or tau (SpikingJelly)
  acc_t threshold;
  acc_t reset_value;
};

// The membrane of this step before its spike (m_t resp. h_t) from the carried state.
template <int kConv, int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t spike_charge(acc_t state, acc_t input, const SpikeParams<acc_t>& p,
                                          bool decay_input) {
  if (kConv == kConvSnntorch) {
    if (kReset == kSpikeResetNone) return p.decay * state + input;
    const acc_t r = state - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    if (kReset == kSpikeResetSubtract) return (p.decay * state + input) - r * p.threshold;
    return p.decay * ((acc_t(1) - r) * state + r * p.reset_value) + input;
  } else if (kConv == kConvSpikingjellyIf) {
    return state + input;
  } else if (kConv == kConvSpikingjellyPlif) {
    const acc_t rest = kReset == kSpikeResetHard ? p.reset_value : acc_t(0);
    return decay_input ? state + (input - (state - rest)) * p.decay
                       : state - (state - rest) * p.decay + input;
  } else {
    const acc_t rest = kReset == kSpikeResetHard ? p.reset_value : acc_t(0);
    return decay_input ? state + (input - (state - rest)) / p.decay
                       : state - (state - rest) / p.decay + input;
  }
}

// The spike for z = membrane - threshold: snnTorch fires at z > 0, SpikingJelly at z >= 0.
template <int kConv, typename acc_t>
C10_HOST_DEVICE inline acc_t spike_fire(acc_t z) {
  if (kConv == kConvSnntorch) return z > acc_t(0) ? acc_t(1) : acc_t(0);
  return z >= acc_t(0) ? acc_t(1) : acc_t(0);
}

// The state carried to the next step: m_t itself (snnTorch resets at the next charge), v_t after
// the reset (SpikingJelly).
template <int kConv, int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t spike_next_state(acc_t h, acc_t s, const SpikeParams<acc_t>& p) {
  if (kConv == kConvSnntorch) return h;
  if (kReset == kSpikeResetSubtract) return h - s * p.threshold;
  return s * p.reset_value + (acc_t(1) - s) * h;
}

// One backward step of the snnTorch convention at step t.
//   gs, gm: dL/ds_t and dL/dm_t from outside; m = m_t, m_prev = m_{t-1};
//   carry_m: dL/dm_t through m_{t+1}'s charge; carry_s: dL/ds_t through r_{t+1} (0 if detached).
//   spike_reached: 1 if s_t or r_{t+1} (the same spike function of m_t) reaches the loss, else 0:
//   then sigma'(z) is not multiplied in (it is NaN on a NaN membrane, and autograd does not run the
//   node; see neuron_backward_lanes).
// Returns dL/dm_t (= dL/dx_t) and leaves the carries pointing at step t - 1.
// Flags come as 0/1 floats and are tested with a float comparison: a select on a scalar bool
// keeps gcc from vectorising the CPU lane loop, a select on a compare does not.
template <int kReset, int kSurrogate, typename acc_t>
C10_HOST_DEVICE inline acc_t snntorch_bwd_step(acc_t gs, acc_t gm, acc_t m, acc_t m_prev,
                                               const SpikeParams<acc_t>& p, acc_t alpha,
                                               acc_t detach_reset, acc_t spike_reached,
                                               acc_t& carry_m, acc_t& carry_s,
                                               acc_t& grad_decay, acc_t& grad_threshold) {
  const acc_t sg = surrogate_grad<kSurrogate>(m - p.threshold, alpha);
  const acc_t gs_total = gs + carry_s;
  const acc_t spike_product = gs_total * sg;  // computed, then selected (see lif_bwd_step)
  const acc_t spike_term = spike_reached > acc_t(0) ? spike_product : acc_t(0);
  const acc_t g = gm + carry_m + spike_term;
  grad_threshold -= spike_term;
  const acc_t r = m_prev - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
  acc_t grad_r;
  if (kReset == kSpikeResetNone) {
    grad_decay += g * m_prev;
    grad_r = acc_t(0);
    carry_m = g * p.decay;
  } else if (kReset == kSpikeResetSubtract) {
    grad_decay += g * m_prev;
    grad_threshold -= g * r;
    grad_r = -(g * p.threshold);
    carry_m = g * p.decay;
  } else {
    grad_decay += g * ((acc_t(1) - r) * m_prev + r * p.reset_value);
    grad_r = g * p.decay * (p.reset_value - m_prev);
    carry_m = g * p.decay * (acc_t(1) - r);
  }
  carry_s = detach_reset > acc_t(0) ? acc_t(0) : grad_r;
  return g;
}

// One backward step of the SpikingJelly convention at step t.
//   gs, gh: dL/ds_t and dL/dh_t from outside; h = h_t; v_prev = v_{t-1}; x = x_t (read only for
//   tau's gradient with decay_input); carry: dL/dv_t, on return dL/dv_{t-1}.
//   reset_passes: 1 if v_t reaches the loss and the reset is not detached (its dependence on s_t
//   then carries gradient), else 0; s_reached: 1 if s_t reaches the loss, else 0. h_t is taken to
//   reach it: in this convention it does at every step or at none, and neuron_backward_lanes
//   handles "none" before any step. Products with values that may be infinite or NaN (h,
//   sigma'(z)) are only formed for values that do, as autograd only runs the nodes the loss
//   reaches (see neuron_backward_lanes).
// kCharge: kChargeTau (LIFNode: divides by tau), kChargeNone (IFNode, h_t = v_{t-1} + x_t: no tau,
// dL/dv_{t-1} = dL/dx_t = dL/dh_t), kChargeRate (ParametricLIFNode: multiplies by q; the decay
// gradient is q's). Returns dL/dx_t.
enum ChargeKind : int { kChargeTau = 0, kChargeNone = 1, kChargeRate = 2 };

template <int kReset, int kSurrogate, int kCharge, typename acc_t>
C10_HOST_DEVICE inline acc_t spikingjelly_bwd_step(acc_t gs, acc_t gh, acc_t h, acc_t v_prev,
                                                   acc_t x, const SpikeParams<acc_t>& p,
                                                   acc_t alpha, acc_t decay_input,
                                                   acc_t reset_passes, acc_t s_reached,
                                                   acc_t& carry,
                                                   acc_t& grad_decay, acc_t& grad_threshold) {
  const acc_t z = h - p.threshold;
  const acc_t sg = surrogate_grad<kSurrogate>(z, alpha);
  const acc_t s = spike_fire<kConvSpikingjelly>(z);
  acc_t dv_dh, dv_ds, rest;
  if (kReset == kSpikeResetSubtract) {  // v = h - s * theta
    dv_dh = acc_t(1);
    dv_ds = -p.threshold;
    grad_threshold -= carry * s;
    rest = acc_t(0);
  } else {  // v = s * v_r + (1 - s) * h
    dv_dh = acc_t(1) - s;
    dv_ds = p.reset_value - h;
    rest = p.reset_value;
  }
  // Products computed, then selected (see lif_bwd_step).
  const acc_t reset_product = carry * dv_ds;
  const acc_t reset_term = reset_passes > acc_t(0) ? reset_product : acc_t(0);
  const acc_t gs_total = gs + reset_term;
  const acc_t spike_product = gs_total * sg;
  const acc_t spike_term = s_reached > acc_t(0) ? spike_product : acc_t(0);
  const acc_t g = gh + carry * dv_dh + spike_term;  // dL/dh_t
  grad_threshold -= spike_term;
  if (kCharge == kChargeNone) {  // IF: h_t = v_{t-1} + x_t
    carry = g;
    return g;
  }
  if (kCharge == kChargeRate) {  // PLIF: dh/dq = x - (v - rest) with decay_input, -(v - rest) without
    const acc_t rate_term = decay_input > acc_t(0) ? g * (x - (v_prev - rest))
                                                   : -(g * (v_prev - rest));
    grad_decay += rate_term;
    carry = g - g * p.decay;
    return decay_input > acc_t(0) ? g * p.decay : g;
  }
  const acc_t tau2 = p.decay * p.decay;
  // dh/dtau: -(x - (v - rest)) / tau^2 with decay_input, (v - rest) / tau^2 without.
  const acc_t decay_term = decay_input > acc_t(0) ? -(g * ((x - (v_prev - rest)) / tau2))
                                                  : g * ((v_prev - rest) / tau2);
  // (A select on a third flag here, h_t reached, kept gcc from vectorising the CPU loop: 2.8x
  // slower.)
  grad_decay += decay_term;
  carry = g - g / p.decay;
  return decay_input > acc_t(0) ? g / p.decay : g;
}

// ------------------------------------------------------------------------------------------------
// Neuron models and the time loops every model runs (docs/design-neuron-interface.md).
//
// A model describes one neuron per lane as a struct of static C10_HOST_DEVICE members:
//   kStates     state variables carried from step to step (returned after the last step);
//   kConstants  per-neuron constants, [H] arrays (tiled on the CPU, see LaneConstant);
//   kRows       values written per step, [T, lanes] each; per state, the op hands the backward
//               the row it reads back (NeuronBackwardArgs::saved; LIF: the membrane);
//   kCarries    gradients carried backwards in time (the first kStates are dL/d(state));
//   options(flags, alpha)              the call's options, read once per block;
//   params(c, j)                       lane j's constants;
//   forward<scalar_t>(p, o, x, state, out)  one step, state updated in place;
//   Reach, reach(...)                  which values reach the loss at each step, the same for every
//                                      lane (terms of values it does not reach are not formed:
//                                      autograd never runs those nodes, and 0 * inf would be NaN);
//   backward<kSurrogate, scalar_t>(...) one step back, returns dL/dx_t;
//   finish<kSurrogate>(...)            dL/d(initial state) and any terms of the state before step 0.
// and optionally (ModelTraits gives the defaults):
//   kSaved      saved streams the backward reads (default kStates): the first kStates are the
//               states' rows (read at t and t - 1), the others rows read at step t only;
//   kBits       1 if every step also keeps one bit per lane that its backward reads (the graded
//               neuron's gate), packed 8 steps to a byte as [ceil(T / 8), lanes]; forward and
//               backward then take it as a last argument (default 0);
//   kShifts     true if the model takes kFlagDelay: the rows of step t are written at row t + 1,
//               row 0 holds zeros and the last step's rows are not returned (default false).
// neuron_forward_lanes and neuron_backward_lanes do the rest for every model: chunks, staging,
// streams that may be absent, per-lane arrays; the launches, ops and autograd are shared too.

constexpr int kMaxStates = 3;     // state variables per lane (Norse's LSNN: v, i, b)
constexpr int kMaxRows = 4;       // rows written per step (LSNN: spikes, v, i, b)
constexpr int kMaxConstants = 7;  // per-neuron constants (LSNN has seven)

// A call's options, as bits.
enum NeuronFlag : int { kFlagDecayInput = 1, kFlagDetachReset = 2, kFlagDelay = 4 };

// A model's optional members (see above), with their defaults.
template <class M, class = void>
struct SavedStreams : std::integral_constant<int, M::kStates> {};
template <class M>
struct SavedStreams<M, std::void_t<decltype(M::kSaved)>> : std::integral_constant<int, M::kSaved> {};
template <class M, class = void>
struct KeepsBits : std::false_type {};
template <class M>
struct KeepsBits<M, std::void_t<decltype(M::kBits)>> : std::bool_constant<M::kBits != 0> {};
template <class M, class = void>
struct ShiftsRows : std::false_type {};
template <class M>
struct ShiftsRows<M, std::void_t<decltype(M::kShifts)>> : std::bool_constant<M::kShifts> {};

template <class M>
struct ModelTraits {
  static constexpr int kSaved = SavedStreams<M>::value;
  static constexpr bool kBits = KeepsBits<M>::value;
  static constexpr bool kShifts = ShiftsRows<M>::value;
  static_assert(kSaved >= M::kStates && kSaved <= kMaxStates, "saved streams: kStates..kMaxStates");
};

template <typename scalar_t, typename acc_t>
struct NeuronForwardArgs {
  const scalar_t* input;                 // [T, lanes]
  const scalar_t* initial[kMaxStates];   // per state: [lanes], nullable (zeros)
  scalar_t* rows[kMaxRows];              // per row: [T, lanes]
  scalar_t* state[kMaxStates];           // per state: [lanes], nullable: the state after the last step
  const acc_t* constants[kMaxConstants];  // per constant: [H], or tiled on the CPU (LaneConstant)
  uint8_t* bits;                         // [ceil(T / 8), lanes], models with kBits only
  int64_t T;
  int64_t lanes;
  int64_t H;
  int flags;
};

template <typename scalar_t, typename acc_t>
struct NeuronBackwardArgs {
  const scalar_t* grad_rows[kMaxRows];      // per row: [T, lanes], nullable (zero)
  const scalar_t* grad_state[kMaxStates];   // per state: [lanes], nullable: dL/d(state after T-1)
  const scalar_t* saved[kMaxStates];        // per saved stream (kSaved): its row, [T, lanes], as
                                            // written; nullable (zeros) where the model allows
  const uint8_t* bits;                      // [ceil(T / 8), lanes], models with kBits only
  const scalar_t* initial[kMaxStates];      // per state: [lanes], nullable (zeros)
  const scalar_t* input;                    // [T, lanes], nullable: read only if the model asks
  const acc_t* constants[kMaxConstants];    // per constant: [H], or tiled on the CPU
  acc_t alpha;                              // the surrogate's scale
  scalar_t* grad_input;                     // [T, lanes]
  scalar_t* grad_initial[kMaxStates];       // per state: [lanes], nullable
  acc_t* grad_constants[kMaxConstants];     // per constant: [lanes] sums over time, nullable
  int64_t T;
  int64_t lanes;
  int64_t H;
  int flags;
};

// Rounds a value to the storage dtype and back (a no-op for float and double).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t round_to_storage(acc_t value) {
  return static_cast<acc_t>(static_cast<scalar_t>(value));
}

// Which gradients a backward call was given (uniform over lanes).
struct GivenGrads {
  bool rows[kMaxRows];
  bool state[kMaxStates];
};

// The call options of the models that take no flags: the surrogate's scale alone.
struct SurrogateOnlyOptions {
  template <typename acc_t>
  struct Options {
    acc_t alpha;
  };
  template <typename acc_t>
  static C10_HOST_DEVICE Options<acc_t> options(int, acc_t alpha) {
    return {alpha};
  }
};

// What both binary-spike LIF conventions share: rows spikes and membrane, one state whose saved
// row is the membrane, constants decay, threshold, reset value, and the forward step.
template <int kConv, int kReset>
struct BinaryLif {
  static constexpr int kStates = 1, kConstants = 3, kRows = 2;
  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE SpikeParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[3],
                                                   int j) {
    return {c[0][j], c[1][j], c[2][j]};
  }
  // The membrane and (SpikingJelly) the state after the reset are kept at the input's precision:
  // the state a step returns (and the next per-step call starts from) is the one the next step of
  // this loop charges from, and the backward reads the stored membrane.
  template <typename scalar_t, typename acc_t, typename Options>
  static C10_HOST_DEVICE void forward(const SpikeParams<acc_t>& p, const Options& o, acc_t x,
                                      acc_t (&state)[1], acc_t (&out)[2]) {
    const acc_t h =
        round_to_storage<scalar_t>(spike_charge<kConv, kReset>(state[0], x, p, o.decay_input));
    const acc_t s = spike_fire<kConv>(h - p.threshold);
    out[0] = s;
    out[1] = h;
    state[0] = round_to_storage<scalar_t>(spike_next_state<kConv, kReset>(h, s, p));
  }
  // dL/d(initial state) is the carry past step 0 (SnntorchLif adds the reset r_0's term).
  template <int kSurrogate, typename acc_t, typename O, typename R>
  static C10_HOST_DEVICE void finish(const R&, const O&, int64_t, const SpikeParams<acc_t>&,
                                     const acc_t (&)[1], const acc_t (&carry)[1],
                                     acc_t (&grad_initial)[1], acc_t (&)[3]) {
    grad_initial[0] = carry[0];
  }
};

// Binary-spike LIF in the snnTorch convention (see the equations above). Rows: spikes, membrane;
// state m (its saved row: the membrane, row 1); carries dL/dm_t, dL/ds_t through r_{t+1};
// constants decay (beta), threshold, reset value.
template <int kReset>
struct SnntorchLif : BinaryLif<kConvSnntorch, kReset> {
  static constexpr int kCarries = 2;
  template <typename acc_t>
  struct Options {
    bool decay_input;
    acc_t alpha, detach_reset;  // flags as 0/1 floats (see snntorch_bwd_step)
    bool resets_pass;
  };
  struct Reach {
    bool next_reached;  // m_{t+1}; after the last step: the returned state
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike;
  };

  template <typename acc_t>
  static C10_HOST_DEVICE Options<acc_t> options(int flags, acc_t alpha) {
    const bool detach = (flags & kFlagDetachReset) != 0;
    return {(flags & kFlagDecayInput) != 0, alpha, detach ? acc_t(1) : acc_t(0),
            !detach && kReset != kSpikeResetNone};
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0]};
  }
  // m_t reaches the loss through its row, its spike or m_{t+1}; its spike function through s_t or,
  // not detached, through the reset r_{t+1} of the next charge.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>& o, int64_t t, int64_t T) {
    const bool r_next = t < T - 1 && r.next_reached && o.resets_pass;
    const acc_t spike = given.rows[0] || r_next ? acc_t(1) : acc_t(0);
    r.next_reached = given.rows[1] || given.rows[0] || r.next_reached;
    return {spike};
  }
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const SpikeParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&saved)[1],
                                        const acc_t (&prev)[1], const acc_t (&grad_rows)[2],
                                        acc_t (&carry)[2], acc_t (&grad_c)[3]) {
    return snntorch_bwd_step<kReset, kSurrogate>(grad_rows[0], grad_rows[1], saved[0], prev[0], p,
                                                 o.alpha, o.detach_reset, f.spike, carry[0],
                                                 carry[1], grad_c[0], grad_c[1]);
  }
  // r_0 = [m_{-1} - theta > 0] reaches the loss through m_0 unless detached; it also depends on the
  // initial membrane and the threshold.
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach& r, const Options<acc_t>& o, int64_t T,
                                     const SpikeParams<acc_t>& p, const acc_t (&initial)[1],
                                     const acc_t (&carry)[2], acc_t (&grad_initial)[1],
                                     acc_t (&grad_c)[3]) {
    grad_initial[0] = carry[0];
    if (T > 0 && r.next_reached && o.resets_pass) {
      const acc_t sg = surrogate_grad<kSurrogate>(initial[0] - p.threshold, o.alpha);
      grad_initial[0] += carry[1] * sg;
      grad_c[1] -= carry[1] * sg;
    }
  }
};

// Binary-spike LIF in the SpikingJelly convention. Rows: spikes, membrane h_t (charged, before
// the reset); state v (after the reset), rebuilt in the backward from the saved h_{t-1}; one carry
// dL/dv_t; constants decay (tau), threshold, reset value.
template <int kReset, int kConv = kConvSpikingjelly>
struct SpikingjellyLif : BinaryLif<kConv, kReset> {
  static constexpr int kCharge = kConv == kConvSpikingjellyIf     ? kChargeNone
                                 : kConv == kConvSpikingjellyPlif ? kChargeRate
                                                                  : kChargeTau;
  static constexpr int kCarries = 1;
  template <typename acc_t>
  struct Options {
    bool decay_input;
    acc_t alpha, decay_input_flag;
    bool resets_pass;
  };
  struct Reach {
    bool next_reached;  // h_{t+1}; after the last step: the returned state v_{T-1}
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, reset;
  };

  template <typename acc_t>
  static C10_HOST_DEVICE Options<acc_t> options(int flags, acc_t alpha) {
    const bool decay_input = (flags & kFlagDecayInput) != 0;
    return {decay_input, alpha, decay_input ? acc_t(1) : acc_t(0),
            (flags & kFlagDetachReset) == 0};
  }
  // x_t is read only for tau's (q's) gradient with decay_input.
  static C10_HOST_DEVICE bool needs_input(int flags, bool grad_decay) {
    return kCharge != kChargeNone && (flags & kFlagDecayInput) != 0 && grad_decay;
  }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0]};
  }
  // v_t reaches the loss through h_{t+1}; s_t through its row or, not detached, through the reset;
  // h_t through its row, s_t or v_t, so at every step once anything reaches the loss.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>& o, int64_t, int64_t) {
    const bool v_reached = r.next_reached;
    const bool s_reached = given.rows[0] || (v_reached && o.resets_pass);
    r.next_reached = given.rows[1] || s_reached || v_reached;
    return {s_reached ? acc_t(1) : acc_t(0), v_reached && o.resets_pass ? acc_t(1) : acc_t(0)};
  }
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const SpikeParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t after_first, acc_t x,
                                        const acc_t (&saved)[1], const acc_t (&prev)[1],
                                        const acc_t (&grad_rows)[2], acc_t (&carry)[1],
                                        acc_t (&grad_c)[3]) {
    // v_{t-1}: the initial state at t = 0, else h_{t-1} after its reset, as the forward had it.
    const acc_t v_prev =
        after_first > acc_t(0)
            ? round_to_storage<scalar_t>(spike_next_state<kConv, kReset>(
                  prev[0], spike_fire<kConv>(prev[0] - p.threshold), p))
            : prev[0];
    return spikingjelly_bwd_step<kReset, kSurrogate, kCharge>(
        grad_rows[0], grad_rows[1], saved[0], v_prev, x, p, o.alpha, o.decay_input_flag, f.reset,
        f.spike, carry[0], grad_c[0], grad_c[1]);
  }
};


// snnTorch's delayed reset of this step's charge b (Synaptic, RLeaky, RSynaptic), with
// r = [m_{t-1} - theta > 0] the previous membrane's spike, detached: subtract b - r * theta,
// zero b - b * r (snnTorch computes b twice; the value is the same), none b.
template <int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t snntorch_delayed_reset(acc_t b, acc_t r, acc_t threshold) {
  if (kReset == kSpikeResetSubtract) return b - r * threshold;
  if (kReset == kSpikeResetHard) return b - b * r;
  return b;
}

// Its backward: dL/db from gm = dL/dm_t; the subtractive reset's threshold term is taken off
// grad_threshold.
template <int kReset, typename acc_t>
C10_HOST_DEVICE inline acc_t snntorch_delayed_reset_bwd(acc_t gm, acc_t r, acc_t& grad_threshold) {
  if (kReset == kSpikeResetSubtract) {
    grad_threshold -= gm * r;
    return gm;
  }
  if (kReset == kSpikeResetHard) return gm - gm * r;
  return gm;
}

// The surrogate term of a spike s = [m - theta > 0] given gs = dL/ds: gs * sigma'(m - theta) where
// the spike reaches the loss (`reached` a 0/1 float, see snntorch_bwd_step), else 0; taken off
// grad_threshold and returned (it adds to dL/dm).
template <int kSurrogate, typename acc_t>
C10_HOST_DEVICE inline acc_t snntorch_spike_bwd(acc_t gs, acc_t m, acc_t threshold, acc_t alpha,
                                                acc_t reached, acc_t& grad_threshold) {
  const acc_t sg = surrogate_grad<kSurrogate>(m - threshold, alpha);
  const acc_t spike_product = gs * sg;  // computed, then selected
  const acc_t spike_term = reached > acc_t(0) ? spike_product : acc_t(0);
  grad_threshold -= spike_term;
  return spike_term;
}

// snnTorch's Synaptic (a current-based, second-order LIF; reset_delay=True). States syn, mem; rows
// spikes, syn, mem (the states' saved rows: rows 1 and 2); constants alpha, beta (both already
// clamped to [0, 1], as snnTorch clamps them in its forward), threshold. Per lane, with
// r_t = [mem_{t-1} - threshold > 0] (the previous membrane's spike, detached as in snnTorch):
//     syn_t = alpha * syn_{t-1} + x_t
//     b_t   = beta * mem_{t-1} + syn_t
//     subtract: mem_t = b_t - r_t * threshold     hard ("zero"): mem_t = b_t - b_t * r_t
//     none:     mem_t = b_t
//     s_t = [mem_t - threshold > 0]
// For float16/bfloat16 the arithmetic runs in float32 and syn_t and mem_t are rounded to the input
// dtype each step (so a sequence equals its steps chained through the returned state).
template <typename acc_t>
struct SynapticParams {
  acc_t alpha, beta, threshold;
};

template <int kReset>
struct SnntorchSynaptic : SurrogateOnlyOptions {
  static constexpr int kStates = 2, kConstants = 3, kRows = 3, kCarries = 2;
  struct Reach {
    bool mem_reached;  // mem_t reaches the loss (at every step, or at none: see reach)
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, mem;  // s_t resp. mem_t reach the loss, as 0/1 floats (see snntorch_bwd_step)
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE SynapticParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[3],
                                                      int j) {
    return {c[0][j], c[1][j], c[2][j]};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const SynapticParams<acc_t>& p, const Options<acc_t>&,
                                      acc_t x, acc_t (&state)[2], acc_t (&out)[3]) {
    const acc_t mem_prev = state[1];
    const acc_t r = mem_prev - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t syn = round_to_storage<scalar_t>(p.alpha * state[0] + x);
    const acc_t b = p.beta * mem_prev + syn;
    const acc_t mem =
        round_to_storage<scalar_t>(snntorch_delayed_reset<kReset>(b, r, p.threshold));
    out[0] = mem - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    out[1] = syn;
    out[2] = mem;
    state[0] = syn;
    state[1] = mem;
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  // The reset is detached, so mem_t reaches the loss through its spike, its row or mem_{t+1}
  // (through beta * mem_t): at every step once the spikes, the membrane rows or the last mem
  // have a gradient, else at none. syn_t feeds mem_t and syn_{t+1}: it reaches the loss at every
  // step once anything does (the backward returns zeros before any step when nothing does).
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.rows[0] || given.rows[2] || given.state[1]};
  }
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    return {given.rows[0] ? acc_t(1) : acc_t(0), r.mem_reached ? acc_t(1) : acc_t(0)};
  }
  // saved = (syn_t, mem_t), prev = (syn_{t-1}, mem_{t-1}); carries dL/dsyn_t, dL/dmem_t through
  // step t + 1; grad_c = (alpha, beta, threshold).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const SynapticParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&saved)[2],
                                        const acc_t (&prev)[2], const acc_t (&grad_rows)[3],
                                        acc_t (&carry)[2], acc_t (&grad_c)[3]) {
    const acc_t spike_term = snntorch_spike_bwd<kSurrogate>(grad_rows[0], saved[1], p.threshold,
                                                            o.alpha, f.spike, grad_c[2]);
    const acc_t gm = grad_rows[2] + carry[1] + spike_term;  // dL/dmem_t
    const acc_t r = prev[1] - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t gb = snntorch_delayed_reset_bwd<kReset>(gm, r, grad_c[2]);  // dL/db_t
    const acc_t beta_product = gb * prev[1];
    grad_c[1] += f.mem > acc_t(0) ? beta_product : acc_t(0);
    const acc_t gs = gb + grad_rows[1] + carry[0];  // dL/dsyn_t = dL/dx_t
    grad_c[0] += gs * prev[0];
    carry[0] = gs * p.alpha;
    carry[1] = gb * p.beta;
    return gs;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const SynapticParams<acc_t>&, const acc_t (&)[2],
                                     const acc_t (&carry)[2], acc_t (&grad_initial)[2],
                                     acc_t (&)[3]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
  }
};

// Norse's current-based LIF and leaky integrator (norse.torch.functional.lif.lif_feed_forward_step,
// leaky_integrator.li_feed_forward_step), operation for operation. Constants a = dt * tau_mem_inv
// and b = -dt * tau_syn_inv come computed by the caller (in the constants' dtype, as Norse's
// `dt * p.tau_mem_inv` is a tensor), then v_leak and (LIF) v_th, v_reset. Per lane:
//     i_new = i_{t-1} + x_t
//     v_dec = v_{t-1} + a * ((v_leak - v_{t-1}) + i_new)
//     i_t   = i_new + b * i_new
//   LIF: z_t = [v_dec - v_th > 0],  v_t = (1 - z_t) * v_dec + z_t * v_reset   (the reset is not
//        detached: the surrogate's gradient flows through it, as in Norse); rows z, v, i.
//   LI:  v_t = v_dec (no spike); rows v, i.
// The backward recomputes i_new and v_dec from the saved v_{t-1}, i_{t-1} and the input x_t.
// float16/bfloat16: float32 arithmetic, v_t and i_t rounded to the input dtype each step.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t as_flag(bool b) {
  return b ? acc_t(1) : acc_t(0);
}

// snnTorch's Leaky with reset_delay=False (kConvSnntorchNow, see its equations above). State m~
// (the membrane after the reset, also the row returned; saved row 1); one carry dL/dm~_t through
// b_{t+1}; constants beta, threshold, reset value (BinaryLif's layout, params and finish). The backward recomputes b_t (and s_t, r_t) from
// the saved m~_{t-1} and the input x_t, operation for operation as the forward.
template <int kReset>
struct SnntorchLifNow : BinaryLif<kConvSnntorch, kReset> {
  static constexpr int kCarries = 1;
  template <typename acc_t>
  struct Options {
    acc_t alpha;
    acc_t detach_reset;  // 1: the immediate reset passes no gradient to s_t (a 0/1 float)
  };
  struct Reach {
    bool next_reached;  // b_{t+1} (so m~_t); after the last step: the returned state
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, mem, charge;  // s_t, m~_t, b_t reach the loss (0/1 floats)
  };

  template <typename acc_t>
  static C10_HOST_DEVICE Options<acc_t> options(int flags, acc_t alpha) {
    return {alpha, (flags & kFlagDetachReset) != 0 ? acc_t(1) : acc_t(0)};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t charge(const SpikeParams<acc_t>& p, acc_t m_prev, acc_t x) {
    return round_to_storage<scalar_t>(spike_charge<kConvSnntorch, kReset>(m_prev, x, p, false));
  }
  template <typename acc_t>
  static C10_HOST_DEVICE acc_t reset_now(acc_t b, acc_t s, acc_t r, const SpikeParams<acc_t>& p) {
    if (kReset == kSpikeResetSubtract) return b - (s - r) * p.threshold;
    if (kReset == kSpikeResetHard) return b - (s - r) * (b - p.reset_value);
    return b;
  }
  template <typename scalar_t, typename acc_t, typename O>
  static C10_HOST_DEVICE void forward(const SpikeParams<acc_t>& p, const O&, acc_t x,
                                      acc_t (&state)[1], acc_t (&out)[2]) {
    const acc_t r = state[0] - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t b = charge<scalar_t>(p, state[0], x);
    const acc_t s = spike_fire<kConvSnntorch>(b - p.threshold);
    const acc_t m = round_to_storage<scalar_t>(reset_now(b, s, r, p));
    out[0] = s;
    out[1] = m;
    state[0] = m;
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return true; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0]};
  }
  // m~_t reaches the loss through its row or b_{t+1} (the returned state after the last step);
  // s_t through its row or, with a reset that is not detached, m~_t; b_t through either.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>& o, int64_t, int64_t) {
    const bool mem = given.rows[1] || r.next_reached;
    const bool spike =
        given.rows[0] || (kReset != kSpikeResetNone && mem && !(o.detach_reset > acc_t(0)));
    r.next_reached = spike || mem;
    return {as_flag<acc_t>(spike), as_flag<acc_t>(mem), as_flag<acc_t>(spike || mem)};
  }
  // saved = (m~_t), prev = (m~_{t-1}); carry dL/dm~_t through b_{t+1}; grad_c = (beta, threshold,
  // reset value: never asked for).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const SpikeParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/, acc_t x,
                                        const acc_t (&)[1], const acc_t (&prev)[1],
                                        const acc_t (&grad_rows)[2], acc_t (&carry)[1],
                                        acc_t (&grad_c)[3]) {
    const acc_t m_prev = prev[0];
    const acc_t r = m_prev - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t b = charge<scalar_t>(p, m_prev, x);
    const acc_t s = spike_fire<kConvSnntorch>(b - p.threshold);
    const acc_t gm = grad_rows[1] + carry[0];  // dL/dm~_t
    acc_t gs = grad_rows[0];                   // dL/ds_t, plus the reset's below
    acc_t gb = gm;                             // dL/db_t through m~_t
    // Products with values that may be infinite (b) are formed only where m~_t reaches the loss,
    // the reset's spike term only where it is not detached.
    const acc_t reset_passes = o.detach_reset > acc_t(0) ? acc_t(0) : f.mem;
    if (kReset == kSpikeResetSubtract) {
      const acc_t theta_product = gm * (s - r);
      grad_c[1] -= f.mem > acc_t(0) ? theta_product : acc_t(0);
      const acc_t reset_product = gm * p.threshold;
      gs -= reset_passes > acc_t(0) ? reset_product : acc_t(0);
    } else if (kReset == kSpikeResetHard) {
      const acc_t reset_product = gm * (b - p.reset_value);
      gs -= reset_passes > acc_t(0) ? reset_product : acc_t(0);
      gb = gm - gm * (s - r);
    }
    const acc_t g =  // dL/db_t
        gb + snntorch_spike_bwd<kSurrogate>(gs, b, p.threshold, o.alpha, f.spike, grad_c[1]);
    // The charge (kConvSnntorch's, r_t detached).
    acc_t decay_product;
    if (kReset == kSpikeResetHard) {
      decay_product = g * ((acc_t(1) - r) * m_prev + r * p.reset_value);
      carry[0] = g * p.decay * (acc_t(1) - r);
    } else {
      decay_product = g * m_prev;
      carry[0] = g * p.decay;
      if (kReset == kSpikeResetSubtract) grad_c[1] -= g * r;
    }
    grad_c[0] += f.charge > acc_t(0) ? decay_product : acc_t(0);
    return g;
  }
};

// The model of a (convention, reset) pair of lif_fwd / lif_bwd.
template <int kConv, int kReset>
using LifModel = typename std::conditional<
    kConv == kConvSnntorch, SnntorchLif<kReset>,
    typename std::conditional<kConv == kConvSnntorchNow, SnntorchLifNow<kReset>,
                              SpikingjellyLif<kReset, kConv>>::type>::type;

template <typename acc_t>
struct NorseParams {
  acc_t a, b, v_leak, v_th, v_reset;
};

template <typename acc_t>
struct NorseCharge {
  acc_t i_new, w, v_dec, i_dec;
};

template <typename acc_t>
C10_HOST_DEVICE inline NorseCharge<acc_t> norse_charge(acc_t v, acc_t i, acc_t x,
                                                       const NorseParams<acc_t>& p) {
  NorseCharge<acc_t> c;
  c.i_new = i + x;
  c.w = (p.v_leak - v) + c.i_new;
  c.v_dec = v + p.a * c.w;
  c.i_dec = c.i_new + p.b * c.i_new;
  return c;
}

// The charge's backward: g_vdec = dL/dv_dec, gi = dL/di_t; vdec_reached, idec_reached as 0/1
// floats (see snntorch_bwd_step). Adds the terms of a, b and v_leak (grad_c[0..2]); sets the
// carries dL/dv_{t-1}, dL/di_{t-1} and returns dL/dx_t (= dL/di_new).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t norse_charge_backward(acc_t g_vdec, acc_t gi, const NorseCharge<acc_t>& c,
                                                   const NorseParams<acc_t>& p, acc_t vdec_reached,
                                                   acc_t idec_reached, acc_t (&carry)[2],
                                                   acc_t* grad_c) {
  const acc_t b_product = gi * c.i_new;
  grad_c[1] += idec_reached > acc_t(0) ? b_product : acc_t(0);
  const acc_t a_product = g_vdec * c.w;
  grad_c[0] += vdec_reached > acc_t(0) ? a_product : acc_t(0);
  const acc_t g_w = g_vdec * p.a;
  grad_c[2] += g_w;
  const acc_t g_inew = (gi + gi * p.b) + g_w;
  carry[0] = g_vdec - g_w;
  carry[1] = g_inew;
  return g_inew;
}

// Which of a Norse step's values reach the loss (the same for every lane): v_{t-1} reaches it
// through v_dec_t, i_{t-1} through i_new_t; after the last step through the returned state.
struct NorseReach {
  bool v_next, i_next;
};

template <bool kSpiking>
struct NorseModel : SurrogateOnlyOptions {
  static constexpr int kStates = 2, kCarries = 2;
  static constexpr int kRows = kSpiking ? 3 : 2;
  static constexpr int kConstants = kSpiking ? 5 : 3;
  static constexpr int kRowV = kSpiking ? 1 : 0;  // rows: [z,] v, i
  using Reach = NorseReach;
  template <typename acc_t>
  struct StepFlags {
    acc_t v_new, spike, v_dec, i_dec;
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE NorseParams<acc_t> params(
      const LaneConstant<kBlock, acc_t> (&c)[kConstants], int j) {
    NorseParams<acc_t> p{c[0][j], c[1][j], c[2][j], acc_t(0), acc_t(0)};
    if (kSpiking) {
      p.v_th = c[kSpiking ? 3 : 0][j];
      p.v_reset = c[kSpiking ? 4 : 0][j];
    }
    return p;
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const NorseParams<acc_t>& p, const Options<acc_t>&, acc_t x,
                                      acc_t (&state)[2], acc_t (&out)[kRows]) {
    const NorseCharge<acc_t> c = norse_charge(state[0], state[1], x, p);
    acc_t v = c.v_dec;
    if (kSpiking) {
      const acc_t z = c.v_dec - p.v_th > acc_t(0) ? acc_t(1) : acc_t(0);
      v = (acc_t(1) - z) * c.v_dec + z * p.v_reset;
      out[0] = z;
    }
    state[0] = round_to_storage<scalar_t>(v);
    state[1] = round_to_storage<scalar_t>(c.i_dec);
    out[kRowV] = state[0];
    out[kRowV + 1] = state[1];
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return true; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0], given.state[1]};
  }
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    const bool v_new = given.rows[kRowV] || r.v_next;
    const bool spike = kSpiking && (given.rows[0] || v_new);
    const bool v_dec = kSpiking ? spike : v_new;
    const bool i_dec = given.rows[kRowV + 1] || r.i_next;
    r.v_next = v_dec;
    r.i_next = i_dec || v_dec;  // i_new_t feeds v_dec_t and i_t
    return {as_flag<acc_t>(v_new), as_flag<acc_t>(spike), as_flag<acc_t>(v_dec),
            as_flag<acc_t>(i_dec)};
  }
  // saved = (v_t, i_t), prev = (v_{t-1}, i_{t-1}); carries dL/dv_t, dL/di_t through step t + 1;
  // grad_c = (a, b, v_leak[, v_th, v_reset]).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const NorseParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/, acc_t x,
                                        const acc_t (&)[2], const acc_t (&prev)[2],
                                        const acc_t (&grad_rows)[kRows], acc_t (&carry)[2],
                                        acc_t (&grad_c)[kConstants]) {
    const NorseCharge<acc_t> c = norse_charge(prev[0], prev[1], x, p);
    const acc_t gv = grad_rows[kRowV] + carry[0];      // dL/dv_t
    const acc_t gi = grad_rows[kRowV + 1] + carry[1];  // dL/di_t
    acc_t g_vdec = gv;
    if (kSpiking) {
      // v_t = (1 - z) * v_dec + z * v_reset
      const acc_t zc = c.v_dec - p.v_th;
      const acc_t z = zc > acc_t(0) ? acc_t(1) : acc_t(0);
      const acc_t sg = surrogate_grad<kSurrogate>(zc, o.alpha);
      const acc_t reset_product = gv * (p.v_reset - c.v_dec);  // computed, then selected
      const acc_t gz = grad_rows[0] + (f.v_new > acc_t(0) ? reset_product : acc_t(0));
      const acc_t spike_product = gz * sg;
      const acc_t spike_term = f.spike > acc_t(0) ? spike_product : acc_t(0);
      g_vdec = gv * (acc_t(1) - z) + spike_term;
      grad_c[kSpiking ? 3 : 0] -= spike_term;
      grad_c[kSpiking ? 4 : 0] += gv * z;
    }
    acc_t carry2[2];
    const acc_t gx = norse_charge_backward(g_vdec, gi, c, p, f.v_dec, f.i_dec, carry2, grad_c);
    carry[0] = carry2[0];
    carry[1] = carry2[1];
    return gx;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const NorseParams<acc_t>&, const acc_t (&)[2],
                                     const acc_t (&carry)[2], acc_t (&grad_initial)[2],
                                     acc_t (&)[kConstants]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
  }
};

using NorseLif = NorseModel<true>;
using NorseLi = NorseModel<false>;

// Norse's adaptive LIF without recurrence (norse.torch.functional.lsnn.lsnn_feed_forward_step), the
// LSNN of Bellec et al. 2018: a threshold b that rises by beta with each spike and decays back to
// v_th. Constants a = dt * tau_mem_inv, s = -dt * tau_syn_inv, c = dt * tau_adapt_inv (computed by
// the caller, as Norse computes them), v_leak, v_th, v_reset, beta. States v, i, b; rows spikes,
// v, i, b. Per lane, operation for operation as Norse (note: the input enters the current after
// the step, so x_t reaches the membrane at step t + 1):
//     v_dec = v + a * ((v_leak - v) + i)      i_dec = i + s * i      b_dec = b + c * (v_th - b)
//     z_t = [v_dec - b_dec > 0]
//     v_t = (1 - z_t) * v_dec + z_t * v_reset      b_t = b_dec + z_t * beta      i_t = i_dec + x_t
// The backward rebuilds the decayed values from the saved v, i and b of step t - 1.
template <typename acc_t>
struct LsnnParams {
  acc_t a, s, c, v_leak, v_th, v_reset, beta;
};

template <typename acc_t>
struct LsnnDecay {
  acc_t w, v_dec, i_dec, b_dec, z, zc;
};

template <typename acc_t>
C10_HOST_DEVICE inline LsnnDecay<acc_t> lsnn_decay(acc_t v, acc_t i, acc_t b,
                                                   const LsnnParams<acc_t>& p) {
  LsnnDecay<acc_t> d;
  d.w = (p.v_leak - v) + i;
  d.v_dec = v + p.a * d.w;
  d.i_dec = i + p.s * i;
  d.b_dec = b + p.c * (p.v_th - b);
  d.zc = d.v_dec - d.b_dec;
  d.z = d.zc > acc_t(0) ? acc_t(1) : acc_t(0);
  return d;
}

struct NorseLsnn : SurrogateOnlyOptions {
  static constexpr int kStates = 3, kCarries = 3, kRows = 4, kConstants = 7;
  struct Reach {
    bool v_next, i_next, b_next;  // v_t, i_t, b_t reach the loss through step t + 1 (or the state)
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t v_new, spike, i_dec;
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE LsnnParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[7],
                                                  int j) {
    return {c[0][j], c[1][j], c[2][j], c[3][j], c[4][j], c[5][j], c[6][j]};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const LsnnParams<acc_t>& p, const Options<acc_t>&, acc_t x,
                                      acc_t (&state)[3], acc_t (&out)[4]) {
    const LsnnDecay<acc_t> d = lsnn_decay(state[0], state[1], state[2], p);
    state[0] = round_to_storage<scalar_t>((acc_t(1) - d.z) * d.v_dec + d.z * p.v_reset);
    state[1] = round_to_storage<scalar_t>(d.i_dec + x);
    state[2] = round_to_storage<scalar_t>(d.b_dec + d.z * p.beta);
    out[0] = d.z;
    out[1] = state[0];
    out[2] = state[1];
    out[3] = state[2];
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0], given.state[1], given.state[2]};
  }
  // v_t reaches the loss through its row or v_dec_{t+1}; b_t through its row or b_dec_{t+1}; i_t
  // through its row, i_dec_{t+1} or v_dec_{t+1}. The spike z_t through its row, v_t or b_t; v_dec_t
  // and b_dec_t exactly when z_t does (each feeds z_t and one of v_t, b_t).
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    const bool v_new = given.rows[1] || r.v_next;
    const bool b_new = given.rows[3] || r.b_next;
    const bool i_new = given.rows[2] || r.i_next;
    const bool spike = given.rows[0] || v_new || b_new;
    r.v_next = spike;
    r.b_next = spike;
    r.i_next = i_new || spike;
    return {as_flag<acc_t>(v_new), as_flag<acc_t>(spike), as_flag<acc_t>(i_new)};
  }
  // prev = (v, i, b) of step t - 1; carries dL/dv_t, dL/di_t, dL/db_t through step t + 1;
  // grad_c = (a, s, c, v_leak, v_th, v_reset, beta).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const LsnnParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&)[3], const acc_t (&prev)[3],
                                        const acc_t (&grad_rows)[4], acc_t (&carry)[3],
                                        acc_t (&grad_c)[7]) {
    const LsnnDecay<acc_t> d = lsnn_decay(prev[0], prev[1], prev[2], p);
    const acc_t gv = grad_rows[1] + carry[0];  // dL/dv_t
    const acc_t gi = grad_rows[2] + carry[1];  // dL/di_t = dL/dx_t = dL/di_dec
    const acc_t gb = grad_rows[3] + carry[2];  // dL/db_t
    // v_t = (1 - z) * v_dec + z * v_reset; b_t = b_dec + z * beta
    const acc_t reset_product = gv * (p.v_reset - d.v_dec);  // computed, then selected
    const acc_t gz = (grad_rows[0] + (f.v_new > acc_t(0) ? reset_product : acc_t(0))) + gb * p.beta;
    grad_c[5] += gv * d.z;
    grad_c[6] += gb * d.z;
    const acc_t sg = surrogate_grad<kSurrogate>(d.zc, o.alpha);
    const acc_t spike_product = gz * sg;
    const acc_t spike_term = f.spike > acc_t(0) ? spike_product : acc_t(0);
    const acc_t g_vdec = gv * (acc_t(1) - d.z) + spike_term;
    const acc_t g_bdec = gb - spike_term;
    // b_dec = b + c * (v_th - b)
    const acc_t c_product = g_bdec * (p.v_th - prev[2]);
    grad_c[2] += f.spike > acc_t(0) ? c_product : acc_t(0);
    const acc_t g_cb = g_bdec * p.c;
    grad_c[4] += g_cb;
    // i_dec = i + s * i
    const acc_t s_product = gi * prev[1];
    grad_c[1] += f.i_dec > acc_t(0) ? s_product : acc_t(0);
    // v_dec = v + a * w, w = (v_leak - v) + i
    const acc_t a_product = g_vdec * d.w;
    grad_c[0] += f.spike > acc_t(0) ? a_product : acc_t(0);
    const acc_t g_w = g_vdec * p.a;
    grad_c[3] += g_w;
    carry[0] = g_vdec - g_w;
    carry[1] = (gi + gi * p.s) + g_w;
    carry[2] = g_bdec - g_cb;
    return gi;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const LsnnParams<acc_t>&, const acc_t (&)[3],
                                     const acc_t (&carry)[3], acc_t (&grad_initial)[3],
                                     acc_t (&)[7]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
    grad_initial[2] = carry[2];
  }
};

// The adaptive LIF neuron (ALIF) in its common discrete form (Bellec et al. 2018; Yin et al. 2021),
// no installed original (snn_cuda.reference.alif is the oracle). States v, a, z (the previous
// spike, with its surrogate gradient); rows spikes, v, a (saved: v, a, spikes); constants alpha,
// rho, beta, threshold; carries dL/dv_t, dL/da_t, dL/dz_t. Per lane:
//     a_t = rho * a_{t-1} + (1 - rho) * z_{t-1}
//     A_t = threshold + beta * a_t
//     v_t = (alpha * v_{t-1} + (1 - alpha) * x_t) - A_t * z_{t-1}
//     z_t = [v_t - A_t > 0]
// v and a are kept at the input's precision (float16/bfloat16), as the other models' states.
template <typename acc_t>
struct AlifParams {
  acc_t alpha, rho, beta, threshold;
};

struct Alif : SurrogateOnlyOptions {
  static constexpr int kStates = 3, kCarries = 3, kRows = 3, kConstants = 4;
  struct Reach {
    bool v_next, a_next, z_next;  // v_t, a_t, z_t reach the loss through step t + 1 (or the state)
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, v, a;  // z_t, v_t (and A_t), a_t reach the loss
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE AlifParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[4],
                                                  int j) {
    return {c[0][j], c[1][j], c[2][j], c[3][j]};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const AlifParams<acc_t>& p, const Options<acc_t>&, acc_t x,
                                      acc_t (&state)[3], acc_t (&out)[3]) {
    const acc_t z_prev = state[2];
    const acc_t a = round_to_storage<scalar_t>(p.rho * state[1] + (acc_t(1) - p.rho) * z_prev);
    const acc_t adaptive = p.threshold + p.beta * a;
    const acc_t v = round_to_storage<scalar_t>((p.alpha * state[0] + (acc_t(1) - p.alpha) * x) -
                                               adaptive * z_prev);
    const acc_t z = v - adaptive > acc_t(0) ? acc_t(1) : acc_t(0);
    state[0] = v;
    state[1] = a;
    state[2] = z;
    out[0] = z;
    out[1] = v;
    out[2] = a;
  }
  // x_t is read for alpha's gradient.
  static C10_HOST_DEVICE bool needs_input(int, bool grad_alpha) { return grad_alpha; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0], given.state[1], given.state[2]};
  }
  // z_t reaches the loss through its row or step t + 1; v_t through its row, z_t or v_{t+1}; A_t
  // whenever v_t does (v_t depends on it, and z_t on both); a_t through its row, A_t or a_{t+1}.
  // Step t + 1 reads v_t (through v_{t+1}), a_t (through a_{t+1}) and z_t (through both).
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    const bool spike = given.rows[0] || r.z_next;
    const bool v = given.rows[1] || r.v_next || spike;
    const bool a = given.rows[2] || r.a_next || v;
    r.v_next = v;
    r.a_next = a;
    r.z_next = a;  // a || v, and v implies a
    return {as_flag<acc_t>(spike), as_flag<acc_t>(v), as_flag<acc_t>(a)};
  }
  // saved = (v_t, a_t, z_t); prev = (v, a, z) of step t - 1 (the initial states at t = 0);
  // grad_c = (alpha, rho, beta, threshold).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const AlifParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/, acc_t x,
                                        const acc_t (&saved)[3], const acc_t (&prev)[3],
                                        const acc_t (&grad_rows)[3], acc_t (&carry)[3],
                                        acc_t (&grad_c)[4]) {
    const acc_t adaptive = p.threshold + p.beta * saved[1];
    const acc_t sg = surrogate_grad<kSurrogate>(saved[0] - adaptive, o.alpha);
    const acc_t spike_product = (grad_rows[0] + carry[2]) * sg;
    const acc_t g_zv = f.spike > acc_t(0) ? spike_product : acc_t(0);  // dL/d(v_t - A_t)
    const acc_t gv = (grad_rows[1] + carry[0]) + g_zv;                 // dL/dv_t
    const acc_t reset_product = gv * prev[2];
    const acc_t g_adaptive = -g_zv - (f.v > acc_t(0) ? reset_product : acc_t(0));  // dL/dA_t
    const acc_t ga = (grad_rows[2] + carry[1]) + g_adaptive * p.beta;  // dL/da_t
    const acc_t beta_product = g_adaptive * saved[1];
    grad_c[2] += f.v > acc_t(0) ? beta_product : acc_t(0);
    grad_c[3] += g_adaptive;
    // v_t = alpha * v_{t-1} + (1 - alpha) * x_t - A_t * z_{t-1}
    const acc_t alpha_product = gv * prev[0] - gv * x;
    grad_c[0] += f.v > acc_t(0) ? alpha_product : acc_t(0);
    // a_t = rho * a_{t-1} + (1 - rho) * z_{t-1}
    const acc_t rho_product = ga * prev[1] - ga * prev[2];
    grad_c[1] += f.a > acc_t(0) ? rho_product : acc_t(0);
    const acc_t threshold_product = gv * -adaptive;
    carry[0] = gv * p.alpha;
    carry[1] = ga * p.rho;
    carry[2] = (f.v > acc_t(0) ? threshold_product : acc_t(0)) + ga * (acc_t(1) - p.rho);
    return gv * (acc_t(1) - p.alpha);
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const AlifParams<acc_t>&, const acc_t (&)[3],
                                     const acc_t (&carry)[3], acc_t (&grad_initial)[3],
                                     acc_t (&)[4]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
    grad_initial[2] = carry[2];
  }
};

// snnTorch's RLeaky with one-to-one recurrence (all_to_all=False, reset_delay=True): Leaky plus the
// previous spike fed back, weighted per neuron by V. States spk, mem (each its own row: spikes,
// mem); constants beta (clamped by the caller), V, threshold. Per lane, r_t = [mem_{t-1} - theta > 0]
// detached, s_{t-1} the previous spike (the initial spk at t = 0) with its surrogate gradient:
//     b_t = (beta * mem_{t-1} + x_t) + V * s_{t-1}
//     subtract: mem_t = b_t - r_t * theta   zero: mem_t = b_t - r_t * b_t   none: mem_t = b_t
//     s_t = [mem_t - theta > 0]
// all_to_all=True runs one step per call with V = 1 and the recurrent layer's output as s_{t-1}
// (snn_cuda.RLeaky), which is the same arithmetic.
template <typename acc_t>
struct RleakyParams {
  acc_t beta, v, threshold;
};

template <int kReset>
struct SnntorchRleaky : SurrogateOnlyOptions {
  static constexpr int kStates = 2, kConstants = 3, kRows = 2, kCarries = 2;
  struct Reach {
    bool spk_next, mem_next;  // s_t, mem_t reach the loss through step t + 1 (or the state)
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, mem;
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE RleakyParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[3],
                                                    int j) {
    return {c[0][j], c[1][j], c[2][j]};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const RleakyParams<acc_t>& p, const Options<acc_t>&, acc_t x,
                                      acc_t (&state)[2], acc_t (&out)[2]) {
    const acc_t mem_prev = state[1];
    const acc_t r = mem_prev - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t b = (p.beta * mem_prev + x) + p.v * state[0];
    const acc_t mem =
        round_to_storage<scalar_t>(snntorch_delayed_reset<kReset>(b, r, p.threshold));
    const acc_t s = mem - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    out[0] = s;
    out[1] = mem;
    state[0] = s;
    state[1] = mem;
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0], given.state[1]};
  }
  // s_t reaches the loss through its row or b_{t+1}; mem_t through its row, s_t or b_{t+1}; b_t
  // exactly when mem_t does. s_{t-1} and mem_{t-1} feed b_t.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    const bool spike = given.rows[0] || r.spk_next;
    const bool mem = given.rows[1] || spike || r.mem_next;
    r.spk_next = mem;
    r.mem_next = mem;
    return {as_flag<acc_t>(spike), as_flag<acc_t>(mem)};
  }
  // saved = (s_t, mem_t), prev = (s_{t-1}, mem_{t-1}); carries dL/ds_t, dL/dmem_t through step
  // t + 1; grad_c = (beta, V, threshold).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const RleakyParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&saved)[2],
                                        const acc_t (&prev)[2], const acc_t (&grad_rows)[2],
                                        acc_t (&carry)[2], acc_t (&grad_c)[3]) {
    const acc_t gs = grad_rows[0] + carry[0];  // dL/ds_t
    const acc_t spike_term =
        snntorch_spike_bwd<kSurrogate>(gs, saved[1], p.threshold, o.alpha, f.spike, grad_c[2]);
    const acc_t gm = (grad_rows[1] + carry[1]) + spike_term;  // dL/dmem_t
    const acc_t r = prev[1] - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t gb = snntorch_delayed_reset_bwd<kReset>(gm, r, grad_c[2]);  // dL/db_t
    const acc_t beta_product = gb * prev[1];
    grad_c[0] += f.mem > acc_t(0) ? beta_product : acc_t(0);
    const acc_t v_product = gb * prev[0];
    grad_c[1] += f.mem > acc_t(0) ? v_product : acc_t(0);
    carry[0] = gb * p.v;
    carry[1] = gb * p.beta;
    return gb;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const RleakyParams<acc_t>&, const acc_t (&)[2],
                                     const acc_t (&carry)[2], acc_t (&grad_initial)[2],
                                     acc_t (&)[3]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
  }
};

// snnTorch's RSynaptic with one-to-one recurrence (all_to_all=False, reset_delay=True): Synaptic
// plus the previous spike fed back into the synaptic current. States spk, syn, mem (rows spikes,
// syn, mem); constants alpha, beta (clamped by the caller), V, threshold. Per lane, r_t as in
// Synaptic and s_{t-1} the previous spike with its surrogate gradient:
//     syn_t = ((alpha * syn_{t-1}) + x_t) + V * s_{t-1}
//     b_t   = beta * mem_{t-1} + syn_t
//     subtract: mem_t = b_t - r_t * theta   zero: mem_t = b_t - b_t * r_t   none: mem_t = b_t
//     s_t = [mem_t - theta > 0]
template <typename acc_t>
struct RsynapticParams {
  acc_t alpha, beta, v, threshold;
};

template <int kReset>
struct SnntorchRsynaptic : SurrogateOnlyOptions {
  static constexpr int kStates = 3, kConstants = 4, kRows = 3, kCarries = 3;
  struct Reach {
    bool spk_next, syn_next, mem_next;  // s_t, syn_t, mem_t reach the loss through step t + 1
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t spike, syn, mem;
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE RsynapticParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[4],
                                                       int j) {
    return {c[0][j], c[1][j], c[2][j], c[3][j]};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const RsynapticParams<acc_t>& p, const Options<acc_t>&,
                                      acc_t x, acc_t (&state)[3], acc_t (&out)[3]) {
    const acc_t mem_prev = state[2];
    const acc_t r = mem_prev - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t syn = round_to_storage<scalar_t>((p.alpha * state[1] + x) + p.v * state[0]);
    const acc_t b = p.beta * mem_prev + syn;
    const acc_t mem =
        round_to_storage<scalar_t>(snntorch_delayed_reset<kReset>(b, r, p.threshold));
    const acc_t s = mem - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    out[0] = s;
    out[1] = syn;
    out[2] = mem;
    state[0] = s;
    state[1] = syn;
    state[2] = mem;
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads& given) {
    return {given.state[0], given.state[1], given.state[2]};
  }
  // s_t reaches the loss through its row or syn_{t+1}; mem_t through its row, s_t or mem_{t+1};
  // syn_t through its row, mem_t (b_t) or syn_{t+1}.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>&, int64_t, int64_t) {
    const bool spike = given.rows[0] || r.spk_next;
    const bool mem = given.rows[2] || spike || r.mem_next;
    const bool syn = given.rows[1] || mem || r.syn_next;
    r.spk_next = syn;
    r.syn_next = syn;
    r.mem_next = mem;
    return {as_flag<acc_t>(spike), as_flag<acc_t>(syn), as_flag<acc_t>(mem)};
  }
  // saved = (s_t, syn_t, mem_t), prev = those of step t - 1; carries dL/ds_t, dL/dsyn_t, dL/dmem_t
  // through step t + 1; grad_c = (alpha, beta, V, threshold).
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const RsynapticParams<acc_t>& p, const Options<acc_t>& o,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&saved)[3],
                                        const acc_t (&prev)[3], const acc_t (&grad_rows)[3],
                                        acc_t (&carry)[3], acc_t (&grad_c)[4]) {
    const acc_t gs = grad_rows[0] + carry[0];  // dL/ds_t
    const acc_t spike_term =
        snntorch_spike_bwd<kSurrogate>(gs, saved[2], p.threshold, o.alpha, f.spike, grad_c[3]);
    const acc_t gm = (grad_rows[2] + carry[2]) + spike_term;  // dL/dmem_t
    const acc_t r = prev[2] - p.threshold > acc_t(0) ? acc_t(1) : acc_t(0);
    const acc_t gb = snntorch_delayed_reset_bwd<kReset>(gm, r, grad_c[3]);  // dL/db_t
    const acc_t beta_product = gb * prev[2];
    grad_c[1] += f.mem > acc_t(0) ? beta_product : acc_t(0);
    const acc_t gsyn = (gb + grad_rows[1]) + carry[1];  // dL/dsyn_t = dL/dx_t
    const acc_t alpha_product = gsyn * prev[1];
    grad_c[0] += f.syn > acc_t(0) ? alpha_product : acc_t(0);
    const acc_t v_product = gsyn * prev[0];
    grad_c[2] += f.syn > acc_t(0) ? v_product : acc_t(0);
    carry[0] = gsyn * p.v;
    carry[1] = gsyn * p.alpha;
    carry[2] = gb * p.beta;
    return gsyn;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const RsynapticParams<acc_t>&, const acc_t (&)[3],
                                     const acc_t (&carry)[3], acc_t (&grad_initial)[3],
                                     acc_t (&)[4]) {
    grad_initial[0] = carry[0];
    grad_initial[1] = carry[1];
    grad_initial[2] = carry[2];
  }
};

// The seed's graded neuron (the equations at the top of this file), in both resets. Rows: states v_t,
// outputs o_t; state v (its saved row: the states row; the op returns no separate final state);
// a second saved stream, the outputs row, which gives back u_t = o_t + threshold while fired (read
// only for the proportional reset's threshold and penalty gradients); the gate g_t kept as a bit;
// rows delayed by one step with kFlagDelay (row 0 zeros, the last step's (v, o) not returned, as
// the seed's delayed layer). Constants decay, threshold, penalty and ratio = penalty / threshold
// (computed once per neuron by the op, as the reference computes it once); one carry dL/dv_t.
template <int kReset>
struct GradedNeuron {
  static constexpr int kStates = 1, kRows = 2, kConstants = 4, kCarries = 1;
  static constexpr int kSaved = 2, kBits = 1;
  static constexpr bool kShifts = true;
  template <typename acc_t>
  struct Options {
    bool delay;
  };
  struct Reach {
    bool u_next_reached;  // u_{t+1}
  };
  template <typename acc_t>
  struct StepFlags {
    acc_t v, u;  // v_t, u_t reach the loss (0/1 floats: a select on a compare vectorises)
  };

  template <int kBlock, typename acc_t>
  static C10_HOST_DEVICE NeuronParams<acc_t> params(const LaneConstant<kBlock, acc_t> (&c)[4],
                                                    int j) {
    return {c[0][j], c[1][j], c[2][j], c[3][j]};
  }
  template <typename acc_t>
  static C10_HOST_DEVICE Options<acc_t> options(int flags, acc_t) {
    return {(flags & kFlagDelay) != 0};
  }
  static C10_HOST_DEVICE bool needs_input(int, bool) { return false; }
  static C10_HOST_DEVICE Reach reach_after_last(const GivenGrads&) { return {false}; }
  // v_t reaches the loss through its returned row or through u_{t+1}; o_t through its row or
  // (subtract) through v_t; u_t through either. With delay, step t's values are in row t + 1.
  template <typename acc_t>
  static C10_HOST_DEVICE StepFlags<acc_t> reach(Reach& r, const GivenGrads& given,
                                                const Options<acc_t>& o, int64_t t, int64_t T) {
    const bool returned = t + (o.delay ? 1 : 0) < T;
    const bool v_reached = (returned && given.rows[0]) || r.u_next_reached;
    const bool o_reached = (returned && given.rows[1]) || (kReset == kResetSubtract && v_reached);
    const bool u_reached = v_reached || o_reached;
    r.u_next_reached = u_reached;
    return {v_reached ? acc_t(1) : acc_t(0), u_reached ? acc_t(1) : acc_t(0)};
  }
  template <typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE void forward(const NeuronParams<acc_t>& p, const Options<acc_t>&, acc_t x,
                                      acc_t (&state)[1], acc_t (&out)[2], uint32_t& fired) {
    lif_fwd_step<kReset>(x, p, state[0], out[1], fired);
    out[0] = state[0];
  }
  // saved: (v_t, o_t); prev: v_{t-1} (the initial state at t = 0), read for the decay gradient.
  template <int kSurrogate, typename scalar_t, typename acc_t>
  static C10_HOST_DEVICE acc_t backward(const NeuronParams<acc_t>& p, const Options<acc_t>&,
                                        const StepFlags<acc_t>& f, acc_t /*after_first*/,
                                        acc_t /*x*/, const acc_t (&saved)[2],
                                        const acc_t (&prev)[1], const acc_t (&grad_rows)[2],
                                        acc_t (&carry)[1], acc_t (&grad_c)[4], uint32_t fired) {
    // While fired, o_t = u_t - threshold (only read by the proportional reset).
    const acc_t u = saved[1] + p.threshold;
    const acc_t grad_u = lif_bwd_step<kReset>(carry[0] + grad_rows[0], grad_rows[1], fired, u, p,
                                              f.v, grad_c[1], grad_c[2]);
    carry[0] = grad_u * p.decay;  // dL/dv_{t-1} through u_t = I_t + decay * v_{t-1}
    const acc_t decay_term = grad_u * prev[0];
    grad_c[0] += f.u > acc_t(0) ? decay_term : acc_t(0);
    return grad_u;
  }
  template <int kSurrogate, typename acc_t>
  static C10_HOST_DEVICE void finish(const Reach&, const Options<acc_t>&, int64_t,
                                     const NeuronParams<acc_t>&, const acc_t (&)[1],
                                     const acc_t (&carry)[1], acc_t (&grad_initial)[1],
                                     acc_t (&)[4]) {
    grad_initial[0] = carry[0];  // dL/dv_{-1}
  }
};

// Runs model M's forward over all T steps for lanes [lane0, lane0 + n), n <= kBlock.
template <int kBlock, class M, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void neuron_forward_lanes(const NeuronForwardArgs<scalar_t, acc_t>& a,
                                                 int64_t lane0, int n) {
  using Traits = ModelTraits<M>;
  LaneConstant<kBlock, acc_t> c[M::kConstants];
  for (int q = 0; q < M::kConstants; ++q) c[q].load(a.constants[q], a.H, lane0);
  acc_t state[M::kStates][kBlock];
  for (int s = 0; s < M::kStates; ++s) load_initial<kBlock>(state[s], a.initial[s], lane0, n);
  const auto o = M::template options<acc_t>(a.flags, acc_t(0));
  const int64_t shift = Traits::kShifts && (a.flags & kFlagDelay) != 0 ? 1 : 0;
  uint32_t bits[Traits::kBits ? kBlock : 1];
  // Time in chunks of kChunk steps (one byte of bits): a chunk's input loads all go before its
  // chain (see StagedRow).
  for (int64_t t0 = 0; t0 < a.T; t0 += kChunk) {
    const int steps = chunk_steps(a.T, t0);
    StagedRow<kBlock, scalar_t, acc_t> in[kChunk];
    stage_chunk(in, a.input, t0, steps, a.lanes, lane0);
    if (Traits::kShifts && shift != 0 && t0 == 0) {
      // Row 0 of delayed rows holds zeros (stored after the first chunk's loads, which it would
      // otherwise hold back).
      for (int r = 0; r < M::kRows; ++r) {
        for (int j = 0; j < n; ++j) a.rows[r][lane0 + j] = scalar_t(0);
      }
    }
    for (int j = 0; j < n && Traits::kBits; ++j) bits[j] = 0;
    SNN_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      if (k >= steps) continue;
      const int64_t row = t0 + k + shift;
      if (!Traits::kShifts || row < a.T) {
        const int64_t off = row * a.lanes + lane0;
        scalar_t* rows[M::kRows];
        for (int r = 0; r < M::kRows; ++r) rows[r] = a.rows[r] + off;
        SNN_LANE_LOOP  // [lane loop]: vectorised on the CPU (tests/test_vectorisation.py checks)
        for (int j = 0; j < n; ++j) {
          acc_t st[M::kStates], out[M::kRows];
          for (int s = 0; s < M::kStates; ++s) st[s] = state[s][j];
          if constexpr (Traits::kBits) {
            uint32_t fired;
            M::template forward<scalar_t>(M::params(c, j), o, in[k][j], st, out, fired);
            bits[j] |= fired << k;
          } else {
            M::template forward<scalar_t>(M::params(c, j), o, in[k][j], st, out);
          }
          for (int r = 0; r < M::kRows; ++r) rows[r][j] = static_cast<scalar_t>(out[r]);
          for (int s = 0; s < M::kStates; ++s) state[s][j] = st[s];
        }
      } else if constexpr (Traits::kShifts) {
        // The last step of delayed rows: its rows are not returned, only its state and bit kept.
        SNN_LANE_LOOP  // [lane loop, kShifts]: vectorised on the CPU (tests/test_vectorisation.py)
        for (int j = 0; j < n; ++j) {
          acc_t st[M::kStates], out[M::kRows];
          for (int s = 0; s < M::kStates; ++s) st[s] = state[s][j];
          if constexpr (Traits::kBits) {
            uint32_t fired;
            M::template forward<scalar_t>(M::params(c, j), o, in[k][j], st, out, fired);
            bits[j] |= fired << k;
          } else {
            M::template forward<scalar_t>(M::params(c, j), o, in[k][j], st, out);
          }
          for (int s = 0; s < M::kStates; ++s) state[s][j] = st[s];
        }
      }
    }
    if constexpr (Traits::kBits) {
      uint8_t* bit_row = a.bits + (t0 / kChunk) * a.lanes + lane0;
      for (int j = 0; j < n; ++j) bit_row[j] = static_cast<uint8_t>(bits[j]);
    }
  }
  for (int s = 0; s < M::kStates; ++s) {
    if (a.state[s] == nullptr) continue;
    for (int j = 0; j < n; ++j) a.state[s][lane0 + j] = static_cast<scalar_t>(state[s][j]);
  }
}

// Runs model M's backward from t = T - 1 down to 0 for lanes [lane0, lane0 + n); absent streams
// read as zeros.
template <int kBlock, class M, int kSurrogate, typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void neuron_backward_lanes(const NeuronBackwardArgs<scalar_t, acc_t>& a,
                                                  int64_t lane0, int n) {
  using Traits = ModelTraits<M>;
  constexpr int kSaved = Traits::kSaved;
  constexpr int kExtra = kSaved > M::kStates ? kSaved - M::kStates : 1;  // saved rows read at t only
  GivenGrads given;
  bool any_given = false;
  for (int r = 0; r < M::kRows; ++r) any_given |= given.rows[r] = a.grad_rows[r] != nullptr;
  for (int s = 0; s < M::kStates; ++s) any_given |= given.state[s] = a.grad_state[s] != nullptr;
  if (!any_given) {
    // Nothing reaches the loss: every gradient is zero (autograd would run no node at all).
    for (int64_t t = 0; t < a.T; ++t) {
      for (int j = 0; j < n; ++j) a.grad_input[t * a.lanes + lane0 + j] = scalar_t(0);
    }
    for (int j = 0; j < n; ++j) {
      for (int s = 0; s < M::kStates; ++s) {
        if (a.grad_initial[s] != nullptr) a.grad_initial[s][lane0 + j] = scalar_t(0);
      }
      for (int q = 0; q < M::kConstants; ++q) {
        if (a.grad_constants[q] != nullptr) a.grad_constants[q][lane0 + j] = acc_t(0);
      }
    }
    return;
  }
  LaneConstant<kBlock, acc_t> c[M::kConstants];
  for (int q = 0; q < M::kConstants; ++q) c[q].load(a.constants[q], a.H, lane0);
  acc_t carry[M::kCarries][kBlock], grad_c[M::kConstants][kBlock];
  acc_t cur[M::kStates][kBlock];  // the states' saved rows of step t
  uint32_t bits[Traits::kBits ? kBlock : 1];
  const ZeroRow<kBlock, scalar_t> zero_row;
  const scalar_t* const zeros = zero_row.get();
  // With kFlagDelay (kShifts models) the rows of step t are in row t + 1; the last step's in none.
  const int64_t shift = Traits::kShifts && (a.flags & kFlagDelay) != 0 ? 1 : 0;
  const scalar_t* initial[M::kStates];
  for (int s = 0; s < M::kStates; ++s) {
    initial[s] = a.initial[s] != nullptr ? a.initial[s] + lane0 : zeros;
    const int64_t last_row = a.T - 1 + shift;
    const scalar_t* last = a.saved[s] != nullptr && last_row < a.T
                               ? a.saved[s] + last_row * a.lanes + lane0
                               : zeros;
    // The state after the last step is what the state carries stand for.
    const scalar_t* grad_state = a.grad_state[s] != nullptr ? a.grad_state[s] + lane0 : zeros;
    for (int j = 0; j < n; ++j) {
      cur[s][j] = static_cast<acc_t>(read_or_zero(last, j));
      carry[s][j] = static_cast<acc_t>(read_or_zero(grad_state, j));
    }
  }
  for (int j = 0; j < n; ++j) {
    for (int e = M::kStates; e < M::kCarries; ++e) carry[e][j] = acc_t(0);
    for (int q = 0; q < M::kConstants; ++q) grad_c[q][j] = acc_t(0);
  }
  // Read once into locals: a.alpha is a float the compiler would otherwise have to reload after
  // every store to grad_input (they may alias), which keeps the CPU loop from vectorising.
  const auto o = M::template options<acc_t>(a.flags, a.alpha);
  const bool need_x = M::needs_input(a.flags, a.grad_constants[0] != nullptr);
  typename M::Reach reach = M::reach_after_last(given);
  // Chunks of kChunk steps, last first: a chunk's loads (upstream gradients, the previous saved
  // rows, the input) all go before its chain; slot i holds step t0 + i.
  const int64_t last_chunk = a.T > 0 ? (a.T - 1) / kChunk * kChunk : -1;
  for (int64_t t0 = last_chunk; t0 >= 0; t0 -= kChunk) {
    const int steps = chunk_steps(a.T, t0);
    if constexpr (Traits::kBits) {
      const uint8_t* bit_row = a.bits + (t0 / kChunk) * a.lanes + lane0;
      for (int j = 0; j < n; ++j) bits[j] = bit_row[j];
    }
    StagedRow<kBlock, scalar_t, acc_t> g_in[M::kRows][kChunk], prev_in[M::kStates][kChunk],
        extra_in[kExtra][kChunk], x_in[kChunk];
    SNN_UNROLL
    for (int i = 0; i < kChunk; ++i) {
      if (i >= steps) continue;
      const int64_t t = t0 + i;
      const int64_t row = t + shift;
      const bool returned = !Traits::kShifts || row < a.T;  // step t's rows were written
      const int64_t off = row * a.lanes + lane0;
      for (int r = 0; r < M::kRows; ++r) {
        g_in[r][i].load(returned && a.grad_rows[r] != nullptr ? a.grad_rows[r] + off : zeros);
      }
      x_in[i].load(need_x ? a.input + t * a.lanes + lane0 : zeros);
      // The states' saved rows of step t - 1, or before step 0 the initial state.
      for (int s = 0; s < M::kStates; ++s) {
        prev_in[s][i].load(row == 0                ? initial[s]
                           : a.saved[s] != nullptr ? a.saved[s] + off - a.lanes
                                                   : zeros);
      }
      for (int e = 0; e < kSaved - M::kStates; ++e) {
        const scalar_t* stream = a.saved[M::kStates + e];
        extra_in[e][i].load(returned && stream != nullptr ? stream + off : zeros);
      }
    }
    SNN_UNROLL
    for (int i = kChunk - 1; i >= 0; --i) {
      if (i >= steps) continue;
      const int64_t t = t0 + i;
      auto flags = M::reach(reach, given, o, t, a.T);
      SNN_OPAQUE(flags);
      scalar_t* gx = a.grad_input + t * a.lanes + lane0;
      const acc_t after_first = t > 0 ? acc_t(1) : acc_t(0);  // a float flag, as above
      SNN_LANE_LOOP  // [lane loop]: vectorised on the CPU (tests/test_vectorisation.py checks)
      for (int j = 0; j < n; ++j) {
        acc_t saved[kSaved], prev[M::kStates], grads[M::kRows], car[M::kCarries];
        acc_t gc[M::kConstants];
        for (int s = 0; s < M::kStates; ++s) {
          saved[s] = cur[s][j];
          prev[s] = prev_in[s][i][j];
        }
        for (int e = 0; e < kSaved - M::kStates; ++e) saved[M::kStates + e] = extra_in[e][i][j];
        for (int r = 0; r < M::kRows; ++r) grads[r] = g_in[r][i][j];
        for (int e = 0; e < M::kCarries; ++e) car[e] = carry[e][j];
        for (int q = 0; q < M::kConstants; ++q) gc[q] = grad_c[q][j];
        acc_t grad_x;
        if constexpr (Traits::kBits) {
          grad_x = M::template backward<kSurrogate, scalar_t>(M::params(c, j), o, flags,
                                                              after_first, x_in[i][j], saved, prev,
                                                              grads, car, gc, (bits[j] >> i) & 1u);
        } else {
          grad_x = M::template backward<kSurrogate, scalar_t>(
              M::params(c, j), o, flags, after_first, x_in[i][j], saved, prev, grads, car, gc);
        }
        gx[j] = static_cast<scalar_t>(grad_x);
        for (int e = 0; e < M::kCarries; ++e) carry[e][j] = car[e];
        for (int q = 0; q < M::kConstants; ++q) grad_c[q][j] = gc[q];
        for (int s = 0; s < M::kStates; ++s) cur[s][j] = prev[s];
      }
    }
  }
  for (int j = 0; j < n; ++j) {
    acc_t init[M::kStates], car[M::kCarries], grad_init[M::kStates], gc[M::kConstants];
    for (int s = 0; s < M::kStates; ++s) init[s] = cur[s][j];
    for (int e = 0; e < M::kCarries; ++e) car[e] = carry[e][j];
    for (int q = 0; q < M::kConstants; ++q) gc[q] = grad_c[q][j];
    M::template finish<kSurrogate>(reach, o, a.T, M::params(c, j), init, car, grad_init, gc);
    for (int s = 0; s < M::kStates; ++s) {
      if (a.grad_initial[s] != nullptr) {
        a.grad_initial[s][lane0 + j] = static_cast<scalar_t>(grad_init[s]);
      }
    }
    for (int q = 0; q < M::kConstants; ++q) {
      if (a.grad_constants[q] != nullptr) a.grad_constants[q][lane0 + j] = gc[q];
    }
  }
}

}  // namespace snn_cuda
