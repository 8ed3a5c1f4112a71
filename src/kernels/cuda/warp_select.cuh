// kernels/cuda/warp_select.cuh -- one warp keeps the k smallest (score, id) pairs of a row.
//
// The result list (capacity k, sorted ascending, first m entries valid) lives in global
// memory (it is also the kernel's output slot, so it is never copied); a 32-entry candidate
// buffer lives in shared memory. Candidates arrive 32 at a time (one per lane) through
// offer(): those below the current threshold tau (the k-th best so far; +inf until the list
// is full) are appended to the buffer with a ballot; when the buffer would overflow it is
// flushed: sorted across the lanes (bitonic, shuffles), ranked against the list by binary
// search, and merged in place -- only the list's tail that the new entries displace moves,
// back to front (or, where the caller asks for it, lists of at most 128 entries are read once
// into registers, merged by rank and written back: flush_short, one round trip to global
// memory instead of a dependent chain of them). After the first k candidates, flushes are
// rare (about k ln(n / k) insertions over a stream of n random candidates), so the steady
// state is one compare and one ballot per 32 candidates. An empty row can instead be filled
// at once from up to 32 R candidates held in registers (fill_empty_row: one bitonic sort of
// them all, where offering them would flush every 32), and a short list in shared memory can
// take as many at once (merge_sorted_row: the sort, then a merge of the two sorted runs).
// Where more candidates come at once than the row can keep, the k best of them are chosen
// first (keep_smallest: a bitwise search for the k-th key, one warp-wide count a bit) and
// only those sorted (select_empty_row, select_merge_row): at k = 10 a sort of 32 instead of
// 256, at k = 100 of 128.
//
// Order: (score, id) lexicographic, so ties go to the smaller id and results are independent
// of the order candidates arrive in. Ids must be unique within a row's stream. NaN scores
// never enter.
//
// All functions are called by all 32 lanes of a warp with warp-uniform state.
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/distance_ops.cuh"

namespace megatax::cuda::detail {

constexpr float kInfScore = __builtin_huge_valf();
constexpr std::int64_t kNoId = INT64_MAX;

__device__ __forceinline__ bool key_less(float s1, std::int64_t i1, float s2, std::int64_t i2) {
  return s1 < s2 || (s1 == s2 && i1 < i2);
}

// Sorts 32 (score, id) pairs held one per lane, ascending by lane (bitonic network).
__device__ __forceinline__ void warp_sort32(float& s, std::int64_t& id) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int size = 2; size <= 32; size *= 2) {
#pragma unroll
    for (int stride = size / 2; stride > 0; stride /= 2) {
      const float os = __shfl_xor_sync(0xffffffffu, s, stride);
      const std::int64_t oid = __shfl_xor_sync(0xffffffffu, id, stride);
      const bool ascending = (lane & size) == 0 || size == 32;
      const bool lower = (lane & stride) == 0;
      // The lower lane of an ascending pair keeps the smaller key, and so on.
      const bool take = (lower == ascending) ? key_less(os, oid, s, id) : key_less(s, id, os, oid);
      if (take) {
        s = os;
        id = oid;
      }
    }
  }
}

// Warp-uniform selection state of one row.
struct RowSelect {
  float* list_s;           // global [k], sorted, first m valid
  std::int64_t* list_id;   // global [k]
  float* buf_s;            // shared [32]
  std::int64_t* buf_id;    // shared [32]
  int k;
  int m;
  int count;               // entries in the buffer
  float tau_s;             // the k-th best so far, (+inf, kNoId) until m == k
  std::int64_t tau_id;
  // Merge lists of at most kShortList entries in registers (flush_short): fewer round trips
  // to the list, more instructions. For kernels with few warps an SM, where a flush's
  // latency is exposed (Hopper's top-k); the portable kernels, with many warps to hide it,
  // were slower with it at k = 100 (bench_cuda, Q=16: 2.8 -> 3.7 ms).
  bool short_merge = false;
  // Where bound_j > 0, flushes also keep the list's bound_j-th score in bound_s (+inf while
  // the list is shorter): a kernel publishes it (shared_bound.cuh) without reading the list.
  int bound_j = 0;
  float bound_s = kInfScore;
  int flushes = 0;  // flushes since the state was loaded
};

