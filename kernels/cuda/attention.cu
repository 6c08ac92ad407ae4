// Attention kernels (minmo_kernels/attention.h).
//
// Decode and prefill share one warp-per-query-row routine: a warp owns one (token, query head)
// row, holds the running max / sum / output of an online softmax, and walks its key range in
// tiles of 32 keys: lane j scores key j of the tile (16-byte loads of the K row, q broadcast from
// shared memory), then the warp accumulates the tile's V rows, lane l owning the output pairs
// (2j, 2j + 1) with j = l + 32e < D/2 (D = 32: lanes 16..31 own none). The warps of a block
// serve query heads of the same KV head, so K/V rows are shared through L1. Decode splits the
// keys into chunks (one block per chunk and KV head) and writes partial (max, sum, output)
// triples that a second kernel combines (flash-decoding).
#include <cmath>
#include <type_traits>

#include "../common/args.h"
#include "qkv_rope.cuh"

namespace {

using namespace minmo_cuda;

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

bool aligned(const void* a, const void* b, const void* c, const void* d) {
  return aligned16(a) && aligned16(b) && aligned16(c) && aligned16(d);
}

constexpr int kWarps = 4;

// Head dims: 32, 64, 128, 192, 256 (minmo_args::head_dim_ok); window attention also 320 .. 512 in
// steps of 64 (minmo_args::window_head_dim_ok: the input projector's 448). Lane l owns output pairs
// j = l + 32e for e < pair_slots(D) and j < D/2: every V load, partial, output store and combine
// term is guarded by owns_pair, a compile-time true for D % 64 == 0 (those shapes compile to the
// code they had when the kernels were templated on D / 64).
__host__ __device__ constexpr int pair_slots(int D) { return (D + 63) / 64; }
template <int D>
__device__ __forceinline__ bool owns_pair(int lane, int e) {
  return D % 64 == 0 || lane + 32 * e < D / 2;
}

template <int D>
struct RowState {
  float m, l;
  float o[2 * pair_slots(D)];
};

// acc + dot(q, k) over the 8 bf16 values packed in each 16-byte chunk.
__device__ __forceinline__ float dot8_bf16(const uint4& qv, const uint4& kv, float acc) {
  const uint32_t qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(bf16_lo(qa[i]), bf16_lo(ka[i]), acc);
    acc = fmaf(bf16_hi(qa[i]), bf16_hi(ka[i]), acc);
  }
  return acc;
}

// Online-softmax update for one tile of 32 keys (lane j scored key j as s; `valid` false for lanes
// past the range): rescales the running sum and output, returns this lane's weight p.
template <int D>
__device__ __forceinline__ float softmax_tile(RowState<D>& st, float s, bool valid) {
  const float m_new = fmaxf(st.m, warp_max(s));  // finite: the tile has at least one key
  const float p = valid ? __expf(s - m_new) : 0.f;
  const float corr = __expf(st.m - m_new);  // 0 on the first tile (m = -inf)
  st.l = st.l * corr + warp_sum(p);
  st.m = m_new;
#pragma unroll
  for (int i = 0; i < 2 * pair_slots(D); ++i) st.o[i] *= corr;
  return p;
}

// Writes a row's partial (max, sum, output[D]) to the split-K workspace row dst (D + 2 floats).
template <int D>
__device__ __forceinline__ void store_partial(const RowState<D>& st, float* dst) {
  const int lane = threadIdx.x & 31;
  if (lane == 0) {
    dst[0] = st.m;
    dst[1] = st.l;
  }
#pragma unroll
  for (int e = 0; e < pair_slots(D); ++e)
    if (owns_pair<D>(lane, e))
      reinterpret_cast<float2*>(dst + 2)[lane + 32 * e] = make_float2(st.o[2 * e], st.o[2 * e + 1]);
}

