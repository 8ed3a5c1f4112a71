// Greedy k-means++ of many problems on the device (megatax/cuda.h, seed_grouped): max_k
// rounds of (candidate distances, one block per problem that chooses and draws), queued
// without host round trips. The candidate distances come from a row_distances launch per
// round (each round reads every pool), or, where the caller gives scratch memory, from the
// pools' Gram matrices (pool_gram: once per chunk of problems; the same bits), and then a
// chunk's rounds all run in one launch. The per-problem float64 sums are the host's
// SeedingRun's (32 lanes of pool entries, each summed in pool order, then the lanes in
// order), so the choices match the host's bit for bit given the same distances; a warp sums
// a candidate's lanes at once (chains of m / 32 dependent adds).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/row_distances_mma.cuh"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 32;  // the sums' lanes (kmeans_steps.h): a warp
constexpr int kMaxCand = static_cast<int>(kMaxRowDistanceCandidates);

// Where a problem stands between rounds.
struct SeedState {
  std::int64_t c;         // centroids chosen so far
  std::int64_t used;      // uniforms consumed
  std::int64_t cand[kMaxCand];  // this round's candidates (pool indices)
};

__global__ void seed_init_kernel(std::int64_t groups, const std::int64_t* b, const std::int64_t* b_begin,
                                 const SeedingProblem* problems, int max_trials, std::int64_t* a,
                                 std::int32_t* n_a, std::int64_t* out_begin, SeedState* state) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  const std::int64_t first = problems[g].first;
  a[g * kMaxCand] = b[b_begin[g] + first];
  n_a[g] = 1;
  out_begin[g] = static_cast<std::int64_t>(max_trials) * b_begin[g];
  SeedState& st = state[g];
  st.c = 0;
  st.used = 0;
  st.cand[0] = first;
}