// Lane `lane`'s entry of the row's buffer: (buf_s, buf_id)[lane] for the first st.count lanes,
// (+inf, kNoId) after them.
__device__ __forceinline__ void take_buffer(const RowSelect& st, int lane, float& s,
                                            std::int64_t& id) {
  s = kInfScore;
  id = kNoId;
  if (lane < st.count) {
    s = st.buf_s[lane];
    id = st.buf_id[lane];
  }
}

// Number of the 32 sorted keys held one per lane (ascending by lane; the first `valid` lanes
// count) that are below (s, id): binary lifting over the lanes, every lane its own query.
__device__ __forceinline__ int count_below(float ks, std::int64_t kid, int valid, float s,
                                           std::int64_t id) {
  int below = 0;
#pragma unroll
  for (int step = 32; step >= 1; step /= 2) {
    const int probe = below + step - 1;
    const float ps = __shfl_sync(0xffffffffu, ks, probe & 31);
    const std::int64_t pid = __shfl_sync(0xffffffffu, kid, probe & 31);
    if (probe < valid && key_less(ps, pid, s, id)) below += step;
  }
  return below;
}

// The list holds at most this many entries for flush_short (registers: kShortSlots a lane).
constexpr int kShortSlots = 4;
constexpr int kShortList = 32 * kShortSlots;

// flush() for k <= kShortList: the whole list is read once into registers (entry 32 r + lane
// in slot r), merged with the sorted buffer by rank (an old entry moves up by the new entries
// below it, a new entry lands after the old entries below it) and the kept entries are
// written back: one round trip to the list instead of a binary search and a shift.
__device__ inline void flush_short(RowSelect& st) {
  __syncwarp();
  const int lane = threadIdx.x % 32;
  const int b = st.count;
  float s;
  std::int64_t id;
  take_buffer(st, lane, s, id);
  const int m_old = st.m;
  float ls[kShortSlots];
  std::int64_t lid[kShortSlots];
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {
    const int i = 32 * r + lane;
    ls[r] = kInfScore;
    lid[r] = kNoId;
    if (i < m_old) {
      ls[r] = st.list_s[i];
      lid[r] = st.list_id[i];
    }
  }
  warp_sort32(s, id);
  int new_pos = lane;  // + the old entries below
  int old_pos[kShortSlots];
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {
    old_pos[r] = 32 * r + lane;
    if (32 * r >= m_old) continue;  // warp-uniform
    const int valid = min(32, m_old - 32 * r);
    new_pos += count_below(ls[r], lid[r], valid, s, id);
    old_pos[r] += count_below(s, id, b, ls[r], lid[r]);
  }
  const int k = st.k;
  const int m_new = min(k, m_old + b);
  // The new threshold (the entry landing at k - 1) comes from the registers, not the list;
  // so does the bound_j-th score.
  float tau_s = st.tau_s;
  std::int64_t tau_id = st.tau_id;
  auto entry_at = [&](int pos, float& es, std::int64_t& eid) {
    unsigned from_new = __ballot_sync(0xffffffffu, lane < b && new_pos == pos);
    if (from_new != 0) {
      const int src = __ffs(from_new) - 1;
      es = __shfl_sync(0xffffffffu, s, src);
      eid = __shfl_sync(0xffffffffu, id, src);
    }
#pragma unroll
    for (int r = 0; r < kShortSlots; ++r) {
      const unsigned from_old =
          __ballot_sync(0xffffffffu, 32 * r + lane < m_old && old_pos[r] == pos);
      if (from_old != 0) {
        const int src = __ffs(from_old) - 1;
        es = __shfl_sync(0xffffffffu, ls[r], src);
        eid = __shfl_sync(0xffffffffu, lid[r], src);
      }
    }
  };
  if (m_new == k) entry_at(k - 1, tau_s, tau_id);
  if (st.bound_j == k) {
    st.bound_s = tau_s;
  } else if (st.bound_j > 0 && m_new >= st.bound_j) {
    std::int64_t bound_id = kNoId;
    entry_at(st.bound_j - 1, st.bound_s, bound_id);
  }
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {
    if (32 * r + lane < m_old && old_pos[r] != 32 * r + lane && old_pos[r] < k) {
      st.list_s[old_pos[r]] = ls[r];
      st.list_id[old_pos[r]] = lid[r];
    }
  }
  if (lane < b && new_pos < k) {
    st.list_s[new_pos] = s;
    st.list_id[new_pos] = id;
  }
  __syncwarp();
  st.m = m_new;
  st.count = 0;
  st.tau_s = tau_s;
  st.tau_id = tau_id;
  ++st.flushes;
}