// Attends one query row (q_s: bf16 row in shared memory, D values) to keys [k_begin, k_end) of
// one KV head (k, v: [max_seq, D]). Requires k_begin < k_end.
template <int D>
__device__ RowState<D> attend_range(const __nv_bfloat16* q_s, const __nv_bfloat16* __restrict__ k,
                                 const __nv_bfloat16* __restrict__ v, int64_t k_begin, int64_t k_end, float scale) {
  constexpr int P = pair_slots(D);
  const int lane = threadIdx.x & 31;
  RowState<D> st;
  st.m = -INFINITY;
  st.l = 0.f;
#pragma unroll
  for (int i = 0; i < 2 * P; ++i) st.o[i] = 0.f;
  const uint4* q4 = reinterpret_cast<const uint4*>(q_s);
  for (int64_t t0 = k_begin; t0 < k_end; t0 += 32) {
    const int64_t key = t0 + lane;
    float s = -INFINITY;
    if (key < k_end) {
      const uint4* kr = reinterpret_cast<const uint4*>(k + key * D);
      float dot = 0.f;
#pragma unroll 8
      for (int c = 0; c < D / 8; ++c) dot = dot8_bf16(q4[c], __ldg(kr + c), dot);
      s = dot * scale;
    }
    const float p = softmax_tile<D>(st, s, key < k_end);
    const uint32_t* vt = reinterpret_cast<const uint32_t*>(v + t0 * D);
    auto add_v = [&](int j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int e = 0; e < P; ++e) {
        if (!owns_pair<D>(lane, e)) continue;
        const uint32_t vv = __ldg(vt + j * (D / 2) + lane + 32 * e);
        st.o[2 * e] = fmaf(pj, bf16_lo(vv), st.o[2 * e]);
        st.o[2 * e + 1] = fmaf(pj, bf16_hi(vv), st.o[2 * e + 1]);
      }
    };
    if (k_end - t0 >= 32) {  // full tile: unrolled so that V loads overlap
#pragma unroll 8
      for (int j = 0; j < 32; ++j) add_v(j);
    } else {
      const int n = static_cast<int>(k_end - t0);
      for (int j = 0; j < n; ++j) add_v(j);
    }
  }
  return st;
}

// Copies this warp's q row (D bf16) into shared memory.
template <int D>
__device__ __forceinline__ void load_q_row(const __nv_bfloat16* q, __nv_bfloat16* q_s) {
  const int lane = threadIdx.x & 31;
  for (int c = lane; c < D / 8; c += 32) reinterpret_cast<uint4*>(q_s)[c] = reinterpret_cast<const uint4*>(q)[c];
  __syncwarp();
}

template <int D>
__device__ void store_row(const RowState<D>& st, float inv_l, __nv_bfloat16* out) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int e = 0; e < pair_slots(D); ++e) {
    if (!owns_pair<D>(lane, e)) continue;
    const __nv_bfloat162 pr = __floats2bfloat162_rn(st.o[2 * e] * inv_l, st.o[2 * e + 1] * inv_l);
    reinterpret_cast<__nv_bfloat162*>(out)[lane + 32 * e] = pr;
  }
}

// Grid (ceil(T * G / kWarps), Hkv). Row r of KV head h: token r / G, query head h * G + r % G.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kc,
                   const __nv_bfloat16* __restrict__ vc, const int32_t* __restrict__ pos, __nv_bfloat16* out,
                   int tokens, int heads_q, int group, int64_t max_seq, float scale) {
  __shared__ __align__(16) __nv_bfloat16 q_s[kWarps][D];
  const int warp = threadIdx.x / 32;
  const int r = blockIdx.x * kWarps + warp, h = blockIdx.y;
  if (r >= tokens * group) return;
  const int t = r / group, hq = h * group + r % group;
  const int64_t n_keys = min64(static_cast<int64_t>(*pos) + t + 1, max_seq);
  __nv_bfloat16* o = out + (static_cast<int64_t>(t) * heads_q + hq) * D;
  if (n_keys <= 0) {
    for (int i = threadIdx.x & 31; i < D; i += 32) o[i] = __float2bfloat16_rn(0.f);
    return;
  }
  load_q_row<D>(q + (static_cast<int64_t>(t) * heads_q + hq) * D, q_s[warp]);
  const RowState<D> st = attend_range<D>(q_s[warp], kc + h * max_seq * D, vc + h * max_seq * D, 0, n_keys, scale);
  store_row<D>(st, 1.f / st.l, o);
}

