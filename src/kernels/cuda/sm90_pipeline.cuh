// kernels/cuda/sm90_pipeline.cuh -- the main loop shared by the Hopper (sm_90a) kernels of X * C^T
// (assign_sm90.cu, topk_sm90.cu, topk_sm90_few.cu): a ring of shared-memory stages that one
// producer thread fills with TMA copies and two consumer warpgroups drain with wgmma.
//
// A stage holds one 64-wide d chunk of the A tile (BM rows, kSm90BM = 128 by default: points /
// queries) and of the B tile (BN rows: centroids / database rows; for a few queries the roles
// swap: 256 database rows against 16 queries), both K-major with the 128-byte swizzle.
// Each stage has a "full" mbarrier (the copies landed; one producer arrival plus the bytes)
// and an "empty" one (every consumer warp of every CTA of the cluster is done with it).
// In clusters of kCluster CTAs (consecutive A row blocks against the same B tiles) each CTA
// copies 1 / kCluster of the B tile and multicasts it to all of them.
//
// Per column tile the producer calls produce_tile() and each consumer warpgroup mma_tile(),
// which leaves the tile's 64 x BN dot products in the warpgroup's accumulators (wgmma's
// register layout, wgmma_ops.cuh) with every stage it read released. Both sides walk the
// same (tile, chunk) sequence, so a RingCursor each is all the coordination they need.
//
// Internal header, nvcc only; the wgmma parts need sm_90a (MEGATAX_SM90A, hopper.cuh).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/hopper.cuh"
#if defined(MEGATAX_SM90A)
#include "kernels/cuda/wgmma_ops.cuh"
#endif

namespace megatax::cuda::detail {

constexpr int kSm90BM = 128;             // A rows per tile (two consumer warpgroups of 64)
constexpr int kSm90BK = 64;              // d per chunk: 128 bytes, one swizzle row
constexpr int kSm90ConsumerWarps = 8;
constexpr int kSm90Threads = 384;        // producer warpgroup + two consumer warpgroups
// Registers a thread after setmaxnreg. Every warp starts with the launch's share (64K over the
// block's threads, in steps of 8: 168 for 384), and a consumer's setmaxnreg.inc can only take
// what the producer warpgroup gave back: 128 x (168 - 40) = 256 x (232 - 168). Asking for
// more waits forever (session 37).
constexpr int kSm90LaunchRegs = 65536 / kSm90Threads / 8 * 8;
constexpr int kSm90ProducerRegs = 40;
constexpr int kSm90ConsumerRegs = 232;
static_assert(128 * (kSm90LaunchRegs - kSm90ProducerRegs) >=
                  256 * (kSm90ConsumerRegs - kSm90LaunchRegs),
              "the consumers take no more registers than the producers give back");

// The ring's shape for BN-column tiles of BM-row A tiles within kRingBudget bytes of shared
// memory (BM: kSm90BM but for top-k of a few queries, where the database is the A side).
template <int BN, int kRingBudget = 200 * 1024, int BM = kSm90BM>
struct Sm90Ring {
  static constexpr int kABytes = BM * kSm90BK * 2;
  static constexpr int kBBytes = BN * kSm90BK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = kRingBudget / kStageBytes;
  static constexpr int kBarrierBytes = 2 * kStages * 8;
  // The 128-byte swizzle repeats every 1024 bytes: the ring starts 1024-byte aligned, so the
  // dynamic allocation carries 1024 bytes of slack.
  static constexpr int kBytes = 1024 + kStages * kStageBytes + kBarrierBytes;
  static_assert(kStages >= 2, "double buffering at least");
};

// Where one side of the ring is: the stage it uses next and that stage's phase parity.
struct RingCursor {
  int stage = 0;
  std::uint32_t phase = 0;
  template <int kStages>
  __device__ __forceinline__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// The ring in a block's dynamic shared memory: stages, then the full and empty barriers.
// The main loops address it through 32-bit shared-space addresses (base, stage_addr, ...):
// in a cluster kernel a generic shared pointer costs a conversion at every use.
template <class Ring>
struct RingView {
  std::uint32_t base;  // shared-space address of stages
  unsigned char* stages;
  std::uint64_t* full;
  std::uint64_t* empty;