// Merges the buffer into the list (see the file comment).
__device__ inline void flush(RowSelect& st) {
  if (st.short_merge && st.k <= kShortList) {
    flush_short(st);
    return;
  }
  __syncwarp();  // buffer writes of other lanes are visible after this
  const int lane = threadIdx.x % 32;
  const int b = st.count;
  float s;
  std::int64_t id;
  take_buffer(st, lane, s, id);
  warp_sort32(s, id);

  // Rank of each new entry among the old list: lower bound by binary search.
  const int m_old = st.m;
  int lb = 0;
  if (lane < b) {
    int lo = 0, hi = m_old;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (key_less(st.list_s[mid], st.list_id[mid], s, id)) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    lb = lo;
  }
  const int lb0 = __shfl_sync(0xffffffffu, lb, 0);

  // Shift the old entries at [lb0, m_old) right by the number of new entries below them,
  // back to front, 32 at a time (each round reads before anyone writes).
  if (b > 0 && m_old > lb0) {
    for (int base = ((m_old - 1) / 32) * 32; base + 32 > lb0; base -= 32) {
      const int i = base + lane;
      const bool have = i >= lb0 && i < m_old;
      float ls = kInfScore;
      std::int64_t lid = kNoId;
      if (have) {
        ls = st.list_s[i];
        lid = st.list_id[i];
      }
      const int below = count_below(s, id, b, ls, lid);  // new entries smaller than it
      __syncwarp();
      if (have && below > 0 && i + below < st.k) {
        st.list_s[i + below] = ls;
        st.list_id[i + below] = lid;
      }
      __syncwarp();
      if (base == 0) break;
    }
  }
  if (lane < b && lane + lb < st.k) {
    st.list_s[lane + lb] = s;
    st.list_id[lane + lb] = id;
  }
  __syncwarp();
  st.m = min(st.k, m_old + b);
  st.count = 0;
  if (st.m == st.k) {
    st.tau_s = st.list_s[st.k - 1];
    st.tau_id = st.list_id[st.k - 1];
  }
  if (st.bound_j == st.k) {
    st.bound_s = st.tau_s;
  } else if (st.bound_j > 0 && st.m >= st.bound_j) {
    st.bound_s = st.list_s[st.bound_j - 1];
  }
  ++st.flushes;
}

// One in-register step of warp_sort_regs: registers r and r | RS (RS = stride / 32) compared
// and exchanged, ascending where bit `size` of element 32 r's index is 0.
template <int R, int RS>
__device__ __forceinline__ void sort_step_in_regs(float (&s)[R], std::int32_t (&id)[R], int size) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if ((r & RS) != 0) continue;
    const int r2 = r | RS;
    const bool ascending = ((32 * r) & size) == 0;
    const bool swap = ascending ? key_less(s[r2], id[r2], s[r], id[r])
                                : key_less(s[r], id[r], s[r2], id[r2]);
    if (swap) {
      const float ts = s[r];
      s[r] = s[r2];
      s[r2] = ts;
      const std::int32_t tid = id[r];
      id[r] = id[r2];
      id[r2] = tid;
    }
  }
}

// Sorts 32 R (score, id) pairs held R a lane, ascending: afterwards element i is register
// i / 32 of lane i % 32 (a bitonic network: strides below 32 compare across lanes, larger ones
// within a lane's registers). The pairs may start in any arrangement.
// The network's steps run in a loop, only the registers unrolled: fully unrolled, the R = 8
// sort was some 4,000 straight-line instructions, and a chunk's first merge in the few-query
// kernel (two such sorts a warp) took ~55k cycles; with the loop ~40k (clock64 counters on an
// H200, session 38), and the kernel's later merges by sort (merge_sorted_row) began to pay.
template <int R>
__device__ __forceinline__ void warp_sort_regs(float (&s)[R], std::int32_t (&id)[R]) {
  static_assert(R >= 1 && R <= 16 && (R & (R - 1)) == 0, "a power of two a lane, up to 16");
  const int lane = threadIdx.x % 32;
#pragma unroll 1
  for (int size = 2; size <= 32 * R; size *= 2) {
#pragma unroll 1
    for (int stride = size / 2; stride > 0; stride /= 2) {
      if (stride >= 32) {
        // Register indices must be known at compile time: one unrolled body per distance.
        const int rs = stride / 32;
        if constexpr (R >= 16) {
          if (rs == 8) sort_step_in_regs<R, 8>(s, id, size);
        }
        if constexpr (R >= 8) {
          if (rs == 4) sort_step_in_regs<R, 4>(s, id, size);
        }
        if constexpr (R >= 4) {
          if (rs == 2) sort_step_in_regs<R, 2>(s, id, size);
        }
        if constexpr (R >= 2) {
          if (rs == 1) sort_step_in_regs<R, 1>(s, id, size);
        }
        continue;
      }
      const bool lower = (lane & stride) == 0;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float os = __shfl_xor_sync(0xffffffffu, s[r], stride);
        const std::int32_t oid = __shfl_xor_sync(0xffffffffu, id[r], stride);
        const bool ascending = ((32 * r + lane) & size) == 0;
        // The lower element of an ascending pair keeps the smaller key, and so on.
        const bool take =
            (lower == ascending) ? key_less(os, oid, s[r], id[r]) : key_less(s[r], id[r], os, oid);
        if (take) {
          s[r] = os;
          id[r] = oid;
        }
      }
    }
  }
}

