// Greedy k-means++ of many problems on the device (megatax/cuda.h, seed_grouped): max_k
// rounds of (candidate distances, one block per problem that chooses and draws), queued
// without host round trips. The per-problem sums are sequential float64 in pool order, as
// the host's SeedingRun does them, so the choices match the host's bit for bit given the
// same distances; they are a few thousand dependent adds per round (one chain: every
// candidate's running sums at once, microseconds), while the distance launch reads the
// pools (the bulk of the time).
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 512;  // pool entries staged in shared memory at a time
constexpr int kMaxCand = static_cast<int>(kMaxRowDistanceCandidates);

// Where a problem stands between rounds.
struct SeedState {
  double potential;       // sum of the pool's nearest distances
  std::int64_t c;         // centroids chosen so far
  std::int64_t used;      // uniforms consumed
  std::int64_t last;      // last pool index with a non-zero nearest distance (-1: none)
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
  st.potential = 0;
  st.c = 0;
  st.used = 0;
  st.last = -1;
  st.cand[0] = first;
}

// One round for problem blockIdx.x: takes the distances of its candidates (centroid c), then
// prepares centroid c + 1's candidates (or marks the problem done: n_a = 0).
//
// Thread t < n_a walks candidate t's pool in order: w_i = min(best_i, d_t,i) (d_0,i itself
// for the first centroid), its float64 running sum (the candidate's potential at the end)
// and the last i with w_i > 0. Each running sum is written out (prefix_all, laid out as the
// distances), so the chosen candidate's sums are the ones the draws search: one dependent
// chain a round instead of the potentials' and then the chosen one's.
__global__ void __launch_bounds__(kThreads)
    seed_step_kernel(const std::int64_t* b, const std::int64_t* b_begin, const SeedingProblem* problems,
                     const double* uniforms, std::int64_t max_k, std::int64_t* a, std::int32_t* n_a,
                     const std::int64_t* out_begin, const float* dist, float* best_all, double* prefix_all,
                     SeedState* state, std::int64_t* chosen) {
  const std::int64_t g = blockIdx.x;
  const int tid = static_cast<int>(threadIdx.x);
  const int na = n_a[g];
  if (na == 0) return;
  SeedState& st = state[g];
  const SeedingProblem prob = problems[g];
  const std::int64_t m = b_begin[g + 1] - b_begin[g];
  const float* d = dist + out_begin[g];
  float* best = best_all + b_begin[g];
  double* prefix_t = prefix_all + out_begin[g] + static_cast<std::int64_t>(tid) * m;
  std::int64_t* out = chosen + g * max_k;
  const std::int64_t c = st.c;
  const bool first = c == 0;  // no nearest distances yet: w_i = d_0,i

  __shared__ float s_dist[kMaxCand][kChunk];
  __shared__ float s_best[kChunk];
  __shared__ double s_pot[kMaxCand];
  __shared__ std::int64_t s_last[kMaxCand];
  __shared__ int s_choice;

  double acc = 0;
  std::int64_t last = -1;
  for (std::int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const int len = static_cast<int>(m - i0 < kChunk ? m - i0 : kChunk);
    if (!first)
      for (int e = tid; e < len; e += kThreads) s_best[e] = best[i0 + e];
    for (int q = tid; q < na * len; q += kThreads) {
      const int t = q / len, e = q - t * len;
      s_dist[t][e] = d[static_cast<std::int64_t>(t) * m + i0 + e];
    }
    __syncthreads();
    if (tid < na) {
      // Eight values loaded ahead of their dependent adds.
      int e = 0;
      for (; e + 8 <= len; e += 8) {
        float w[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const float dv = s_dist[tid][e + u];
          if (first) {
            w[u] = dv;
          } else {
            const float bv = s_best[e + u];
            w[u] = dv < bv ? dv : bv;
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          acc += w[u];
          prefix_t[i0 + e + u] = acc;
          if (w[u] > 0) last = i0 + e + u;
        }
      }
      for (; e < len; ++e) {
        const float dv = s_dist[tid][e];
        const float bv = first ? dv : s_best[e];
        const float w = dv < bv ? dv : bv;
        acc += w;
        prefix_t[i0 + e] = acc;
        if (w > 0) last = i0 + e;
      }
    }
    __syncthreads();
  }
  if (tid < na) {
    s_pot[tid] = acc;
    s_last[tid] = last;
  }
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
    out[c] = st.cand[choice];
  }
  __syncthreads();
  const int choice = s_choice;
  acc = s_pot[choice];
  last = s_last[choice];
  const double* prefix = prefix_all + out_begin[g] + static_cast<std::int64_t>(choice) * m;
  const float* dc = d + static_cast<std::int64_t>(choice) * m;
  for (std::int64_t i = tid; i < m; i += kThreads) {
    const float dv = dc[i];
    if (first) {
      best[i] = dv;
    } else {
      const float bv = best[i];
      best[i] = dv < bv ? dv : bv;
    }
  }

  // The next centroid: copies while the potential is 0, else `trials` draws.
  __shared__ std::int64_t s_next;
  __shared__ double s_potential;
  if (tid == 0) {
    std::int64_t next = c + 1;
    while (next < prob.k && acc <= 0) {
      out[next] = next % m;
      ++next;
    }
    st.potential = acc;
    st.last = last;
    st.c = next;
    n_a[g] = next < prob.k ? prob.trials : 0;
    s_next = next;
    s_potential = acc;
  }
  __syncthreads();
  if (s_next >= prob.k) return;
  if (tid < prob.trials) {
    const double target = uniforms[prob.uniform_begin + st.used + tid] * s_potential;
    std::int64_t lo = 0, hi = m;  // the first i with prefix[i] > target
    while (lo < hi) {
      const std::int64_t mid = (lo + hi) / 2;
      if (prefix[mid] > target) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    const std::int64_t pick = lo < m ? lo : st.last;
    st.cand[tid] = pick;
    a[g * kMaxCand + tid] = b[b_begin[g] + pick];
  }
  __syncthreads();
  if (tid == 0) st.used += prob.trials;
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
  // Temporaries, one workspace: nearest distances, each candidate's running sums, candidate distances,
  // the distance launch's candidate rows / counts / offsets, and each problem's state.
  const std::size_t o_best = 0, o_prefix = o_best + detail::align256(n_b * sizeof(float)),
                    o_dist = o_prefix + detail::align256(n_b * static_cast<std::size_t>(s.max_trials) * sizeof(double)),
                    o_a = o_dist + detail::align256(n_b * static_cast<std::size_t>(s.max_trials) * sizeof(float)),
                    o_na = o_a + detail::align256(G * detail::kMaxCand * sizeof(std::int64_t)),
                    o_ob = o_na + detail::align256(G * sizeof(std::int32_t)),
                    o_state = o_ob + detail::align256(G * sizeof(std::int64_t)),
                    bytes = o_state + G * sizeof(detail::SeedState);
  auto* w = static_cast<unsigned char*>(res.workspace(bytes));
  auto* best = reinterpret_cast<float*>(w + o_best);
  auto* prefix = reinterpret_cast<double*>(w + o_prefix);
  auto* dist = reinterpret_cast<float*>(w + o_dist);
  auto* a = reinterpret_cast<std::int64_t*>(w + o_a);
  auto* n_a = reinterpret_cast<std::int32_t*>(w + o_na);
  auto* out_begin = reinterpret_cast<std::int64_t*>(w + o_ob);
  auto* state = reinterpret_cast<detail::SeedState*>(w + o_state);
  const auto stream = static_cast<cudaStream_t>(res.stream());
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
  for (std::int64_t round = 0; round < s.max_k; ++round) {
    row_distances_grouped(res, r);
    detail::seed_step_kernel<<<static_cast<unsigned>(G), detail::kThreads, 0, stream>>>(
        s.b, s.b_begin, s.problems, s.uniforms, s.max_k, a, n_a, out_begin, dist, best, prefix, state, s.chosen);
    MEGATAX_CUDA_CHECK_LAUNCH("seed_step_kernel");
  }
}

}  // namespace megatax::cuda