// One round of problem g: takes the distances of its candidates (centroid c), then prepares
// centroid c + 1's candidates (or marks the problem done: n_a = 0). Returns whether the
// problem goes on (the same answer on every thread). Every thread of the block calls it.
//
// The sums are the host's SeedingRun's (kmeans_steps.h): pool entry i belongs to lane
// i % 32; a lane's float64 sum adds its w_i in pool order, a potential adds the 32 lane sums
// in lane order (C_j: the first j + 1 of them), and a draw with target T walks the first
// lane j with C_j > T from C_{j-1}, adding its w_i in pool order, to the first entry whose
// running sum exceeds T (none, by rounding: the lane's last entry with w_i > 0; no lane
// above T: the pool's last such entry).
//
// Chunks of kChunk entries: every thread loads its entries' distances for every candidate
// at once (one memory latency a chunk), stores each candidate's w_i = min(best_i, d_t,i) in
// shared memory (s_w: max_trials x chunk floats, dynamic; chunk <= kChunk, a multiple of
// kThreads), then thread (t, j) of warp t (t, t + 8, ...) adds lane j's w_i of candidate t:
// chains of chunk / 32 adds.
//
// Where the distances come from (kGram): `dist` (row_distances_grouped's output, laid out
// by out_begin), or the problem's pool Gram matrix (gram + gram_begin[g], m x m) and its
// rows' squared norms (norms, indexed like b) through pair_distance: the same bits.
constexpr int kChunk = 2048;      // the largest chunk
constexpr int kSmallChunk = 256;  // small pools' variant (few registers: more blocks an SM)
constexpr int kWarps = kThreads / kLanes;
constexpr int kWalks = (kMaxCand + kWarps - 1) / kWarps;  // candidates a walking thread takes
static_assert(kChunk % kThreads == 0 && kSmallChunk % kThreads == 0 && kThreads % kLanes == 0, "chunk layout");
// Variants: kChunkT (chunk <= kChunkT), kInFlight candidates whose distances a thread loads
// at once (registers against memory latencies), kBlocks blocks an SM (seed_step_kernel).
template <bool kGram, int kInFlight, int kChunkT>
__device__ __forceinline__ bool seed_round(std::int64_t g, const std::int64_t* b, const std::int64_t* b_begin,
                                           const SeedingProblem* problems, const double* uniforms,
                                           std::int64_t max_k, std::int64_t* a, std::int32_t* n_a,
                                           const std::int64_t* out_begin, const float* dist, const float* gram,
                                           const std::int64_t* gram_begin, const float* norms, float* best_all,
                                           SeedState* state, std::int64_t* chosen, float* s_w, int chunk) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kLanes, warp = tid / kLanes;
  const int na = n_a[g];
  if (na == 0) return false;
  SeedState& st = state[g];
  const SeedingProblem prob = problems[g];
  const std::int64_t m = b_begin[g + 1] - b_begin[g];
  const float* d = kGram ? nullptr : dist + out_begin[g];
  const float* gm = kGram ? gram + gram_begin[g] : nullptr;
  const float* nrm = kGram ? norms + b_begin[g] : nullptr;
  float* best = best_all + b_begin[g];
  std::int64_t* out = chosen + g * max_k;
  const std::int64_t c = st.c;
  const bool first = c == 0;  // no nearest distances yet: w_i = d_0,i
  constexpr int kPerThread = kChunkT / kThreads;  // a thread's entries of a chunk

  __shared__ double s_part[kMaxCand][kLanes + 1];  // each candidate's lane sums (padded: banks)
  __shared__ double s_pot[kMaxCand];               // its potential
  __shared__ double s_cum[kLanes];                 // the chosen one's C_j
  __shared__ int s_lane_last[kLanes];              // the last entry of each lane with w_i > 0
  __shared__ int s_choice;
  __shared__ int s_last;
  __shared__ std::int64_t s_cand[kMaxCand];  // this round's candidates (pool indices)
  __shared__ float s_norm[kMaxCand];         // kGram: their squared norms
  if (tid < na) {
    s_cand[tid] = st.cand[tid];
    if (kGram) s_norm[tid] = nrm[s_cand[tid]];
  }
  if (tid < kLanes) s_lane_last[tid] = -1;
  if (tid == 0) s_last = -1;
  __syncthreads();
  // Candidate t's distance to pool entry i (np = the entry's squared norm, kGram).
  auto distance = [&](int t, std::int64_t i, float np) -> float {
    if (kGram) return pair_distance(np, s_norm[t], gm[s_cand[t] * m + i]);
    return d[static_cast<std::int64_t>(t) * m + i];
  };
  // 1. Every candidate's lane sums.
  double acc[kWalks];
#pragma unroll
  for (int q = 0; q < kWalks; ++q) acc[q] = 0;
  for (std::int64_t i0 = 0; i0 < m; i0 += chunk) {
    const int len = static_cast<int>(m - i0 < chunk ? m - i0 : chunk);
    if (i0 > 0) __syncthreads();  // the chunk before is walked
    float bv[kPerThread], np[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int e = tid + u * kThreads;
      if (e < len) {
        bv[u] = first ? 0.f : best[i0 + e];
        np[u] = kGram ? nrm[i0 + e] : 0.f;
      }
    }
    for (int t0 = 0; t0 < na; t0 += kInFlight) {  // kInFlight candidates' loads at once
      float v[kInFlight][kPerThread];
#pragma unroll
      for (int tt = 0; tt < kInFlight; ++tt)
#pragma unroll
        for (int u = 0; u < kPerThread; ++u) {
          const int e = tid + u * kThreads;
          if (t0 + tt < na && e < len) v[tt][u] = distance(t0 + tt, i0 + e, np[u]);
        }
#pragma unroll
      for (int tt = 0; tt < kInFlight; ++tt)
#pragma unroll
        for (int u = 0; u < kPerThread; ++u) {
          const int e = tid + u * kThreads;
          if (t0 + tt < na && e < len)
            s_w[(t0 + tt) * chunk + e] = first ? v[tt][u] : (v[tt][u] < bv[u] ? v[tt][u] : bv[u]);
        }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kWalks; ++q) {
      const int t = warp + q * kWarps;
      if (t >= na) continue;
      const float* sw = s_w + t * chunk;
      double run = acc[q];
      for (int e0 = lane; e0 < len; e0 += 8 * kLanes) {
        float x[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) x[u] = e0 + u * kLanes < len ? sw[e0 + u * kLanes] : 0.f;
#pragma unroll
        for (int u = 0; u < 8; ++u)
          if (e0 + u * kLanes < len) run += static_cast<double>(x[u]);
      }
      acc[q] = run;
    }
  }