// Fills an empty row (no entries, empty buffer) from n <= 32 R candidates held R a lane, in
// any arrangement (padding: (+inf, INT32_MAX), which sorts after every real entry: their ids
// are database rows, below 2^31 - 1): one sort, then the first min(k, n) entries written to
// the list, instead of a flush for every 32 offered (a chunk's first tile passes all its rows:
// at k = 100 about seven flushes). Leaves the state as the flushes would.
template <int R>
__device__ __forceinline__ void fill_empty_row(RowSelect& st, float (&s)[R],
                                               std::int32_t (&id)[R], int n) {
  warp_sort_regs<R>(s, id);
  const int lane = threadIdx.x % 32;
  const int m = min(st.k, n);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (32 * r + lane < m) {
      st.list_s[32 * r + lane] = s[r];
      st.list_id[32 * r + lane] = id[r];
    }
  }
  __syncwarp();  // the list's new entries visible to every lane
  st.m = m;
  st.count = 0;
  if (m == st.k) {
    st.tau_s = st.list_s[st.k - 1];
    st.tau_id = st.list_id[st.k - 1];
  }
  if (st.bound_j > 0 && m >= st.bound_j) st.bound_s = st.list_s[st.bound_j - 1];
  ++st.flushes;
}

// A candidate held compactly: score and row (rows below 2^31 - 1).
struct ScoredRow {
  float s;
  std::int32_t id;
};

// Merges n <= 32 R candidates held R a lane, in any arrangement (padding as for
// fill_empty_row), into a row whose list lives in shared memory (k <= kShortList) and whose
// buffer is empty (a caller holding buffered entries passes them among the n): one sort,
// then each entry's place in the merged list by a binary search in the other sorted run (an
// old entry moves up by the new entries below it, a new entry lands after the old entries
// below it; ids are unique, so no two keys are equal), and the first k written. Where
// offering them would flush every 32 (at k = 100 each flush sorts 32 and ranks them against
// the list's four slots by shuffles), this sorts once and searches in shared memory.
// `scratch` (shared, 32 R entries) is overwritten with the sorted candidates. Leaves the
// state as the flushes would.
template <int R>
__device__ __forceinline__ void merge_sorted_row(RowSelect& st, float (&s)[R],
                                                 std::int32_t (&id)[R], int n,
                                                 ScoredRow* scratch) {
  warp_sort_regs<R>(s, id);
  const int lane = threadIdx.x % 32;
  const int m_old = st.m;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (32 * r + lane < n) scratch[32 * r + lane] = ScoredRow{s[r], id[r]};
  }
  float ls[kShortSlots];
  std::int64_t lid[kShortSlots];
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {
    const int i = 32 * r + lane;
    ls[r] = i < m_old ? st.list_s[i] : kInfScore;
    lid[r] = i < m_old ? st.list_id[i] : kNoId;
  }
  __syncwarp();  // the sorted candidates visible to every lane
  int new_pos[R], old_pos[kShortSlots];
