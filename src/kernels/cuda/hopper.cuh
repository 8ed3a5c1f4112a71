// kernels/cuda/hopper.cuh -- the Hopper (sm_90) primitives of the wgmma kernels, one PTX
// instruction each: shared-memory barriers (mbarrier), the bulk tensor copy engine (TMA),
// warpgroup MMA bookkeeping, shared-memory matrix descriptors and register reallocation.
//
// The mbarrier / TMA helpers are plain sm_90; wgmma and setmaxnreg need sm_90a: the includer
// guards their use with MEGATAX_SM90A (defined below when nvcc compiles for sm_90a).
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct; no driver library needed)

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MEGATAX_SM90A 1
#endif

namespace megatax::cuda::detail::sm90 {

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ---------------------------------------------------------------------------------

__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, std::uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}

// Makes the initialisations visible to the async proxy (TMA) before first use.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// The barrier helpers take the barrier's shared-space address (smem_addr) or a pointer.
__device__ __forceinline__ void mbarrier_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) { mbarrier_arrive(smem_addr(bar)); }

// Arrives and announces `bytes` of transactions (TMA copies) the current phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

// Waits until the phase of parity `parity` has completed (a fresh barrier counts its
// "previous" phase, parity 1, as complete).
__device__ __forceinline__ void mbarrier_wait(std::uint32_t addr, std::uint32_t parity) {
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
  mbarrier_wait(smem_addr(bar), parity);
}

// ---- TMA ----------------------------------------------------------------------------------------

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map))
               : "memory");
}

// Copies the box at (x = inner coordinate, y = row) of a 2-D tensor map into shared memory,
// completing `bytes` of transactions on `bar`. Out-of-range elements arrive as zeros.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, std::int32_t x,
                                            std::int32_t y, std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(x), "r"(y), "r"(smem_addr(bar))
      : "memory");
}

// The same copy written to the same shared-memory offset of every CTA of the cluster whose
// bit is set in `cta_mask`, completing `bytes` on the mbarrier at `bar`'s offset in each.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const CUtensorMap* map,
                                                      std::int32_t x, std::int32_t y,
                                                      std::uint64_t* bar, std::uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster "
      "[%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(x), "r"(y), "r"(smem_addr(bar)),
      "h"(cta_mask)
      : "memory");
}

// An L2 eviction priority for all the lines a copy reads (createpolicy), for tma_load_2d_hint.
__device__ __forceinline__ std::uint64_t l2_policy_evict_first() {
  std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// tma_load_2d with an L2 cache policy for the lines read.
__device__ __forceinline__ void tma_load_2d_hint(void* dst, const CUtensorMap* map, std::int32_t x,
                                                 std::int32_t y, std::uint64_t* bar,
                                                 std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint "
      "[%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(x), "r"(y), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

// ---- clusters -----------------------------------------------------------------------------------

__device__ __forceinline__ std::uint32_t cluster_cta_rank() {
  std::uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}

// All threads of all CTAs of the cluster (release / acquire: shared-memory writes and
// barrier initialisations before it are visible to the cluster after it).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                   : "memory");
}

// Arrives on the mbarrier at `bar`'s offset in the shared memory of cluster CTA `cta`.
__device__ __forceinline__ void mbarrier_arrive_cluster(std::uint32_t bar, std::uint32_t cta) {
  std::uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(cta));
  // Default semantics (release at CTA scope), as for a local arrive: what must be ordered
  // before it are this CTA's reads of the stage, complete once their wgmma wait returned.
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}

// ---- named barriers -----------------------------------------------------------------------------

// Synchronises the `threads` threads that use barrier `id` (1..15; 0 is __syncthreads).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// named_barrier_sync that also returns whether `pred` was true in any of the threads.
__device__ __forceinline__ bool named_barrier_any(int id, int threads, bool pred) {
  std::uint32_t any;
  asm volatile(
      "{\n"
      ".reg .pred p, q;\n"
      "setp.ne.u32 p, %1, 0;\n"
      "barrier.cta.red.or.pred q, %2, %3, p;\n"
      "selp.u32 %0, 1, 0, q;\n"
      "}\n"
      : "=r"(any)
      : "r"(static_cast<std::uint32_t>(pred)), "r"(id), "r"(threads)
      : "memory");
  return any != 0;
}

// ---- warpgroup MMA (sm_90a) ---------------------------------------------------------------------

// Shared-memory matrix descriptor of a K-major tile stored with the 128-byte swizzle (the
// layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B): rows of 128 bytes (64 16-bit elements),
// 8-row atoms of 1024 bytes one after the other. The tile must start 1024-byte aligned;
// advancing the start address by 32 bytes selects the next 16 elements of K.
__device__ __forceinline__ std::uint64_t smem_desc_k_major_sw128(std::uint32_t tile) {
  const std::uint64_t addr = tile;
  std::uint64_t desc = 0;
  desc |= (addr & 0x3FFFFull) >> 4;        // bits 0-13: start address / 16
  desc |= 1ull << 16;                      // bits 16-29: leading byte offset / 16 (unused here)
  desc |= (1024ull >> 4) << 32;            // bits 32-45: stride byte offset / 16 (8-row atoms)
  desc |= 1ull << 62;                      // bits 62-63: 1 = 128-byte swizzle
  return desc;
}
__device__ __forceinline__ std::uint64_t smem_desc_k_major_sw128(const void* tile) {
  return smem_desc_k_major_sw128(smem_addr(tile));
}

// 16 bytes of shared memory at a shared-space address (16-byte aligned).
__device__ __forceinline__ uint4 lds128(std::uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr));
  return v;
}

#if defined(MEGATAX_SM90A)
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of an accumulator register across a wgmma
// wait (the registers change behind its back while an MMA is in flight).
__device__ __forceinline__ void fence_register(float& r) { asm volatile("" : "+f"(r)::"memory"); }

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
#endif

}  // namespace megatax::cuda::detail::sm90