// Window attention: as prefill_kernel, but every row attends non-causally to the keys
// [max(*lo, 0), min(*pos + tokens, max_seq)) (the same range for all rows).
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    window_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kc,
                  const __nv_bfloat16* __restrict__ vc, const int32_t* __restrict__ pos,
                  const int32_t* __restrict__ lo, __nv_bfloat16* out, int tokens, int heads_q, int group,
                  int64_t max_seq, float scale) {
  __shared__ __align__(16) __nv_bfloat16 q_s[kWarps][D];
  const int warp = threadIdx.x / 32;
  const int r = blockIdx.x * kWarps + warp, h = blockIdx.y;
  if (r >= tokens * group) return;
  const int t = r / group, hq = h * group + r % group;
  const int64_t k_begin = *lo > 0 ? static_cast<int64_t>(*lo) : 0;
  const int64_t k_end = min64(static_cast<int64_t>(*pos) + tokens, max_seq);
  __nv_bfloat16* o = out + (static_cast<int64_t>(t) * heads_q + hq) * D;
  if (k_begin >= k_end) {
    for (int i = threadIdx.x & 31; i < D; i += 32) o[i] = __float2bfloat16_rn(0.f);
    return;
  }
  load_q_row<D>(q + (static_cast<int64_t>(t) * heads_q + hq) * D, q_s[warp]);
  const RowState<D> st = attend_range<D>(q_s[warp], kc + h * max_seq * D, vc + h * max_seq * D, k_begin, k_end, scale);
  store_row<D>(st, 1.f / st.l, o);
}

// Grid (splits, Hkv, ceil(G / kWarps)). Partial for query head hq and split s at
// ws[(hq * splits + s) * (D + 2)]: m, l, then D unnormalised outputs.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    decode_split_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kc,
                        const __nv_bfloat16* __restrict__ vc, const int32_t* __restrict__ pos, float* ws, int group,
                        int64_t max_seq, int64_t split_size, float scale) {
  __shared__ __align__(16) __nv_bfloat16 q_s[kWarps][D];
  const int warp = threadIdx.x / 32;
  const int g = blockIdx.z * kWarps + warp, h = blockIdx.y, split = blockIdx.x;
  const int64_t n_keys = min64(static_cast<int64_t>(*pos) + 1, max_seq);
  const int64_t k_begin = split * split_size, k_end = min64(k_begin + split_size, n_keys);
  if (g >= group || k_begin >= k_end) return;
  const int hq = h * group + g;
  load_q_row<D>(q + static_cast<int64_t>(hq) * D, q_s[warp]);
  const RowState<D> st = attend_range<D>(q_s[warp], kc + h * max_seq * D, vc + h * max_seq * D, k_begin, k_end, scale);
  store_partial<D>(st, ws + (static_cast<int64_t>(hq) * gridDim.x + split) * (D + 2));
}

// Grid Hq, block D threads: out[hq, d] = sum_s e^(m_s - M) o_s[d] / sum_s e^(m_s - M) l_s over the
// splits that hold keys. Every warp computes M and the denominator with its lanes spread over the
// splits; the numerator loop is unrolled so that its loads overlap.
__global__ void decode_combine_kernel(const float* __restrict__ ws, const int32_t* __restrict__ pos,
                                      __nv_bfloat16* out, int splits, int head_dim, int64_t max_seq,
                                      int64_t split_size) {
  const int hq = blockIdx.x, d = threadIdx.x, lane = threadIdx.x & 31;
  const int64_t n_keys = min64(static_cast<int64_t>(*pos) + 1, max_seq);
  const int used = n_keys <= 0 ? 0 : static_cast<int>((n_keys + split_size - 1) / split_size);
  const int stride = head_dim + 2;
  const float* base = ws + static_cast<int64_t>(hq) * splits * stride;
  float m = -INFINITY;
  for (int s = lane; s < used; s += 32) m = fmaxf(m, base[s * stride]);
  m = warp_max(m);
  float den = 0.f;
  for (int s = lane; s < used; s += 32) den += __expf(base[s * stride] - m) * base[s * stride + 1];
  den = warp_sum(den);
  float num = 0.f;
#pragma unroll 8
  for (int s = 0; s < used; ++s) num = fmaf(__expf(base[s * stride] - m), base[s * stride + 2 + d], num);
  out[static_cast<int64_t>(hq) * head_dim + d] = __float2bfloat16_rn(used ? num / den : 0.f);
}