#pragma unroll
  for (int r = 0; r < R; ++r) {  // + the old entries below
    int lo = 0, hi = 32 * r < n ? m_old : 0;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (key_less(st.list_s[mid], st.list_id[mid], s[r], id[r])) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    new_pos[r] = 32 * r + lane + lo;
  }
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {  // + the new entries below
    int lo = 0, hi = 32 * r < m_old ? n : 0;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      const ScoredRow c = scratch[mid];
      if (key_less(c.s, c.id, ls[r], lid[r])) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    old_pos[r] = 32 * r + lane + lo;
  }
  __syncwarp();  // every read of the list done
  const int k = st.k;
#pragma unroll
  for (int r = 0; r < kShortSlots; ++r) {
    if (32 * r + lane < m_old && old_pos[r] != 32 * r + lane && old_pos[r] < k) {
      st.list_s[old_pos[r]] = ls[r];
      st.list_id[old_pos[r]] = lid[r];
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (32 * r + lane < n && new_pos[r] < k) {
      st.list_s[new_pos[r]] = s[r];
      st.list_id[new_pos[r]] = id[r];
    }
  }
  __syncwarp();  // the merged list visible to every lane
  st.m = min(k, m_old + n);
  st.count = 0;
  if (st.m == k) {
    st.tau_s = st.list_s[k - 1];
    st.tau_id = st.list_id[k - 1];
  }
  if (st.bound_j > 0 && st.m >= st.bound_j) st.bound_s = st.list_s[st.bound_j - 1];
  ++st.flushes;
}

// ---- the k best chosen before they are sorted ----
// A chunk's first tile passes all its rows, and a later merge takes up to 256 candidates, of
// which at most k can stay: sorting only the k best of them (found by a bitwise search on
// their keys) sorts 32 a lane instead of 256 at k = 10, 128 instead of 256 at k = 100.

// The score's place in the (score, id) order: float_order_key with -0 as +0 (key_less
// compares scores as floats, where the two are equal).
__device__ __forceinline__ std::uint32_t select_key(float s) {
  return float_order_key(s == 0.f ? 0.f : s);
}

// Registers a lane for x entries: the smallest power of two R2 <= R with x <= 32 R2.
template <int R>
__host__ __device__ constexpr int front_regs(int x) {
  int r = 1;
  while (r < R && 32 * r < x) r *= 2;
  return r;
}

// Calls f(std::integral_constant<int, front_regs<R>(x)>) (x <= 32 R).
template <int R, class F>
__device__ __forceinline__ void with_front_regs(int x, F&& f) {
  if constexpr (R > 1) {
    if (x <= 16 * R) {
      with_front_regs<R / 2>(x, f);
      return;
    }
  }
  f(std::integral_constant<int, R>{});
}

// Of n <= 32 R candidates held R a lane, entry i in register i / 32 of lane i % 32 (the first
// n real, padding after them: (+inf, INT32_MAX)), keeps the m smallest by (score, id)
// (1 <= m < n), in the same layout: the m-th smallest key by a bitwise search from the top
// bit (one warp-wide count a bit), among a tie at it the smallest ids by a second search on
// the ids, then the chosen moved to the front of `scratch` (n entries with fields s and id,
// shared or global memory; every lane must be done reading it) and read back.
template <int R, class Entry>
__device__ __forceinline__ void keep_smallest(float (&s)[R], std::int32_t (&id)[R], int m,
                                              Entry* scratch) {
  const int lane = threadIdx.x % 32;
  std::uint32_t key[R];
#pragma unroll
  for (int r = 0; r < R; ++r) key[r] = select_key(s[r]);
  // t: the largest key with fewer than m keys below it, i.e. the m-th smallest key.
  std::uint32_t t = 0;
#pragma unroll 1
  for (int b = 31; b >= 0; --b) {
    const std::uint32_t trial = t | (1u << b);
    unsigned below = 0;
#pragma unroll
    for (int r = 0; r < R; ++r) below += key[r] < trial ? 1u : 0u;
    if (static_cast<int>(__reduce_add_sync(0xffffffffu, below)) < m) t = trial;
  }
  unsigned below = 0, at = 0;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    below += key[r] < t ? 1u : 0u;
    at += key[r] == t ? 1u : 0u;
  }
  const int need = m - static_cast<int>(__reduce_add_sync(0xffffffffu, below));
  // Of the keys equal to t, the `need` smallest ids (ids >= 0; padding's is the largest, and
  // m <= the real entries, so only real ones are taken).
  std::uint32_t last_id = 0xffffffffu;
  if (static_cast<int>(__reduce_add_sync(0xffffffffu, at)) > need) {
    last_id = 0;
#pragma unroll 1
    for (int b = 30; b >= 0; --b) {
      const std::uint32_t trial = last_id | (1u << b);
      unsigned c = 0;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        c += key[r] == t && static_cast<std::uint32_t>(id[r]) < trial ? 1u : 0u;
      }
      if (static_cast<int>(__reduce_add_sync(0xffffffffu, c)) < need) last_id = trial;
    }
  }
  __syncwarp();  // every lane has read `scratch` before it is written
  int base = 0;
  const unsigned lanes_below = (1u << lane) - 1u;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const bool chosen =
        key[r] < t || (key[r] == t && static_cast<std::uint32_t>(id[r]) <= last_id);
    const unsigned mask = __ballot_sync(0xffffffffu, chosen);
    if (chosen) {
      Entry& e = scratch[base + __popc(mask & lanes_below)];
      e.s = s[r];
      e.id = id[r];
    }
    base += __popc(mask);
  }
  __syncwarp();  // the chosen visible to every lane
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = 32 * r + lane;
    s[r] = i < m ? scratch[i].s : kInfScore;
    id[r] = i < m ? static_cast<std::int32_t>(scratch[i].id) : INT32_MAX;
  }
}

