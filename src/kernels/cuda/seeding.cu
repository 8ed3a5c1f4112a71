// Greedy k-means++ of many problems on the device (megatax/cuda.h, seed_grouped): max_k
// rounds of (candidate distances, one block per problem that chooses and draws), queued
// without host round trips. The candidate distances come from a row_distances launch per
// round (each round reads every pool), or, where the caller gives scratch memory, from the
// pools' Gram matrices (pool_gram: once per chunk of problems; the same bits), and then a
// chunk's rounds all run in one launch. The per-problem sums are sequential float64 in pool
// order, as the host's SeedingRun does them, so the choices match the host's bit for bit
// given the same distances; they are a few thousand dependent adds per round (one chain:
// every candidate's running sums at once), walked by one warp while the others stage the
// next distances.
#include <cuda_runtime.h>

#include <algorithm>
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
constexpr int kChunk = 128;  // pool entries staged in shared memory at a time (two stages)
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
// Lane t < n_a of warp 0 walks candidate t's pool in order: w_i = min(best_i, d_t,i) (d_0,i
// itself for the first centroid) and its float64 running sum (the candidate's potential at
// the end), while the other warps stage the next chunk of w_i, in float64 (the conversion's
// latency off the chain), in shared memory. The running sum is kept at the end of every `seg` entries (checkpoints,
// kMaxSegments at most); after the choice the nearest distances are the chosen candidate's
// w_i, so a draw finds its segment among the chosen one's checkpoints and adds that
// segment's w_i again from its checkpoint: the same float64 adds in the same order, so the
// same running sums as a walk of every entry. The last i with w_i > 0 is found the same way
// (the nearest distances after the update), by every thread.
//
// Where the distances come from (kGram): `dist` (row_distances_grouped's output, laid out
// by out_begin), or the problem's pool Gram matrix (gram + gram_begin[g], m x m) and its
// rows' squared norms (norms, indexed like b) through pair_distance: the same bits.
constexpr int kMaxSegments = 64;
template <bool kGram>
__device__ __forceinline__ bool seed_round(std::int64_t g, const std::int64_t* b, const std::int64_t* b_begin,
                                           const SeedingProblem* problems, const double* uniforms,
                                           std::int64_t max_k, std::int64_t* a, std::int32_t* n_a,
                                           const std::int64_t* out_begin, const float* dist, const float* gram,
                                           const std::int64_t* gram_begin, const float* norms, float* best_all,
                                           SeedState* state, std::int64_t* chosen) {
  const int tid = static_cast<int>(threadIdx.x);
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
  // Checkpoint spacing: a power of two >= 32 with at most kMaxSegments segments.
  int seg_shift = 5;
  while ((std::int64_t{1} << seg_shift) * kMaxSegments < m) ++seg_shift;
  const std::int64_t seg = std::int64_t{1} << seg_shift;
  const int segments = static_cast<int>((m + seg - 1) / seg);

  // Two stages of kChunk entries: one walked while the other fills, each holding every
  // candidate's w_i already in float64 (the conversion's latency stays off the chain).
  // Rows padded by one value: the lanes' reads of one entry hit distinct banks.
  __shared__ double s_w[2][kMaxCand][kChunk + 1];
  __shared__ double s_check[kMaxCand][kMaxSegments];  // running sums at segment ends
  __shared__ double s_pot[kMaxCand];
  __shared__ int s_choice;
  __shared__ int s_last;
  __shared__ std::int64_t s_cand[kMaxCand];  // this round's candidates (pool indices)
  __shared__ float s_norm[kMaxCand];         // kGram: their squared norms
  if (tid < na) {
    s_cand[tid] = st.cand[tid];
    if (kGram) s_norm[tid] = nrm[s_cand[tid]];
  }
  if (tid == 0) s_last = -1;
  __syncthreads();
  // Candidate t's distance to pool entry i.
  auto distance = [&](int t, std::int64_t i) -> float {
    if (kGram) return pair_distance(nrm[i], s_norm[t], gm[s_cand[t] * m + i]);
    return d[static_cast<std::int64_t>(t) * m + i];
  };
  // Stage chunk i0 into buffer `buf` on threads [from, kThreads): for each entry e of the
  // chunk, every candidate's w (its distance, after the first round at most the nearest
  // distance), kBatch distances loaded before any is stored (their latencies overlap).
  constexpr int kBatch = 8;
  auto stage = [&](std::int64_t i0, int buf, int from) {
    const int len = static_cast<int>(m - i0 < kChunk ? m - i0 : kChunk);
    for (int e = tid - from; e < len; e += kThreads - from) {
      const std::int64_t i = i0 + e;
      const float np = kGram ? nrm[i] : 0.f;
      const float bv = first ? 0.f : best[i];
      for (int t0 = 0; t0 < na; t0 += kBatch) {
        float v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int t = t0 + u;
          if (t < na)
            v[u] = kGram ? pair_distance(np, s_norm[t], gm[s_cand[t] * m + i]) : d[static_cast<std::int64_t>(t) * m + i];
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u)
          if (t0 + u < na) s_w[buf][t0 + u][e] = first ? v[u] : (v[u] < bv ? v[u] : bv);
      }
    }
  };

  double acc = 0;
  stage(0, 0, 0);
  __syncthreads();
  int buf = 0;
  const int seg_mask = static_cast<int>(seg - 1);
  for (std::int64_t i0 = 0; i0 < m; i0 += kChunk, buf ^= 1) {
    if (tid >= 32) {
      if (i0 + kChunk < m) stage(i0 + kChunk, buf ^ 1, 32);
    } else if (tid < na) {
      const int len = static_cast<int>(m - i0 < kChunk ? m - i0 : kChunk);
      const double* sw = s_w[buf][tid];
      const int base = static_cast<int>(i0);
      // Eight values loaded ahead of their dependent adds; a checkpoint at each segment's
      // end (segments and chunks are powers of two: either holds whole ones of the other).
      int e = 0;
      for (; e + 8 <= len; e += 8) {
        double w[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) w[u] = sw[e + u];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          acc += w[u];
          const int i = base + e + u;
          if (((i + 1) & seg_mask) == 0) s_check[tid][i >> seg_shift] = acc;
        }
      }
      for (; e < len; ++e) {
        acc += sw[e];
        const int i = base + e;
        if (((i + 1) & seg_mask) == 0) s_check[tid][i >> seg_shift] = acc;
      }
      if (i0 + len == m && (m & seg_mask) != 0) s_check[tid][segments - 1] = acc;  // a short last segment
    }
    __syncthreads();
  }
  if (tid < na) s_pot[tid] = acc;
  __syncthreads();
  if (tid == 0) {
    int choice = 0;  // the smallest potential, the first on ties
    double lowest = __longlong_as_double(0x7ff0000000000000LL);  // +inf
    for (int t = 0; t < na; ++t)
      if (s_pot[t] < lowest) {
        lowest = s_pot[t];
        choice = t;
      }
    if (first) choice = 0;
    s_choice = choice;
    out[c] = s_cand[choice];
  }
  __syncthreads();
  const int choice = s_choice;
  acc = s_pot[choice];
  // The nearest distances after the choice (= the chosen candidate's w_i), also into the
  // stages' memory (free now) when they fit, for the draws; the last i with w_i > 0.
  auto* s_near = reinterpret_cast<float*>(&s_w[0][0][0]);
  const bool near_shared = m <= static_cast<std::int64_t>(sizeof(s_w) / sizeof(float));
  int my_last = -1;
  for (std::int64_t i0 = tid; i0 < m; i0 += kBatch * kThreads) {
    float dv[kBatch], bv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const std::int64_t i = i0 + static_cast<std::int64_t>(u) * kThreads;
      if (i < m) {
        dv[u] = distance(choice, i);
        bv[u] = first ? dv[u] : best[i];
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const std::int64_t i = i0 + static_cast<std::int64_t>(u) * kThreads;
      if (i < m) {
        const float w = dv[u] < bv[u] ? dv[u] : bv[u];
        best[i] = w;
        if (near_shared) s_near[i] = w;
        if (w > 0) my_last = static_cast<int>(i);
      }
    }
  }
  if (my_last >= 0) atomicMax(&s_last, my_last);

  // The next centroid: copies while the potential is 0, else `trials` draws.
  __shared__ std::int64_t s_next;
  __shared__ double s_potential;
  __syncthreads();
  if (tid == 0) {
    std::int64_t next = c + 1;
    while (next < prob.k && acc <= 0) {
      out[next] = next % m;
      ++next;
    }
    st.c = next;
    n_a[g] = next < prob.k ? prob.trials : 0;
    s_next = next;
    s_potential = acc;
  }
  __syncthreads();
  if (s_next >= prob.k) return false;
  if (tid < prob.trials) {
    // The first i whose running sum exceeds the target: its segment (the first checkpoint
    // above it), then the segment's sums again from the checkpoint before it.
    const double target = uniforms[prob.uniform_begin + st.used + tid] * s_potential;
    int lo = 0, hi = segments;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (s_check[choice][mid] > target) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    std::int64_t pick = s_last;  // no running sum above the target
    if (lo < segments) {
      double run = lo == 0 ? 0.0 : s_check[choice][lo - 1];
      const std::int64_t end = (lo + 1) * seg < m ? (lo + 1) * seg : m;
      for (std::int64_t i = lo * seg; i < end; ++i) {
        run += near_shared ? s_near[i] : best[i];
        if (run > target) {
          pick = i;
          break;
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
template <bool kGram>
__global__ void __launch_bounds__(kThreads)
    seed_step_kernel(std::int64_t g0, std::int64_t rounds, const std::int64_t* b, const std::int64_t* b_begin,
                     const SeedingProblem* problems, const double* uniforms, std::int64_t max_k, std::int64_t* a,
                     std::int32_t* n_a, const std::int64_t* out_begin, const float* dist, const float* gram,
                     const std::int64_t* gram_begin, const float* norms, float* best_all, SeedState* state,
                     std::int64_t* chosen) {
  const std::int64_t g = g0 + blockIdx.x;
  for (std::int64_t r = 0; r < rounds; ++r) {
    if (!seed_round<kGram>(g, b, b_begin, problems, uniforms, max_k, a, n_a, out_begin, dist, gram, gram_begin,
                           norms, best_all, state, chosen))
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
  if (!gram) {
    for (std::int64_t round = 0; round < s.max_k; ++round) {
      row_distances_grouped(res, r);
      detail::seed_step_kernel<false><<<static_cast<unsigned>(G), detail::kThreads, 0, stream>>>(
          0, 1, s.b, s.b_begin, s.problems, s.uniforms, s.max_k, a, n_a, out_begin, dist, nullptr, nullptr, nullptr,
          best, state, s.chosen);
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
    detail::seed_step_kernel<true><<<static_cast<unsigned>(groups), detail::kThreads, 0, stream>>>(
        g0, s.max_k, s.b, s.b_begin, s.problems, s.uniforms, s.max_k, a, n_a, out_begin, nullptr, gram_out,
        gram_begin_dev, norms, best, state, s.chosen);
    MEGATAX_CUDA_CHECK_LAUNCH("seed_step_kernel");
  }
}

}  // namespace megatax::cuda