// One-launch decode attention. Grid (max_splits, Hkv), block 32 G threads (warp g: query head
// h G + g). Keys 0..n-1 (n = min(p + 1, max_seq)) are cut into `active` splits of `per` whole
// 32-key tiles, both computed here from *pos, so blocks past `active` exit at once. A block
// stages each tile's K rows (padded by 16 bytes: lane j reads row j without bank conflicts) and V
// rows in shared memory with all its threads, then every warp runs the online softmax of its
// query head over the tile (lane j scores key j; lane l owns output pairs l + 32e < D/2). One split:
// the block writes the output. Several: each block writes its partials (m, l, o) to ws, fences and
// counts itself on counters[h]; the last block of KV head h combines the partials of the group's
// query heads (reading them past L1) and resets the counter.
constexpr int kTile = 32;

template <int D>
__global__ void __launch_bounds__(1024, 1)
    decode_fused_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kc,
                        const __nv_bfloat16* __restrict__ vc, const int32_t* __restrict__ pos,
                        __nv_bfloat16* __restrict__ out, float* ws, unsigned int* counters, int group,
                        int64_t max_seq, float scale) {
  constexpr int P = pair_slots(D), C = D / 8;  // C: 16-byte chunks per row
  extern __shared__ uint4 smem[];
  uint4* k_s = smem;                    // kTile rows of C + 1 chunks
  uint4* v_s = k_s + kTile * (C + 1);   // kTile rows of C chunks
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(v_s + kTile * C);  // group rows of D
  __shared__ int last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, h = blockIdx.y, split = blockIdx.x;
  const int hq = h * group + warp;
  const int64_t n_keys = min64(static_cast<int64_t>(*pos) + 1, max_seq);
  __nv_bfloat16* o = out + static_cast<int64_t>(hq) * D;
  if (n_keys <= 0) {  // no key: zeros, written by split 0
    if (split == 0)
      for (int i = lane; i < D; i += 32) o[i] = __float2bfloat16_rn(0.f);
    return;
  }
  const int64_t tiles = (n_keys + kTile - 1) / kTile;
  const int64_t per = (tiles + gridDim.x - 1) / gridDim.x;
  const int active = static_cast<int>((tiles + per - 1) / per);
  if (split >= active) return;
  const int64_t k_begin = split * per * kTile, k_end = min64(k_begin + per * kTile, n_keys);
  __nv_bfloat16* q_w = q_s + warp * D;
  load_q_row<D>(q + static_cast<int64_t>(hq) * D, q_w);
  const uint4* kg = reinterpret_cast<const uint4*>(kc + h * max_seq * D);
  const uint4* vg = reinterpret_cast<const uint4*>(vc + h * max_seq * D);
  const uint4* q4 = reinterpret_cast<const uint4*>(q_w);
  RowState<D> st;
  st.m = -INFINITY;
  st.l = 0.f;
#pragma unroll
  for (int i = 0; i < 2 * P; ++i) st.o[i] = 0.f;
  for (int64_t t0 = k_begin; t0 < k_end; t0 += kTile) {
    const int rows = static_cast<int>(min64(kTile, k_end - t0));
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll 4
    for (int i = threadIdx.x; i < kTile * C; i += blockDim.x) {
      const int j = i / C, c = i % C;
      const bool in = j < rows;
      k_s[j * (C + 1) + c] = in ? __ldg(kg + t0 * C + i) : zero;
      v_s[i] = in ? __ldg(vg + t0 * C + i) : zero;
    }
    __syncthreads();
    float s = -INFINITY;
    if (lane < rows) {
      const uint4* kr = k_s + lane * (C + 1);
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < C; ++c) dot = dot8_bf16(q4[c], kr[c], dot);
      s = dot * scale;
    }
    const float p = softmax_tile<D>(st, s, lane < rows);
    const uint32_t* vt = reinterpret_cast<const uint32_t*>(v_s);
#pragma unroll 8
    for (int j = 0; j < kTile; ++j) {  // rows past `rows` are zero with p = 0
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int e = 0; e < P; ++e) {
        if (!owns_pair<D>(lane, e)) continue;
        const uint32_t vv = vt[j * (D / 2) + lane + 32 * e];
        st.o[2 * e] = fmaf(pj, bf16_lo(vv), st.o[2 * e]);
        st.o[2 * e + 1] = fmaf(pj, bf16_hi(vv), st.o[2 * e + 1]);
      }
    }
    __syncthreads();  // the next tile overwrites k_s / v_s
  }
  if (active == 1) {
    store_row<D>(st, 1.f / st.l, o);
    return;
  }
  const int stride = D + 2;
  float* base = ws + static_cast<int64_t>(hq) * gridDim.x * stride;
  store_partial<D>(st, base + static_cast<int64_t>(split) * stride);
  __threadfence();  // partials visible device-wide before this block is counted
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counters + h, 1u) == static_cast<unsigned int>(active - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  float m = -INFINITY;
  for (int sp = lane; sp < active; sp += 32) m = fmaxf(m, __ldcg(base + static_cast<int64_t>(sp) * stride));
  m = warp_max(m);
  float den = 0.f;
  for (int sp = lane; sp < active; sp += 32) {
    const float* b = base + static_cast<int64_t>(sp) * stride;
    den += __expf(__ldcg(b) - m) * __ldcg(b + 1);
  }
  den = warp_sum(den);
  float num[2 * P];
#pragma unroll
  for (int i = 0; i < 2 * P; ++i) num[i] = 0.f;
#pragma unroll 4
  for (int sp = 0; sp < active; ++sp) {
    const float* b = base + static_cast<int64_t>(sp) * stride;
    const float w = __expf(__ldcg(b) - m);
#pragma unroll
    for (int e = 0; e < P; ++e) {
      if (!owns_pair<D>(lane, e)) continue;
      const float2 ov = __ldcg(reinterpret_cast<const float2*>(b + 2) + lane + 32 * e);
      num[2 * e] = fmaf(w, ov.x, num[2 * e]);
      num[2 * e + 1] = fmaf(w, ov.y, num[2 * e + 1]);
    }
  }
  const float inv = 1.f / den;
#pragma unroll
  for (int e = 0; e < P; ++e)
    if (owns_pair<D>(lane, e))
      reinterpret_cast<__nv_bfloat162*>(o)[lane + 32 * e] = __floats2bfloat162_rn(num[2 * e] * inv, num[2 * e + 1] * inv);
  if (threadIdx.x == 0) counters[h] = 0u;  // every active block has counted: ready for the next launch
}