#pragma unroll
  for (int q = 0; q < kWalks; ++q)
    if (warp + q * kWarps < na) s_part[warp + q * kWarps][lane] = acc[q];
  __syncthreads();
  // 2. The potentials, the choice (the smallest, the first on ties) and its C_j.
  if (tid < na) {
    double p = 0;
    for (int j = 0; j < kLanes; ++j) p += s_part[tid][j];
    s_pot[tid] = p;
  }
  __syncthreads();
  if (tid == 0) {
    int choice = 0;
    double lowest = __longlong_as_double(0x7ff0000000000000LL);  // +inf
    for (int t = 0; t < na; ++t)
      if (s_pot[t] < lowest) {
        lowest = s_pot[t];
        choice = t;
      }
    if (first) choice = 0;
    s_choice = choice;
    out[c] = s_cand[choice];
    double p = 0;  // the same adds as its potential
    for (int j = 0; j < kLanes; ++j) {
      p += s_part[choice][j];
      s_cum[j] = p;
    }
  }
  __syncthreads();
  const int choice = s_choice;
  const double potential = s_cum[kLanes - 1];
  // 3. The nearest distances after the choice (= the chosen candidate's w_i: still in s_w
  //    when the pool is one chunk), the last entry with w_i > 0 of each lane (a thread's
  //    entries are all of lane tid % 32: kThreads is a multiple of 32) and of the pool.
  const bool one_chunk = m <= chunk;
  const float* near = one_chunk ? s_w + choice * chunk : best;  // the draws read it
  int my_last = -1;
  for (std::int64_t i0 = tid; i0 < m; i0 += kPerThread * kThreads) {
    float w[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const std::int64_t i = i0 + static_cast<std::int64_t>(u) * kThreads;
      if (i < m) {
        if (one_chunk) {
          w[u] = near[i];
        } else {
          const float dv = distance(choice, i, kGram ? nrm[i] : 0.f);
          const float bvi = first ? dv : best[i];
          w[u] = dv < bvi ? dv : bvi;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const std::int64_t i = i0 + static_cast<std::int64_t>(u) * kThreads;
      if (i < m) {
        best[i] = w[u];
        if (w[u] > 0) my_last = static_cast<int>(i);
      }
    }
  }
  if (my_last >= 0) {
    atomicMax(&s_lane_last[lane], my_last);
    atomicMax(&s_last, my_last);
  }

  // The next centroid: copies while the potential is 0, else `trials` draws.
  __shared__ std::int64_t s_next;
  __syncthreads();
  if (tid == 0) {
    std::int64_t next = c + 1;
    while (next < prob.k && potential <= 0) {
      out[next] = next % m;
      ++next;
    }
    st.c = next;
    n_a[g] = next < prob.k ? prob.trials : 0;
    s_next = next;
  }
  __syncthreads();
  if (s_next >= prob.k) return false;
  if (tid < prob.trials) {
    const double target = uniforms[prob.uniform_begin + st.used + tid] * potential;
    int j = 0;
    while (j < kLanes && !(s_cum[j] > target)) ++j;
    std::int64_t pick = s_last;  // no lane above the target
    if (j < kLanes) {
      pick = s_lane_last[j];  // (rounding: no running sum above the target)
      double run = j == 0 ? 0.0 : s_cum[j - 1];
      bool found = false;
      for (std::int64_t i0 = j; i0 < m && !found; i0 += 8 * kLanes) {
        float x[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) x[u] = i0 + u * kLanes < m ? near[i0 + u * kLanes] : 0.f;
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (!found && i0 + u * kLanes < m) {
            run += static_cast<double>(x[u]);
            if (run > target) {
              pick = i0 + u * kLanes;
              found = true;
            }
          }
        }
      }
    }
    st.cand[tid] = pick;
    a[g * kMaxCand + tid] = b[b_begin[g] + pick];
  }
  __syncthreads();
  if (tid == 0) st.used += prob.trials;
  return true;
}