// The entries a row can keep of n candidates (at most k), cut to them when that sorts fewer
// registers a lane; calls f(s2, id2, count) with the count in s2 and id2, the first R2
// registers of s and id (R2 = front_regs<R>(count)).
template <int R, class Entry, class F>
__device__ __forceinline__ void keep_for_row(const RowSelect& st, float (&s)[R],
                                             std::int32_t (&id)[R], int n, Entry* scratch,
                                             F&& f) {
  int count = n;
  if (st.k < n && front_regs<R>(st.k) < front_regs<R>(n)) {
    keep_smallest<R>(s, id, st.k, scratch);
    count = st.k;
  }
  with_front_regs<R>(count, [&](auto regs) {
    constexpr int R2 = decltype(regs)::value;
    float s2[R2];
    std::int32_t id2[R2];
#pragma unroll
    for (int r = 0; r < R2; ++r) {
      s2[r] = s[r];
      id2[r] = id[r];
    }
    f(s2, id2, count);
  });
}

// fill_empty_row of n <= 32 R candidates held as for keep_smallest, only the k best sorted
// (where fewer registers hold them). `scratch`: as for keep_smallest.
template <int R, class Entry>
__device__ __forceinline__ void select_empty_row(RowSelect& st, float (&s)[R],
                                                 std::int32_t (&id)[R], int n, Entry* scratch) {
  keep_for_row<R>(st, s, id, n, scratch, [&](auto& s2, auto& id2, int count) {
    fill_empty_row(st, s2, id2, count);
  });
}

// merge_sorted_row of n <= 32 R candidates held as for keep_smallest (the list in shared
// memory, k <= kShortList), only the k best of them sorted and merged (where fewer registers
// hold them: no candidate beyond the k-th of the new ones can stay). `scratch`: shared, as
// for keep_smallest and merge_sorted_row.
template <int R>
__device__ __forceinline__ void select_merge_row(RowSelect& st, float (&s)[R],
                                                 std::int32_t (&id)[R], int n,
                                                 ScoredRow* scratch) {
  keep_for_row<R>(st, s, id, n, scratch, [&](auto& s2, auto& id2, int count) {
    merge_sorted_row(st, s2, id2, count, scratch);
  });
}

// Offers one candidate per lane (`valid` false: no candidate). Returns false when no lane's
// candidate was below the threshold (nothing changed), true otherwise.
__device__ inline bool offer(RowSelect& st, float s, std::int64_t id, bool valid) {
  bool pass = valid && key_less(s, id, st.tau_s, st.tau_id);
  unsigned mask = __ballot_sync(0xffffffffu, pass);
  if (mask == 0) return false;
  int c = __popc(mask);
  if (st.count + c > 32) {
    flush(st);
    pass = pass && key_less(s, id, st.tau_s, st.tau_id);
    mask = __ballot_sync(0xffffffffu, pass);
    c = __popc(mask);
  }
  if (pass) {
    const int lane = threadIdx.x % 32;
    const int pos = st.count + __popc(mask & ((1u << lane) - 1u));
    st.buf_s[pos] = s;
    st.buf_id[pos] = id;
  }
  st.count += c;
  return true;
}

}  // namespace megatax::cuda::detail