// Grid (T, Hq + 2 Hkv), block D / 2 threads: thread i rotates the pair (i, i + D/2).
__global__ void qkv_rope_append_kernel(const __nv_bfloat16* __restrict__ qkv, const __nv_bfloat16* __restrict__ bias,
                                       const int32_t* __restrict__ pos, __nv_bfloat16* q_out, __nv_bfloat16* kc,
                                       __nv_bfloat16* vc, int heads_q, int heads_kv, int head_dim, int64_t max_seq,
                                       float log2_theta) {
  const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x, half = head_dim / 2;
  const int64_t p = static_cast<int64_t>(*pos) + t, width = static_cast<int64_t>(heads_q + 2 * heads_kv) * head_dim;
  const __nv_bfloat16* src = qkv + t * width + static_cast<int64_t>(h) * head_dim;
  float a = __bfloat162float(src[i]), b = __bfloat162float(src[i + half]);
  if (bias) {
    a += __bfloat162float(bias[h * head_dim + i]);
    b += __bfloat162float(bias[h * head_dim + i + half]);
  }
  qkv_store_pair(a, b, h, i, p, q_out + static_cast<int64_t>(t) * heads_q * head_dim, kc, vc, heads_q, heads_kv,
                 head_dim, max_seq, log2_theta);
}

// Calls fn(integral_constant<int, D>) for a head dim that passed minmo_args::attention_ok.
template <typename Fn>
int by_head_dim(int64_t head_dim, Fn fn) {
  switch (head_dim) {
    case 32: fn(std::integral_constant<int, 32>{}); break;
    case 64: fn(std::integral_constant<int, 64>{}); break;
    case 128: fn(std::integral_constant<int, 128>{}); break;
    case 192: fn(std::integral_constant<int, 192>{}); break;
    default: fn(std::integral_constant<int, 256>{}); break;
  }
  return launch_status();
}