// Up to `rounds` rounds of problem g0 + blockIdx.x (one: the distances come from a launch
// between rounds; all: from the Gram matrices, with nothing between rounds but this block's
// barriers).
template <bool kGram, int kInFlight, int kChunkT, int kBlocks>
__global__ void __launch_bounds__(kThreads, kBlocks)
    seed_step_kernel(std::int64_t g0, std::int64_t rounds, const std::int64_t* b, const std::int64_t* b_begin,
                     const SeedingProblem* problems, const double* uniforms, std::int64_t max_k, std::int64_t* a,
                     std::int32_t* n_a, const std::int64_t* out_begin, const float* dist, const float* gram,
                     const std::int64_t* gram_begin, const float* norms, float* best_all, SeedState* state,
                     std::int64_t* chosen, int chunk) {
  extern __shared__ float s_w[];  // max_trials x chunk (seed_round)
  const std::int64_t g = g0 + blockIdx.x;
  for (std::int64_t r = 0; r < rounds; ++r) {
    if (!seed_round<kGram, kInFlight, kChunkT>(g, b, b_begin, problems, uniforms, max_k, a, n_a,
                                                out_begin, dist, gram, gram_begin, norms, best_all,
                                                state, chosen, s_w, chunk))
      return;
    __syncthreads();  // the round's state (n_a, st: global) is read by every thread next
  }
}

std::size_t align256(std::size_t n) { return (n + 255) / 256 * 256; }

}  // namespace
}  // namespace detail