  __device__ __forceinline__ explicit RingView(unsigned char* smem_raw)
      : base((sm90::smem_addr(smem_raw) + 1023u) & ~1023u),
        stages(smem_raw + (base - sm90::smem_addr(smem_raw))),
        full(reinterpret_cast<std::uint64_t*>(stages + Ring::kStages * Ring::kStageBytes)),
        empty(full + Ring::kStages) {}

  __device__ __forceinline__ std::uint32_t stage_addr(int s) const {
    return base + static_cast<std::uint32_t>(s * Ring::kStageBytes);
  }
  __device__ __forceinline__ std::uint32_t full_addr(int s) const {
    return base + static_cast<std::uint32_t>(Ring::kStages * Ring::kStageBytes + s * 8);
  }
  __device__ __forceinline__ std::uint32_t empty_addr(int s) const {
    return full_addr(Ring::kStages + s);
  }

  // The first byte after the ring (16-byte aligned), for the kernel's own shared state.
  __device__ __forceinline__ unsigned char* end() const {
    return reinterpret_cast<unsigned char*>(empty + Ring::kStages);
  }

  // Thread 0 initialises the barriers; then the whole block (cluster) synchronises.
  template <int kCluster>
  __device__ __forceinline__ void init() const {
    if (threadIdx.x == 0) {
      for (int s = 0; s < Ring::kStages; ++s) {
        sm90::mbarrier_init(&full[s], 1);
        sm90::mbarrier_init(&empty[s], kSm90ConsumerWarps * kCluster);
      }
      sm90::fence_barrier_init();
    }
    if constexpr (kCluster > 1) {
      sm90::cluster_sync();
    } else {
      __syncthreads();
    }
  }
};

// An L2 cache policy (hopper.cuh) for copies, if `on`.
struct L2Hint {
  bool on = false;
  std::uint64_t policy = 0;
};

// Producer (one thread): the copies of one column tile, chunk by chunk. a_row0: the CTA's
// first A row; b_row0: the tile's first B row (the cluster's whole tile; this CTA copies its
// own part of it). kBK: elements a chunk (128 bytes: 64 16-bit ones, 32 floats). a_hint: the
// L2 policy of the A copies. reverse: the chunks last to first (the consumers' sums do not
// depend on which chunk comes first).
template <class Ring, int BN, int kCluster, int kBK = kSm90BK>
__device__ __forceinline__ void produce_tile(const RingView<Ring>& ring, RingCursor& cur,
                                             const CUtensorMap* map_a, const CUtensorMap* map_b,
                                             std::int64_t a_row0, std::int64_t b_row0,
                                             std::int64_t chunks, int cta_rank,
                                             L2Hint a_hint = {}, bool reverse = false) {
  constexpr int kBPart = BN / kCluster;  // B rows this CTA copies
  constexpr auto kAll = static_cast<std::uint16_t>((1u << kCluster) - 1);
  const auto b_row = static_cast<std::int32_t>(b_row0 + cta_rank * kBPart);
  const auto a_row = static_cast<std::int32_t>(a_row0);
  for (std::int64_t c = 0; c < chunks; ++c) {
    sm90::mbarrier_wait(&ring.empty[cur.stage], cur.phase ^ 1);
    unsigned char* a = ring.stages + cur.stage * Ring::kStageBytes;
    unsigned char* b = a + Ring::kABytes + cta_rank * (kBPart * kSm90BK * 2);
    std::uint64_t* full = &ring.full[cur.stage];
    sm90::mbarrier_arrive_expect_tx(full, Ring::kStageBytes);
    const auto k0 = static_cast<std::int32_t>((reverse ? chunks - 1 - c : c) * kBK);
    if (a_hint.on) {
      sm90::tma_load_2d_hint(a, map_a, k0, a_row, full, a_hint.policy);
    } else {
      sm90::tma_load_2d(a, map_a, k0, a_row, full);
    }
    if constexpr (kCluster > 1) {
      sm90::tma_load_2d_multicast(b, map_b, k0, b_row, full, kAll);
    } else {
      sm90::tma_load_2d(b, map_b, k0, b_row, full);
    }
    cur.template advance<Ring::kStages>();
  }
}

// What the producer copies for one work item: A rows [a_row0, a_row0 + 128) against the
// column tiles [t0, t1), tile t being B rows from b_row0 + t * BN.
struct ProducerItem {
  std::int64_t a_row0, b_row0, t0, t1;
};

// The producer thread's whole life: every work item of its cluster (first, first + step,
// ... below items; item_of(w) -> ProducerItem), tile by tile, chunk by chunk.
// kDropA: the item's last tile reads its A rows with the L2 evict-first policy (nothing
// reads them again: the lines make room for the rows other blocks still reuse).
// kSerpentine: odd tiles walk the chunks backwards, so the A chunks one tile reads last the
// next reads first, while they are still in L2 (the A rows of all resident blocks need not
// fit there: 33 MB at D = 1024).
template <class Ring, int BN, int kCluster, bool kDropA = false, bool kSerpentine = false,
          class ItemOf>
__device__ __forceinline__ void produce_items(const RingView<Ring>& ring, const CUtensorMap* map_a,
                                              const CUtensorMap* map_b, std::int64_t first,
                                              std::int64_t step, std::int64_t items,
                                              std::int64_t chunks, int cta_rank,
                                              ItemOf&& item_of) {
  sm90::prefetch_tensor_map(map_a);
  sm90::prefetch_tensor_map(map_b);
  L2Hint drop_a;
  if constexpr (kDropA) drop_a.policy = sm90::l2_policy_evict_first();
  RingCursor cur;
  for (std::int64_t w = first; w < items; w += step) {
    const ProducerItem it = item_of(w);
    for (std::int64_t t = it.t0; t < it.t1; ++t) {
      drop_a.on = kDropA && t + 1 == it.t1;
      produce_tile<Ring, BN, kCluster>(ring, cur, map_a, map_b, it.a_row0, it.b_row0 + t * BN,
                                       chunks, cta_rank, drop_a, kSerpentine && (t & 1) != 0);
    }
  }
}

#if defined(MEGATAX_SM90A)
// A consumer warp is done with a stage: arrive on the stage's "empty" barrier of every CTA of
// the cluster (their producers write into this CTA's copy of the stage too).
template <int kCluster>
__device__ __forceinline__ void release_stage(std::uint32_t empty_bar) {
  if constexpr (kCluster == 1) {
    sm90::mbarrier_arrive(empty_bar);
  } else {
#pragma unroll
    for (int r = 0; r < kCluster; ++r) sm90::mbarrier_arrive_cluster(empty_bar, r);
  }
}
template <int kCluster>
__device__ __forceinline__ void release_stage(std::uint64_t* empty_bar) {
  release_stage<kCluster>(sm90::smem_addr(empty_bar));
}

// Consumer warpgroup `cw` (0 or 1): the 64 x BN dot products of its rows of one column tile
// into acc, one chunk's MMAs in flight while the next chunk's are issued. on_chunk(a, c) runs
// once chunk c's MMAs are issued, while they run, with the warpgroup's A rows of that chunk
// in shared memory at shared-space address a (assign sums ||x||^2 there); it must not touch
// acc. On return the accumulators are final and every stage is released.
// kFirstWrites: the first k step names acc as outputs only (Wgmma::mma_first), so that the
// compiler knows the last tile's values are dead and may use their registers between the
// tiles (the top-k selection; the first chunk is peeled: a branch between the two forms in
// the loop made ptxas serialise the wgmmas, C7520).
template <class T, class Ring, int BN, int kCluster, bool kFirstWrites = false, class OnChunk>
__device__ __forceinline__ void mma_tile(float (&acc)[BN / 2], const RingView<Ring>& ring,
                                         RingCursor& cur, int cw, int lane, std::int64_t chunks,
                                         OnChunk&& on_chunk) {
  int pending = -1;  // the stage whose MMAs are in flight
  auto chunk_mmas = [&](std::int64_t c, auto first) {
    sm90::mbarrier_wait(ring.full_addr(cur.stage), cur.phase);
    const std::uint32_t stage = ring.stage_addr(cur.stage);
    const std::uint32_t a = stage + cw * 64 * (kSm90BK * 2);
    sm90::wgmma_fence();
    const std::uint64_t da = sm90::smem_desc_k_major_sw128(a);
    const std::uint64_t db = sm90::smem_desc_k_major_sw128(stage + Ring::kABytes);
#pragma unroll
    for (int kk = 0; kk < kSm90BK / 16; ++kk) {
      if (decltype(first)::value && kk == 0) {
        Wgmma<T, BN>::mma_first(acc, da, db);
      } else {
        Wgmma<T, BN>::mma(acc, da + 2 * kk, db + 2 * kk, (c > 0 || kk > 0) ? 1 : 0);
      }
    }
    sm90::wgmma_commit();
    on_chunk(a, c);
    sm90::wgmma_wait<1>();
    if (pending >= 0 && lane == 0) release_stage<kCluster>(ring.empty_addr(pending));
    pending = cur.stage;
    cur.template advance<Ring::kStages>();
  };
  std::int64_t c = 0;
  if constexpr (kFirstWrites) chunk_mmas(c++, std::true_type{});
  for (; c < chunks; ++c) chunk_mmas(c, std::false_type{});
  sm90::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) sm90::fence_register(acc[i]);
  if (lane == 0) release_stage<kCluster>(ring.empty_addr(pending));
}
#endif

// A launch of `kernel` in clusters of kCluster CTAs of kSm90Threads threads with smem_bytes of
// dynamic shared memory (the kernel's attribute is set here). cfg keeps pointers into itself:
// use it where it was made.
template <int kCluster>
struct ClusterLaunch {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1]{};