// by_head_dim, plus the wide head dims only the window attention runs (minmo_args::window_head_dim_ok).
template <typename Fn>
int by_window_head_dim(int64_t head_dim, Fn fn) {
  switch (head_dim) {
    case 320: fn(std::integral_constant<int, 320>{}); break;
    case 384: fn(std::integral_constant<int, 384>{}); break;
    case 448: fn(std::integral_constant<int, 448>{}); break;
    case 512: fn(std::integral_constant<int, 512>{}); break;
    default: return by_head_dim(head_dim, fn);
  }
  return launch_status();
}

}  // namespace

extern "C" int minmo_qkv_rope_append_bf16(const minmo_bf16* qkv, const minmo_bf16* bias, const int32_t* pos,
                                          minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                          int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                          int64_t max_seq, float theta, cudaStream_t stream) {
  if (!qkv || !pos || !q_out || !k_cache || !v_cache || !(theta >= 0) ||
      !minmo_args::window_shape_ok(tokens, heads_q, heads_kv, head_dim, max_seq) || tokens > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(heads_q + 2 * heads_kv));
  qkv_rope_append_kernel<<<grid, static_cast<unsigned>(head_dim / 2), 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(qkv), reinterpret_cast<const __nv_bfloat16*>(bias), pos,
      reinterpret_cast<__nv_bfloat16*>(q_out), reinterpret_cast<__nv_bfloat16*>(k_cache),
      reinterpret_cast<__nv_bfloat16*>(v_cache), static_cast<int>(heads_q), static_cast<int>(heads_kv),
      static_cast<int>(head_dim), max_seq, theta > 0 ? static_cast<float>(std::log2(static_cast<double>(theta))) : -INFINITY);
  return launch_status();
}

extern "C" int64_t minmo_decode_attention_workspace_floats(int64_t heads_q, int64_t head_dim, int64_t max_seq,
                                                           int64_t split_size);

extern "C" int minmo_decode_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                           const int32_t* pos, minmo_bf16* out, float* workspace, int64_t heads_q,
                                           int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t split_size,
                                           float scale, cudaStream_t stream) {
  if (!q || !k_cache || !v_cache || !pos || !out || !workspace || split_size < 32 || split_size % 32 ||
      !minmo_args::attention_ok(1, heads_q, heads_kv, head_dim, max_seq) ||
      minmo_args::overlap(q, heads_q * head_dim * 2, out, heads_q * head_dim * 2) ||
      !aligned(q, k_cache, v_cache, out) || !aligned16(workspace))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t splits = minmo_args::decode_splits(max_seq, split_size);
  if (splits > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int group = static_cast<int>(heads_q / heads_kv);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(heads_kv), (group + kWarps - 1) / kWarps);
  const auto* qb = reinterpret_cast<const __nv_bfloat16*>(q);
  const auto* kb = reinterpret_cast<const __nv_bfloat16*>(k_cache);
  const auto* vb = reinterpret_cast<const __nv_bfloat16*>(v_cache);
  const int rc = by_head_dim(head_dim, [&](auto d) {
    decode_split_kernel<decltype(d)::value>
        <<<grid, kWarps * 32, 0, stream>>>(qb, kb, vb, pos, workspace, group, max_seq, split_size, scale);
  });
  if (rc != MINMO_KERNEL_OK) return rc;
  decode_combine_kernel<<<static_cast<unsigned>(heads_q), static_cast<unsigned>(head_dim), 0, stream>>>(
      workspace, pos, reinterpret_cast<__nv_bfloat16*>(out), static_cast<int>(splits), static_cast<int>(head_dim),
      max_seq, split_size);
  return launch_status();
}