void seed_grouped(Resources& res, const GroupedSeedingArgs& s) {
  detail::validate_device_view(s.x, "seed_grouped: x");
  if (s.groups < 1 || s.n_b < s.groups)
    throw Error(ErrorCode::kInvalidArgument, "seed_grouped: groups = " + std::to_string(s.groups) +
                                                 ", n_b = " + std::to_string(s.n_b) +
                                                 " (expected groups >= 1 and a pool point per group at least)");
  if (s.max_k < 1 || s.max_trials < 1 || s.max_trials > kMaxRowDistanceCandidates)
    throw Error(ErrorCode::kInvalidArgument, "seed_grouped: max_k = " + std::to_string(s.max_k) +
                                                 ", max_trials = " + std::to_string(s.max_trials) +
                                                 " (expected max_k >= 1, max_trials in 1.." +
                                                 std::to_string(kMaxRowDistanceCandidates) + ")");
  if (s.b == nullptr || s.b_begin == nullptr || s.problems == nullptr || s.uniforms == nullptr ||
      s.chosen == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "seed_grouped: a device array is null");
  res.activate();
  const auto G = static_cast<std::size_t>(s.groups), n_b = static_cast<std::size_t>(s.n_b);
  // Chunks of problems whose Gram matrices fit the caller's scratch (empty: no Gram path).
  std::vector<std::int64_t> chunk_begin, gram_begin;
  std::vector<std::int64_t> chunk_max_m;
  if (s.scratch != nullptr && s.b_begin_host != nullptr && pool_gram_supported(res, s.x)) {
    const std::size_t cap = s.scratch_bytes / sizeof(float);
    bool fits = true;
    gram_begin.assign(G, 0);
    std::size_t used = 0;
    for (std::size_t g = 0; g < G && fits; ++g) {
      const auto m = static_cast<std::size_t>(s.b_begin_host[g + 1] - s.b_begin_host[g]);
      const std::size_t size = m * m;
      if (size > cap) fits = false;
      if (chunk_begin.empty() || used + size > cap || g - static_cast<std::size_t>(chunk_begin.back()) >= 65535) {
        chunk_begin.push_back(static_cast<std::int64_t>(g));
        chunk_max_m.push_back(0);
        used = 0;
      }
      gram_begin[g] = static_cast<std::int64_t>(used);
      used += size;
      chunk_max_m.back() = std::max(chunk_max_m.back(), static_cast<std::int64_t>(m));
    }
    if (!fits) {
      chunk_begin.clear();
      chunk_max_m.clear();
    }
    chunk_begin.push_back(s.groups);
  }
  const bool gram = chunk_begin.size() > 1;
  // Temporaries, one workspace: nearest distances, candidate distances (reading the pools),
  // the distance launch's candidate rows / counts / offsets, each problem's state, and (Gram
  // matrices) the matrices' offsets and the pool rows' squared norms.
  const std::size_t o_best = 0, o_dist = o_best + detail::align256(n_b * sizeof(float)),
                    o_a = o_dist + (gram ? 0 : detail::align256(n_b * static_cast<std::size_t>(s.max_trials) * sizeof(float))),
                    o_na = o_a + detail::align256(G * detail::kMaxCand * sizeof(std::int64_t)),
                    o_ob = o_na + detail::align256(G * sizeof(std::int32_t)),
                    o_state = o_ob + detail::align256(G * sizeof(std::int64_t)),
                    o_gb = o_state + detail::align256(G * sizeof(detail::SeedState)),
                    o_norms = o_gb + (gram ? detail::align256(G * sizeof(std::int64_t)) : 0),
                    bytes = o_norms + (gram ? n_b * sizeof(float) : 0);
  auto* w = static_cast<unsigned char*>(res.workspace(bytes));
  auto* best = reinterpret_cast<float*>(w + o_best);
  auto* dist = reinterpret_cast<float*>(w + o_dist);
  auto* a = reinterpret_cast<std::int64_t*>(w + o_a);
  auto* n_a = reinterpret_cast<std::int32_t*>(w + o_na);
  auto* out_begin = reinterpret_cast<std::int64_t*>(w + o_ob);
  auto* state = reinterpret_cast<detail::SeedState*>(w + o_state);
  auto* gram_begin_dev = reinterpret_cast<std::int64_t*>(w + o_gb);
  auto* norms = reinterpret_cast<float*>(w + o_norms);
  const auto stream = static_cast<cudaStream_t>(res.stream());
  if (gram) copy_to_device(res, gram_begin_dev, gram_begin.data(), G * sizeof(std::int64_t));
  detail::seed_init_kernel<<<static_cast<unsigned>((G + 255) / 256), 256, 0, stream>>>(
      s.groups, s.b, s.b_begin, s.problems, s.max_trials, a, n_a, out_begin, state);
  MEGATAX_CUDA_CHECK_LAUNCH("seed_init_kernel");
  GroupedRowDistanceArgs r;
  r.x = s.x;
  r.groups = s.groups;
  r.b = s.b;
  r.b_begin = s.b_begin;
  r.n_b = s.n_b;
  r.a = a;
  r.n_a = n_a;
  r.out_begin = out_begin;
  r.out = dist;
  r.max_n_a = s.max_trials;
  // The rounds' stage of candidate distances (dynamic shared memory, above 48 KiB on
  // request): chunks of the largest pool rounded up to kThreads, kChunk at most.
  std::int64_t max_m = detail::kChunk;
  if (s.b_begin_host != nullptr) {
    max_m = 1;
    for (std::size_t g = 0; g < G; ++g) max_m = std::max(max_m, s.b_begin_host[g + 1] - s.b_begin_host[g]);
  }
  const std::int64_t rounded = (max_m + detail::kThreads - 1) / detail::kThreads * detail::kThreads;
  const int chunk = static_cast<int>(std::min<std::int64_t>(detail::kChunk, rounded));
  const auto smem = static_cast<std::size_t>(s.max_trials) * static_cast<std::size_t>(chunk) * sizeof(float);
  // The kernel's variant: pools of up to kSmallChunk points one small chunk (8 candidates'
  // loads at once, four blocks an SM), larger ones chunks of up to kChunk (8 at once, two
  // blocks an SM: a level's ~190 problems of 2,048 points in one wave). bench_cuda's seeding
  // rows; MEGATAX_CUDA_SEED_VARIANT=4x2 or 2x3 (candidates x blocks, large chunks) for others.
  using StepKernel = decltype(&detail::seed_step_kernel<true, 8, detail::kChunk, 2>);
  StepKernel step = gram ? detail::seed_step_kernel<true, 8, detail::kChunk, 2>
                         : detail::seed_step_kernel<false, 8, detail::kChunk, 2>;
  if (chunk <= detail::kSmallChunk)
    step = gram ? detail::seed_step_kernel<true, 8, detail::kSmallChunk, 4>
                : detail::seed_step_kernel<false, 8, detail::kSmallChunk, 4>;
  if (const char* v = std::getenv("MEGATAX_CUDA_SEED_VARIANT"); v != nullptr && *v != '\0') {
    if (std::strcmp(v, "4x2") == 0) {
      step = gram ? detail::seed_step_kernel<true, 4, detail::kChunk, 2>
                  : detail::seed_step_kernel<false, 4, detail::kChunk, 2>;
    } else if (std::strcmp(v, "2x3") == 0) {
      step = gram ? detail::seed_step_kernel<true, 2, detail::kChunk, 3>
                  : detail::seed_step_kernel<false, 2, detail::kChunk, 3>;
    } else if (std::strcmp(v, "auto") != 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  "MEGATAX_CUDA_SEED_VARIANT='" + std::string(v) + "': expected auto, 4x2 or 2x3");
    }
  }
  MEGATAX_CUDA_CHECK(
      cudaFuncSetAttribute(step, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  if (!gram) {
    for (std::int64_t round = 0; round < s.max_k; ++round) {
      row_distances_grouped(res, r);
      step<<<static_cast<unsigned>(G), detail::kThreads, smem, stream>>>(
          0, 1, s.b, s.b_begin, s.problems, s.uniforms, s.max_k, a, n_a, out_begin, dist, nullptr, nullptr, nullptr,
          best, state, s.chosen, chunk);
      MEGATAX_CUDA_CHECK_LAUNCH("seed_step_kernel");
    }
    return;
  }
  // Chunk by chunk: its Gram matrices, then all its rounds in one launch (the next chunk's
  // matrices overwrite them).
  auto* gram_out = static_cast<float*>(s.scratch);
  for (std::size_t ch = 0; ch + 1 < chunk_begin.size(); ++ch) {
    const std::int64_t g0 = chunk_begin[ch], groups = chunk_begin[ch + 1] - g0;
    PoolGramArgs pg;
    pg.x = s.x;
    pg.groups = groups;
    pg.b = s.b;
    pg.b_begin = s.b_begin + g0;
    pg.max_m = chunk_max_m[ch];
    pg.gram_begin = gram_begin_dev + g0;
    pg.gram = gram_out;
    pg.norms = norms;
    pool_gram(res, pg);
    step<<<static_cast<unsigned>(groups), detail::kThreads, smem, stream>>>(
        g0, s.max_k, s.b, s.b_begin, s.problems, s.uniforms, s.max_k, a, n_a, out_begin, nullptr, gram_out,
        gram_begin_dev, norms, best, state, s.chosen, chunk);
    MEGATAX_CUDA_CHECK_LAUNCH("seed_step_kernel");
  }
}

}  // namespace megatax::cuda