  template <class... KernelArgs>
  ClusterLaunch(void (*kernel)(KernelArgs...), int smem_bytes, cudaStream_t stream) {
    MEGATAX_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kCluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.blockDim = dim3(kSm90Threads);
    cfg.dynamicSmemBytes = static_cast<std::size_t>(smem_bytes);
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }

  // Clusters that can be resident at once (a cluster's CTAs must sit in one GPC, so that can
  // be fewer than SMs / kCluster). cudaOccupancyMaxActiveClusters takes host time on every
  // call, while the GPU waits for the launch it precedes, so its answer is kept per kernel,
  // device and shared-memory size for the process.
  template <class... KernelArgs>
  std::int64_t resident(void (*kernel)(KernelArgs...), int sm_count) {
    int r = sm_count / kCluster;
    if constexpr (kCluster > 1) {
      int device = 0;
      MEGATAX_CUDA_CHECK(cudaGetDevice(&device));
      const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), device,
                                       cfg.dynamicSmemBytes, sm_count);
      static std::mutex mutex;
      static std::map<decltype(key), int> known;
      std::lock_guard<std::mutex> lock(mutex);
      auto it = known.find(key);
      if (it == known.end()) {
        cfg.gridDim = dim3(static_cast<unsigned>(sm_count / kCluster * kCluster));
        int clusters = 0;
        MEGATAX_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg));
        it = known.emplace(key, clusters).first;
      }
      if (it->second > 0) r = std::min(r, it->second);
    }
    return std::max(r, 1);
  }

  // A persistent grid: min(items, resident) clusters walking the work items.
  template <class... KernelArgs, class... Args>
  void launch(void (*kernel)(KernelArgs...), int sm_count, std::int64_t items, Args&&... args) {
    const auto clusters = std::max<std::int64_t>(1, std::min(items, resident(kernel, sm_count)));
    cfg.gridDim = dim3(static_cast<unsigned>(clusters * kCluster));
    MEGATAX_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
  }
};

}  // namespace megatax::cuda::detail