extern "C" int minmo_prefill_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache,
                                            const minmo_bf16* v_cache, const int32_t* pos, minmo_bf16* out,
                                            int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                            int64_t max_seq, float scale, cudaStream_t stream) {
  if (!q || !k_cache || !v_cache || !pos || !out ||
      !minmo_args::attention_ok(tokens, heads_q, heads_kv, head_dim, max_seq) ||
      minmo_args::overlap(q, tokens * heads_q * head_dim * 2, out, tokens * heads_q * head_dim * 2) ||
      !aligned(q, k_cache, v_cache, out))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int group = static_cast<int>(heads_q / heads_kv);
  const int64_t rows = tokens * group;
  const dim3 grid(static_cast<unsigned>((rows + kWarps - 1) / kWarps), static_cast<unsigned>(heads_kv));
  if (grid.x == 0 || (rows + kWarps - 1) / kWarps > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  const auto* qb = reinterpret_cast<const __nv_bfloat16*>(q);
  const auto* kb = reinterpret_cast<const __nv_bfloat16*>(k_cache);
  const auto* vb = reinterpret_cast<const __nv_bfloat16*>(v_cache);
  return by_head_dim(head_dim, [&](auto d) {
    prefill_kernel<decltype(d)::value><<<grid, kWarps * 32, 0, stream>>>(
        qb, kb, vb, pos, reinterpret_cast<__nv_bfloat16*>(out), static_cast<int>(tokens), static_cast<int>(heads_q),
        group, max_seq, scale);
  });
}

extern "C" int minmo_decode_attention_fused_bf16(const minmo_bf16* q, const minmo_bf16* k_cache,
                                                 const minmo_bf16* v_cache, const int32_t* pos, minmo_bf16* out,
                                                 float* workspace, uint32_t* counters, int64_t heads_q,
                                                 int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                                 int64_t max_splits, float scale, cudaStream_t stream) {
  if (!q || !k_cache || !v_cache || !pos || !out || !workspace || !counters ||
      !minmo_args::decode_fused_ok(heads_q, heads_kv, head_dim, max_seq, max_splits) ||
      minmo_args::overlap(q, heads_q * head_dim * 2, out, heads_q * head_dim * 2) ||
      !aligned(q, k_cache, v_cache, out) || !aligned16(workspace))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int group = static_cast<int>(heads_q / heads_kv);
  const dim3 grid(static_cast<unsigned>(max_splits), static_cast<unsigned>(heads_kv));
  const size_t smem = static_cast<size_t>(minmo_args::decode_fused_smem(heads_q, heads_kv, head_dim));
  const auto* qb = reinterpret_cast<const __nv_bfloat16*>(q);
  const auto* kb = reinterpret_cast<const __nv_bfloat16*>(k_cache);
  const auto* vb = reinterpret_cast<const __nv_bfloat16*>(v_cache);
  return by_head_dim(head_dim, [&](auto d) {
    decode_fused_kernel<decltype(d)::value><<<grid, static_cast<unsigned>(32 * group), smem, stream>>>(
        qb, kb, vb, pos, reinterpret_cast<__nv_bfloat16*>(out), workspace, counters, group, max_seq, scale);
  });
}

extern "C" int minmo_window_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                           const int32_t* pos, const int32_t* lo, minmo_bf16* out, int64_t tokens,
                                           int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                           float scale, cudaStream_t stream) {
  if (!minmo_args::window_attention_ok(q, k_cache, v_cache, pos, lo, out, tokens, heads_q, heads_kv, head_dim,
                                       max_seq) ||
      !aligned(q, k_cache, v_cache, out))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int group = static_cast<int>(heads_q / heads_kv);
  const int64_t rows = tokens * group;
  const dim3 grid(static_cast<unsigned>((rows + kWarps - 1) / kWarps), static_cast<unsigned>(heads_kv));
  const auto* qb = reinterpret_cast<const __nv_bfloat16*>(q);
  const auto* kb = reinterpret_cast<const __nv_bfloat16*>(k_cache);
  const auto* vb = reinterpret_cast<const __nv_bfloat16*>(v_cache);
  return by_window_head_dim(head_dim, [&](auto d) {
    window_kernel<decltype(d)::value><<<grid, kWarps * 32, 0, stream>>>(
        qb, kb, vb, pos, lo, reinterpret_cast<__nv_bfloat16*>(out), static_cast<int>(tokens),
        static_cast<int>(heads_q), group, max_seq, scale);
  });
}
