// bench_cuda: the CUDA kernels against cuBLAS and the memory system, on one card, in one run.
//
// Measured here, in this order (cudaEvent timing on one stream, warm-up, median of reps):
//   - HBM: device-to-device cudaMemcpy bandwidth (2 x bytes / t) and a read-only kernel
//   - cuBLAS bf16 GEMM 8192^3 (cublasGemmEx, f32 accumulation): the "peak" rate, and the rate
//     of ten back to back (what the card sustains at its power cap); the same in
//     f16 (the card's f16 rate, beside which the f16 assign is also reported); with f32, the
//     mma.sync tf32 peak (a kernel of MMAs only): the ceiling of our f32 (3xTF32) kernels
//   - assign (fused distance + argmin) at N=4M K=1024 D=1024 bf16 and f16, N=1M K=16384
//     D=1024 bf16: ms, TFLOP/s (2NKD / t), % of the cuBLAS peak, and the cuBLAS GEMM-only time
//     of the same shape (X C^T into a bf16 matrix, in row chunks: the floor a fused kernel
//     must beat); then accumulate (f64 sums) on the labels, and assign + accumulate as a
//     multiple of assign (one Lloyd iteration, without the tiny centroid update)
//   - accumulate at the assign's shapes against reading X once (the HBM read kernel's rate),
//     unchecked (as the engine runs it) and with the label check
//   - top-k at Q=1024 and Q=16 for N=10M D=128 and N=2M D=1024, k=10 and 100, bf16 (and f32):
//     ms against the cuBLAS GEMM-only time of the same shape and against the HBM read floor
//     (database bytes / measured copy bandwidth); f32 (ours: 3xTF32) also against our exact
//     FFMA kernel and cuBLAS's one-pass TF32 GEMM-only time
//   - the ratios to cuBLAS again "in turns" (times_interleaved: the peak's GEMM, the assign and
//     its GEMM-only one after the other each round; Q=1024's GEMM-only and top-k at k = 10 and
//     100 likewise), so that both sides run under the same power state: timed one after the
//     other, the peer measured first meets a card fresh from idle
//   - k-means++ seeding of a level's batch of node problems (grouped distances per round, and
//     the whole seed_grouped), with the tensor-core distances and the FFMA ones, and through
//     the pools' Gram matrices (pool_gram, then rounds reading Gram rows)
//     (MEGATAX_CUDA_ROW_DIST=ffma): ms per round against the pool read floor
// A table at the end repeats every number.
//
//   bench_cuda [--reps R] [--no-f32] [--only assign|accumulate|topk|seeding|lloyd] [--topk-q Q]
//              [--no-portable]
// (--topk-q Q: the top-k's shapes for Q queries only, any Q (by default Q=1024 and Q=16);
// --no-portable: without the portable kernel's top-k times, for quick sweeps of a variant.)
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.h"
#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace mc = megatax::cuda;
using megatax::DType;
using megatax::MatrixView;

namespace {

#define CUBLAS_CHECK(call)                                                              \
  do {                                                                                  \
    const cublasStatus_t st_ = (call);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      throw megatax::Error(megatax::ErrorCode::kInternal,                               \
                           std::string("cuBLAS error in " #call ": ") +                 \
                               cublasGetStatusString(st_));                             \
    }                                                                                   \
  } while (0)

int g_reps = 5;

// Median time in ms of f() queued on `stream` (after one warm-up call).
double time_ms(cudaStream_t stream, const std::function<void()>& f, int reps = -1) {
  if (reps < 0) reps = g_reps;
  cudaEvent_t a, b;
  MEGATAX_CUDA_CHECK(cudaEventCreate(&a));
  MEGATAX_CUDA_CHECK(cudaEventCreate(&b));
  f();
  MEGATAX_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    MEGATAX_CUDA_CHECK(cudaEventRecord(a, stream));
    f();
    MEGATAX_CUDA_CHECK(cudaEventRecord(b, stream));
    MEGATAX_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MEGATAX_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  MEGATAX_CUDA_CHECK(cudaEventDestroy(a));
  MEGATAX_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median times in ms of each of fs, measured in turns (one round of warm-up first; round r
// starts with f_(r mod n), then the next ones in order: each function takes each place in the
// round equally often). Timed one after the other, the first functions run on a card that
// has been idle and the later ones after tens of milliseconds of load, when the clock has
// come down under the 700 W cap (an H200's D=1024 top-k: 6.5 ms for its first ~20 ms, 7.2-7.5
// ms after; bench/RESULTS.md, session 40); in turns each sees the same mix of states.
std::vector<double> times_interleaved(cudaStream_t stream, const std::vector<std::function<void()>>& fs,
                                      int reps = -1) {
  if (reps < 0) reps = g_reps;
  cudaEvent_t a, b;
  MEGATAX_CUDA_CHECK(cudaEventCreate(&a));
  MEGATAX_CUDA_CHECK(cudaEventCreate(&b));
  for (const auto& f : fs) f();
  MEGATAX_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<std::vector<double>> t(fs.size());
  for (int r = 0; r < reps; ++r) {
    for (std::size_t j = 0; j < fs.size(); ++j) {
      const std::size_t i = (static_cast<std::size_t>(r) + j) % fs.size();
      MEGATAX_CUDA_CHECK(cudaEventRecord(a, stream));
      fs[i]();
      MEGATAX_CUDA_CHECK(cudaEventRecord(b, stream));
      MEGATAX_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      MEGATAX_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t[i].push_back(ms);
    }
  }
  MEGATAX_CUDA_CHECK(cudaEventDestroy(a));
  MEGATAX_CUDA_CHECK(cudaEventDestroy(b));
  std::vector<double> medians;
  for (auto& ti : t) {
    std::sort(ti.begin(), ti.end());
    medians.push_back(ti[ti.size() / 2]);
  }
  return medians;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_16BF;
  }
}

// S[rows, cols] = A[rows, d] * B[cols, d]^T (row-major), S in the input dtype, f32
// accumulation (pure f32 for f32 inputs: CUBLAS_COMPUTE_32F, no tf32; fast_tf32: f32 inputs
// rounded to tf32 once, CUBLAS_COMPUTE_32F_FAST_TF32, a less accurate product than ours).
void gemm_abt(cublasHandle_t h, DType t, const void* a, std::int64_t rows, const void* b,
              std::int64_t cols, std::int64_t d, void* s, bool fast_tf32 = false) {
  const float alpha = 1.f, beta = 0.f;
  // Column-major view: S^T[cols, rows] = B[cols, d] (as d x cols, transposed) * A^T.
  CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(cols),
                            static_cast<int>(rows), static_cast<int>(d), &alpha, b, cuda_type(t),
                            static_cast<int>(d), a, cuda_type(t), static_cast<int>(d), &beta, s,
                            cuda_type(t), static_cast<int>(cols),
                            fast_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

struct Row {
  std::string what;
  std::string cols;
};
std::vector<Row> g_rows;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

std::string human(std::int64_t v) {
  if (v % (1 << 20) == 0) return std::to_string(v >> 20) + "M";
  if (v >= 1000000 && v % 1000000 == 0) return std::to_string(v / 1000000) + "M";
  if (v % 1024 == 0 && v >= 1024) return std::to_string(v >> 10) + "K";
  return std::to_string(v);
}

}  // namespace

int main(int argc, char** argv) {
  bool f32 = true, portable_topk = true;
  std::int64_t topk_q = 0;  // 0: both
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      g_reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--no-f32")) {
      f32 = false;
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!std::strcmp(argv[i], "--topk-q") && i + 1 < argc) {
      topk_q = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--no-portable")) {
      portable_topk = false;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--reps R] [--no-f32] [--only assign|accumulate|topk|seeding|lloyd] "
                   "[--topk-q Q] [--no-portable]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    mc::Resources res(0);
    auto stream = static_cast<cudaStream_t>(res.stream());
    std::size_t free_b = 0, total_b = 0;
    MEGATAX_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    std::printf("bench_cuda: %s, %d SMs, %.1f GiB (%.1f free), median of %d\n",
                res.device_name().c_str(), res.sm_count(), total_b / 1073741824.0,
                free_b / 1073741824.0, g_reps);
    cublasHandle_t cublas;
    CUBLAS_CHECK(cublasCreate(&cublas));
    CUBLAS_CHECK(cublasSetStream(cublas, stream));

    // One big buffer for X / the database (8 GiB), one for GEMM outputs (2 GiB).
    const std::size_t big_bytes = std::size_t{8} << 30;
    mc::DeviceBuffer big(big_bytes), out(std::size_t{2} << 30);
    mc::DeviceBuffer sink(64);

    // ---- memory bandwidth --------------------------------------------------------------
    const std::size_t copy_bytes = std::size_t{2} << 30;
    megatax::bench::fill_uniform(big.data(), big_bytes / 4, DType::kF32, 1, stream);
    const double copy_ms = time_ms(stream, [&] {
      MEGATAX_CUDA_CHECK(cudaMemcpyAsync(out.data(), big.data(), copy_bytes,
                                         cudaMemcpyDeviceToDevice, stream));
    });
    const double copy_bw = 2.0 * copy_bytes / (copy_ms * 1e-3);  // bytes/s, read + write
    const double read_ms = time_ms(stream, [&] {
      megatax::bench::read_all(big.data(), big_bytes, sink.as<unsigned>(), res.sm_count(),
                               stream);
    });
    const double read_bw = big_bytes / (read_ms * 1e-3);
    std::printf("HBM: device-to-device copy %.0f GB/s (2 x bytes / t), read kernel %.0f GB/s\n",
                copy_bw / 1e9, read_bw / 1e9);
    g_rows.push_back({"HBM copy bandwidth (d2d memcpy, 2B/t)", fmt("%.0f GB/s", copy_bw / 1e9)});
    g_rows.push_back({"HBM read bandwidth (read kernel)", fmt("%.0f GB/s", read_bw / 1e9)});

    // ---- cuBLAS peak -------------------------------------------------------------------
    const std::int64_t g = 8192;
    mc::DeviceBuffer ga(g * g * 2), gb(g * g * 2), gc(g * g * 2);
    // ms of the 8192^3 GEMM in a 16-bit dtype, on uniform data of that dtype.
    auto gemm_8192 = [&](DType t) {
      megatax::bench::fill_uniform(ga.data(), g * g, t, 2, stream);
      megatax::bench::fill_uniform(gb.data(), g * g, t, 3, stream);
      return time_ms(stream, [&] { gemm_abt(cublas, t, ga.data(), g, gb.data(), g, g, gc.data()); },
                     std::max(g_reps, 10));
    };
    const double gemm_ms = gemm_8192(DType::kBF16);
    const double peak = 2.0 * g * g * g / (gemm_ms * 1e-3) / 1e12;
    std::printf("cuBLAS bf16 GEMM 8192^3: %.3f ms, %.0f TFLOP/s (the peak below)\n", gemm_ms, peak);
    g_rows.push_back({"cuBLAS bf16 GEMM 8192^3 (peak)", fmt("%.3f ms  %.0f TFLOP/s", gemm_ms, peak)});
    // The same GEMM ten times back to back (~13 ms on an H200, the assign's duration): the rate
    // the card sustains at its power cap, where one 1.3 ms GEMM between pauses runs above it
    // (the assign's SM clock under ncu was 1.66 GHz on an H200: bench/RESULTS.md, session 36).
    constexpr int kSustained = 10;
    auto gemms = [&] {
      for (int i = 0; i < kSustained; ++i) {
        gemm_abt(cublas, DType::kBF16, ga.data(), g, gb.data(), g, g, gc.data());
      }
    };
    const double sustained_ms = time_ms(stream, gemms, std::max(g_reps, 5)) / kSustained;
    const double sustained = 2.0 * g * g * g / (sustained_ms * 1e-3) / 1e12;
    std::printf("cuBLAS bf16 GEMM 8192^3, %d back to back: %.3f ms each, %.0f TFLOP/s (%.1f%% of "
                "the peak: the sustained rate)\n",
                kSustained, sustained_ms, sustained, 100 * sustained / peak);
    g_rows.push_back({"cuBLAS bf16 GEMM 8192^3 x10 back to back (sustained)",
                      fmt("%.3f ms  %.0f TFLOP/s = %.1f%% of peak", sustained_ms, sustained,
                          100 * sustained / peak)});
    // The same in f16, for the f16 rows: the card's f16 rate, beside the bf16 peak the
    // targets use.
    const double gemm16_ms = gemm_8192(DType::kF16);
    const double peak16 = 2.0 * g * g * g / (gemm16_ms * 1e-3) / 1e12;
    std::printf("cuBLAS f16 GEMM 8192^3: %.3f ms, %.0f TFLOP/s (%.1f%% of the bf16 peak)\n", gemm16_ms, peak16,
                100 * peak16 / peak);
    g_rows.push_back({"cuBLAS f16 GEMM 8192^3", fmt("%.3f ms  %.0f TFLOP/s = %.1f%% of bf16 peak", gemm16_ms,
                                                    peak16, 100 * peak16 / peak)});
    // The ceiling of our f32 (3xTF32) kernels: mma.sync tf32 with nothing else to do.
    double tf32_peak = 0;
    if (f32) {
      double tf32_flops = 0;
      const double tf32_ms = time_ms(stream, [&] {
        tf32_flops = megatax::bench::queue_mma_tf32_peak(res.sm_count(), stream);
      });
      tf32_peak = tf32_flops / (tf32_ms * 1e-3) / 1e12;
      std::printf("mma.sync tf32 peak (independent MMAs only): %.0f TFLOP/s\n", tf32_peak);
      g_rows.push_back({"mma.sync tf32 peak (MMAs only)", fmt("%.0f TFLOP/s", tf32_peak)});
    }
    // An f32 row's 3xTF32 MMAs (3 x 2 m n d flops) as a share of that ceiling.
    auto tf32_share = [&](double flops, double ms) {
      return tf32_peak > 0 ? fmt(" | 3xTF32 at %.0f%% of the mma.sync tf32 peak",
                                 100 * 3 * flops / (ms * 1e-3) / 1e12 / tf32_peak)
                           : std::string();
    };

    // ---- assign ------------------------------------------------------------------------
    struct AssignShape {
      std::int64_t n, k, d;
      DType t;
    };
    std::vector<AssignShape> assign_shapes = {{std::int64_t{4} << 20, 1024, 1024, DType::kBF16},
                                              {std::int64_t{4} << 20, 1024, 1024, DType::kF16},
                                              {std::int64_t{1} << 20, 16384, 1024, DType::kBF16}};
    if (f32) assign_shapes.push_back({std::int64_t{1} << 20, 1024, 1024, DType::kF32});
    // One assign shape's data on the device: X in `big` and the centroids (uniform, seeded by
    // k), the label, distance, sum and count buffers, and the assign's and the accumulate's
    // arguments over them (the accumulate as the engine's Lloyd runs it: the assign's labels,
    // unchecked).
    struct AssignProblem {
      mc::DeviceBuffer cen, labels, dist, sums, counts;
      mc::AssignArgs assign;
      mc::AccumulateArgs accumulate;
    };
    auto make_assign_problem = [&](const AssignShape& s) {
      const std::size_t es = megatax::dtype_size(s.t);
      AssignProblem p{mc::DeviceBuffer(s.k * s.d * es), mc::DeviceBuffer(s.n * 8), mc::DeviceBuffer(s.n * 4),
                      mc::DeviceBuffer(s.k * s.d * 8), mc::DeviceBuffer(s.k * 8), {}, {}};
      megatax::bench::fill_uniform(big.data(), s.n * s.d, s.t, 10 + s.k, stream);
      megatax::bench::fill_uniform(p.cen.data(), s.k * s.d, s.t, 20 + s.k, stream);
      const MatrixView xv(big.data(), s.n, s.d, s.t);
      p.assign.x = xv;
      p.assign.centroids = MatrixView(p.cen.data(), s.k, s.d, s.t);
      p.assign.labels = p.labels.data();
      p.assign.distances = p.dist.as<float>();
      p.accumulate.x = xv;
      p.accumulate.labels = p.labels.data();
      p.accumulate.k = s.k;
      p.accumulate.sums = p.sums.data();
      p.accumulate.counts = p.counts.as<std::int64_t>();
      p.accumulate.check_labels = false;
      return p;
    };
    // The peak's GEMM again, on its bf16 operands (the f16 rate's run left f16 ones), for the
    // measurements in turns below.
    megatax::bench::fill_uniform(ga.data(), g * g, DType::kBF16, 2, stream);
    megatax::bench::fill_uniform(gb.data(), g * g, DType::kBF16, 3, stream);
    auto peak_gemm = [&] { gemm_abt(cublas, DType::kBF16, ga.data(), g, gb.data(), g, g, gc.data()); };
    if (only.empty() || only == "assign") {
      std::printf("\nassign: ours (fused) vs cuBLAS GEMM-only of the same shape\n");
      for (const auto& s : assign_shapes) {
        const std::size_t es = megatax::dtype_size(s.t);
        AssignProblem prob = make_assign_problem(s);
        const mc::AssignArgs& a = prob.assign;
        const double ours = time_ms(stream, [&] { mc::assign(res, a); });
        // The portable mma.sync kernel on the same data (on Hopper, ours is the sm_90a one);
        // f32: the exact FFMA kernel (ours multiplies as 3xTF32).
        setenv("MEGATAX_CUDA_ASSIGN", "mma", 1);
        setenv("MEGATAX_CUDA_F32", "ffma", 1);
        const double portable = time_ms(stream, [&] { mc::assign(res, a); });
        unsetenv("MEGATAX_CUDA_ASSIGN");
        unsetenv("MEGATAX_CUDA_F32");
        // GEMM-only: X C^T into a bf16 matrix, in chunks of rows that fit the output buffer.
        const std::int64_t chunk = std::min<std::int64_t>(s.n, (std::int64_t{2} << 30) / (s.k * es));
        auto gemm_only = [&] {
          for (std::int64_t r = 0; r < s.n; r += chunk) {
            gemm_abt(cublas, s.t, static_cast<const char*>(big.data()) + r * s.d * es,
                     std::min(chunk, s.n - r), prob.cen.data(), s.k, s.d, out.data());
          }
        };
        const double floor = time_ms(stream, gemm_only);
        const double flops = 2.0 * s.n * s.k * s.d;
        const double tf = flops / (ours * 1e-3) / 1e12;
        // In turns with the peak's 8192^3 GEMM and the GEMM-only of the shape: the three under
        // the same power state (times_interleaved).
        const auto turns = times_interleaved(stream, {peak_gemm, [&] { mc::assign(res, a); }, gemm_only});
        const double peak_turns = 2.0 * g * g * g / (turns[0] * 1e-3) / 1e12;
        const double tf_turns = flops / (turns[1] * 1e-3) / 1e12;
        // One Lloyd iteration minus the update: assign + accumulate (f64 sums) on its labels.
        const double acc_ms = time_ms(stream, [&] { mc::accumulate(res, prob.accumulate); });
        const std::string shape = fmt("%s N=%s K=%s D=%lld", megatax::dtype_name(s.t),
                                      human(s.n).c_str(), human(s.k).c_str(), (long long)s.d);
        std::printf("  %-32s ours %8.3f ms %5.0f TFLOP/s = %5.1f%% of peak (%5.1f%% of "
                    "sustained) | GEMM-only %8.3f ms (ours %.2fx) | accumulate %.3f ms, "
                    "assign+accumulate = %.2fx assign\n",
                    shape.c_str(), ours, tf, 100 * tf / peak, 100 * tf / sustained, floor,
                    ours / floor, acc_ms, (ours + acc_ms) / ours);
        std::string f16_rate =
            s.t == DType::kF16 ? fmt(" (%.1f%% of cuBLAS's f16 rate)", 100 * tf / peak16) : std::string();
        if (s.t == DType::kF32) f16_rate = tf32_share(flops, ours);
        if (!f16_rate.empty()) std::printf("  %-32s%s\n", "", f16_rate.c_str());
        std::printf("  %-32s in turns: ours %8.3f ms = %5.1f%% of the 8192^3 GEMM's %4.0f TFLOP/s "
                    "(%.3f ms) | GEMM-only %8.3f ms (ours %.2fx)\n",
                    "", turns[1], 100 * tf_turns / peak_turns, peak_turns, turns[0], turns[2],
                    turns[1] / turns[2]);
        const double tf_portable = flops / (portable * 1e-3) / 1e12;
        const char* portable_name = s.t == DType::kF32 ? "FFMA kernel" : "portable kernel";
        std::printf("  %-32s %s %8.3f ms %5.0f TFLOP/s = %5.1f%% of peak\n", "", portable_name,
                    portable, tf_portable, 100 * tf_portable / peak);
        g_rows.push_back({"assign " + shape,
                          fmt("%8.3f ms %5.0f TFLOP/s %5.1f%% peak (%.1f%% sustained)%s | "
                              "GEMM-only %8.3f ms, ours/GEMM %.2fx | +accumulate %.2fx | %s %8.3f ms",
                              ours, tf, 100 * tf / peak, 100 * tf / sustained, f16_rate.c_str(),
                              floor, ours / floor,
                              (ours + acc_ms) / ours, portable_name, portable)});
        g_rows.push_back({"  in turns with the 8192^3 GEMM",
                          fmt("%8.3f ms %5.1f%% of the GEMM's %4.0f TFLOP/s | GEMM-only %8.3f ms, "
                              "ours/GEMM %.2fx",
                              turns[1], 100 * tf_turns / peak_turns, peak_turns, turns[2],
                              turns[1] / turns[2])});
      }
    }

    // ---- accumulate: the Lloyd update's sums against reading X once --------------------
    if (only.empty() || only == "accumulate") {
      std::printf("\naccumulate (f64 sums) on the assign's labels vs reading X once\n");
      for (const auto& s : assign_shapes) {
        if (s.t == DType::kF32) continue;
        const std::size_t es = megatax::dtype_size(s.t);
        AssignProblem prob = make_assign_problem(s);
        const double assign_ms = time_ms(stream, [&] { mc::assign(res, prob.assign); });
        mc::AccumulateArgs& acc = prob.accumulate;
        const double x_bytes = static_cast<double>(s.n) * s.d * es;
        const double floor_ms = x_bytes / read_bw * 1e3;
        const std::string shape = fmt("%s N=%s K=%s D=%lld", megatax::dtype_name(s.t),
                                      human(s.n).c_str(), human(s.k).c_str(), (long long)s.d);
        // As the engine runs it (the assign's labels, unchecked), and with the label check.
        for (const bool check : {false, true}) {
          acc.check_labels = check;
          const double acc_ms = time_ms(stream, [&] { mc::accumulate(res, acc); });
          std::printf("  %-28s %-9s accumulate %7.3f ms = %5.0f GB/s (%.1f%% of the read kernel; "
                      "floor %.3f ms) | assign %.3f ms, assign+accumulate = %.3fx assign\n",
                      shape.c_str(), check ? "checked" : "unchecked", acc_ms,
                      x_bytes / (acc_ms * 1e-3) / 1e9, 100 * floor_ms / acc_ms, floor_ms,
                      assign_ms, (assign_ms + acc_ms) / assign_ms);
          g_rows.push_back({"accumulate " + shape + (check ? ", labels checked" : ""),
                            fmt("%7.3f ms, %.1f%% of the HBM read rate; +assign %.3fx", acc_ms,
                                100 * floor_ms / acc_ms, (assign_ms + acc_ms) / assign_ms)});
        }
      }
    }

    // ---- top-k -------------------------------------------------------------------------
    if (only.empty() || only == "topk") {
      std::printf("\ntop-k: ours (fused) vs cuBLAS GEMM-only and the HBM read floor\n");
      struct TopkShape {
        std::int64_t n, d;
        DType t;
      };
      std::vector<TopkShape> dbs = {{10000000, 128, DType::kBF16}, {2000000, 1024, DType::kBF16}};
      if (f32) {
        dbs.push_back({10000000, 128, DType::kF32});
        dbs.push_back({2000000, 1024, DType::kF32});
      }
      for (const auto& s : dbs) {
        const std::size_t es = megatax::dtype_size(s.t);
        megatax::bench::fill_uniform(big.data(), s.n * s.d, s.t, 30 + s.d, stream);
        const MatrixView dbv(big.data(), s.n, s.d, s.t);
        mc::DeviceBuffer dbn(s.n * 4);
        mc::row_norms(res, dbv, dbn.as<float>());  // an index keeps these
        const double read_floor = static_cast<double>(s.n) * s.d * es / copy_bw * 1e3;
        const std::vector<std::int64_t> query_counts =
            topk_q != 0 ? std::vector<std::int64_t>{topk_q} : std::vector<std::int64_t>{1024, 16};
        for (std::int64_t q : query_counts) {
          mc::DeviceBuffer qb(q * s.d * es);
          megatax::bench::fill_uniform(qb.data(), q * s.d, s.t, 40 + q, stream);
          const MatrixView qv(qb.data(), q, s.d, s.t);
          const std::int64_t chunk = std::min<std::int64_t>(s.n, (std::int64_t{2} << 30) / (q * es));
          auto gemm_only = [&] {
            for (std::int64_t r = 0; r < s.n; r += chunk) {
              gemm_abt(cublas, s.t, qb.data(), q,
                       static_cast<const char*>(big.data()) + r * s.d * es,
                       std::min(chunk, s.n - r), s.d, out.data());
            }
          };
          const double floor = time_ms(stream, gemm_only);
          // f32: cuBLAS's one-pass TF32 GEMM too (context: faster and less accurate than
          // our 3xTF32 product; the target's peer is the exact SGEMM above).
          std::string tf32_gemm;
          if (s.t == DType::kF32 && q > 16) {
            tf32_gemm = fmt(" | cuBLAS TF32 GEMM-only %8.3f ms", time_ms(stream, [&] {
                              for (std::int64_t r = 0; r < s.n; r += chunk) {
                                gemm_abt(cublas, s.t, qb.data(), q,
                                         static_cast<const char*>(big.data()) + r * s.d * es,
                                         std::min(chunk, s.n - r), s.d, out.data(), true);
                              }
                            }));
          }
          for (std::int64_t k : {10, 100}) {
            mc::DeviceBuffer dist(q * k * 4), ids(q * k * 8);
            mc::TopkArgs a;
            a.queries = qv;
            a.database = dbv;
            a.database_norms = dbn.as<float>();
            a.k = k;
            a.distances = dist.as<float>();
            a.ids = ids.as<std::int64_t>();
            const double ours = time_ms(stream, [&] { mc::topk(res, a); });
            // The portable kernel in the same run, where Hopper's took the shape (f32 with
            // more than 16 queries: the exact FFMA kernel; ours multiplies as 3xTF32).
            std::string portable;
            if (portable_topk) {
              setenv("MEGATAX_CUDA_TOPK", "mma", 1);
              setenv("MEGATAX_CUDA_F32", "ffma", 1);
              portable = fmt(" | %s %8.3f ms",
                             s.t == DType::kF32 && q > 16 ? "FFMA kernel" : "portable kernel",
                             time_ms(stream, [&] { mc::topk(res, a); }));
              unsetenv("MEGATAX_CUDA_TOPK");
              unsetenv("MEGATAX_CUDA_F32");
            }
            portable += tf32_gemm;
            if (s.t == DType::kF32 && q > 16) portable += tf32_share(2.0 * q * s.n * s.d, ours);
            const std::string shape =
                fmt("%s Q=%lld N=%s D=%lld k=%lld", megatax::dtype_name(s.t), (long long)q,
                    human(s.n).c_str(), (long long)s.d, (long long)k);
            std::printf("  %-36s ours %8.3f ms | GEMM-only %8.3f ms (ours %.2fx) | HBM read floor "
                        "%.3f ms (ours at %.0f%% of copy bandwidth)%s\n",
                        shape.c_str(), ours, floor, ours / floor, read_floor,
                        100 * read_floor / ours, portable.c_str());
            g_rows.push_back({"topk " + shape,
                              fmt("%8.3f ms | GEMM-only %8.3f ms, ours/GEMM %.2fx | read floor "
                                  "%.3f ms, %3.0f%% of BW%s",
                                  ours, floor, ours / floor, read_floor,
                                  100 * read_floor / ours, portable.c_str())});
          }
          // The GEMM-bound shapes again, GEMM-only and ours at k = 10 and 100 in turns
          // (times_interleaved): the ratios under the same power state.
          if (q > 16) {
            constexpr std::int64_t kTurnK[2] = {10, 100};
            mc::DeviceBuffer dist[2], ids[2];
            mc::TopkArgs args[2];
            for (int i = 0; i < 2; ++i) {
              dist[i] = mc::DeviceBuffer(q * kTurnK[i] * 4);
              ids[i] = mc::DeviceBuffer(q * kTurnK[i] * 8);
              args[i].queries = qv;
              args[i].database = dbv;
              args[i].database_norms = dbn.as<float>();
              args[i].k = kTurnK[i];
              args[i].distances = dist[i].as<float>();
              args[i].ids = ids[i].as<std::int64_t>();
            }
            const auto turns = times_interleaved(
                stream, {gemm_only, [&] { mc::topk(res, args[0]); }, [&] { mc::topk(res, args[1]); }});
            const std::string shape = fmt("%s Q=%lld N=%s D=%lld", megatax::dtype_name(s.t), (long long)q,
                                          human(s.n).c_str(), (long long)s.d);
            std::printf("  %-36s in turns: GEMM-only %8.3f ms | k=10 %8.3f ms (%.2fx) | k=100 %8.3f ms "
                        "(%.2fx)\n",
                        shape.c_str(), turns[0], turns[1], turns[1] / turns[0], turns[2],
                        turns[2] / turns[0]);
            g_rows.push_back({"topk " + shape + " in turns",
                              fmt("GEMM-only %8.3f ms | k=10 %8.3f ms %.2fx | k=100 %8.3f ms %.2fx", turns[0],
                                  turns[1], turns[1] / turns[0], turns[2], turns[2] / turns[0])});
          }
        }
      }
    }
    // ---- k-means++ seeding of many node problems ----------------------------------------
    // The shapes of a taxonomy level's batch: G problems of m pool points, D=1024 f16, k=100,
    // 8 candidates per centroid. Per round: one grouped distance launch (reads the pools
    // once: the floor is pool bytes / HBM read bandwidth) and one choose-and-draw launch.
    if (only.empty() || only == "seeding") {
      std::printf("\nk-means++ seeding (grouped): per round vs the pool read floor\n");
      struct SeedShape {
        std::int64_t groups, m;
      };
      const std::int64_t d = 1024, k = 100, trials = 8;
      for (const SeedShape sh : {SeedShape{186, 2048}, SeedShape{2450, 200}, SeedShape{100, 2048}}) {
        const std::int64_t n_b = sh.groups * sh.m;
        megatax::bench::fill_uniform(big.data(), static_cast<std::size_t>(n_b * d), DType::kF16, 77, stream);
        std::vector<std::int64_t> b(static_cast<std::size_t>(n_b)), b_begin, a(static_cast<std::size_t>(sh.groups) * 16),
            out_begin;
        for (std::int64_t i = 0; i < n_b; ++i) b[i] = i;
        std::vector<std::int32_t> n_a(static_cast<std::size_t>(sh.groups), static_cast<std::int32_t>(trials));
        std::vector<mc::SeedingProblem> probs(static_cast<std::size_t>(sh.groups));
        std::vector<double> uni(static_cast<std::size_t>(sh.groups * (k - 1) * trials));
        for (std::size_t u = 0; u < uni.size(); ++u) uni[u] = static_cast<double>((u * 2654435761u) % 1000003) / 1000003.0;
        for (std::int64_t g = 0; g <= sh.groups; ++g) b_begin.push_back(g * sh.m);
        for (std::int64_t g = 0; g < sh.groups; ++g) {
          out_begin.push_back(g * sh.m * trials);
          for (std::int64_t t = 0; t < trials; ++t) a[g * 16 + t] = g * sh.m + (t * 37) % sh.m;
          probs[g].k = k;
          probs[g].first = g % sh.m;
          probs[g].uniform_begin = g * (k - 1) * trials;
          probs[g].trials = static_cast<std::int32_t>(trials);
        }
        mc::DeviceBuffer db(b.size() * 8), dbb(b_begin.size() * 8), da(a.size() * 8), dna(n_a.size() * 4),
            dob(out_begin.size() * 8), dout(static_cast<std::size_t>(n_b * trials) * 4),
            dprob(probs.size() * sizeof(mc::SeedingProblem)), duni(uni.size() * 8),
            dchosen(static_cast<std::size_t>(sh.groups * k) * 8);
        mc::copy_to_device(res, db.data(), b.data(), b.size() * 8);
        mc::copy_to_device(res, dbb.data(), b_begin.data(), b_begin.size() * 8);
        mc::copy_to_device(res, da.data(), a.data(), a.size() * 8);
        mc::copy_to_device(res, dna.data(), n_a.data(), n_a.size() * 4);
        mc::copy_to_device(res, dob.data(), out_begin.data(), out_begin.size() * 8);
        mc::copy_to_device(res, dprob.data(), probs.data(), probs.size() * sizeof(mc::SeedingProblem));
        mc::copy_to_device(res, duni.data(), uni.data(), uni.size() * 8);
        res.synchronize();
        const MatrixView xv(big.data(), n_b, d, DType::kF16);
        mc::GroupedRowDistanceArgs r;
        r.x = xv;
        r.groups = sh.groups;
        r.b = db.as<std::int64_t>();
        r.b_begin = dbb.as<std::int64_t>();
        r.n_b = n_b;
        r.a = da.as<std::int64_t>();
        r.n_a = dna.as<std::int32_t>();
        r.out_begin = dob.as<std::int64_t>();
        r.out = dout.as<float>();
        r.max_n_a = trials;
        mc::GroupedSeedingArgs sa;
        sa.x = xv;
        sa.groups = sh.groups;
        sa.b = r.b;
        sa.b_begin = r.b_begin;
        sa.n_b = n_b;
        sa.problems = dprob.as<mc::SeedingProblem>();
        sa.uniforms = duni.as<double>();
        sa.max_k = k;
        sa.max_trials = static_cast<std::int32_t>(trials);
        sa.chosen = dchosen.as<std::int64_t>();
        const double floor_ms = static_cast<double>(n_b * d * 2) / read_bw * 1e3;
        const std::string shape = fmt("%lld x m=%lld D=%lld f16 k=%lld", (long long)sh.groups, (long long)sh.m,
                                      (long long)d, (long long)k);
        // The tensor-core distances (the default for 16-bit rows) and the FFMA kernel on the
        // differences (MEGATAX_CUDA_ROW_DIST=ffma), timed in this run; how far apart their
        // distances are, relative to the largest one.
        std::vector<float> dist_ref, dist_v(static_cast<std::size_t>(n_b * trials));
        for (const char* kernel : {"ffma", "mma"}) {
          setenv("MEGATAX_CUDA_ROW_DIST", kernel, 1);
          const double dist_ms = time_ms(stream, [&] { mc::row_distances_grouped(res, r); });
          mc::copy_to_host(res, dist_v.data(), dout.data(), dist_v.size() * 4);
          const double seed_ms = time_ms(stream, [&] { mc::seed_grouped(res, sa); }, std::min(g_reps, 3));
          unsetenv("MEGATAX_CUDA_ROW_DIST");
          std::string apart;
          if (dist_ref.empty()) {
            dist_ref = dist_v;
          } else {
            double top = 0, diff = 0;
            for (std::size_t i = 0; i < dist_v.size(); ++i) {
              top = std::max(top, double(std::fabs(dist_ref[i])));
              diff = std::max(diff, double(std::fabs(dist_v[i] - dist_ref[i])));
            }
            apart = fmt(", %.1e of the largest from ffma's", diff / std::max(top, 1e-30));
          }
          std::printf("  %-32s %-4s distances %7.3f ms (%3.0f%% of read BW) | seeding %8.2f ms = %.3f "
                      "ms/round (floor %.3f)%s\n",
                      shape.c_str(), kernel, dist_ms, 100 * floor_ms / dist_ms, seed_ms, seed_ms / k, floor_ms,
                      apart.c_str());
          g_rows.push_back({fmt("seeding %s %s", shape.c_str(), kernel),
                            fmt("%.3f ms/round, distances %.3f ms = %.0f%% of read BW, floor %.3f ms%s", seed_ms / k,
                                dist_ms, 100 * floor_ms / dist_ms, floor_ms, apart.c_str())});
        }
        // The Gram path (the default where it fits): the pools' Gram matrices once (m^2 d
        // flops a problem on mma.sync, the symmetric half; the rate shown counts 2 m^2 d, the
        // whole product, against cuBLAS's f16 rate), then every round in one launch reading a
        // few Gram rows; the same choices as the pools path (checked here).
        if (mc::pool_gram_supported(res, xv)) {
          std::vector<std::int64_t> gram_begin(static_cast<std::size_t>(sh.groups));
          for (std::int64_t g = 0; g < sh.groups; ++g) gram_begin[g] = g * sh.m * sh.m;
          const std::size_t gram_bytes = static_cast<std::size_t>(sh.groups * sh.m * sh.m) * 4;
          mc::DeviceBuffer dgram(gram_bytes), dgb(gram_begin.size() * 8), dnorms(static_cast<std::size_t>(n_b) * 4);
          mc::copy_to_device(res, dgb.data(), gram_begin.data(), gram_begin.size() * 8);
          mc::PoolGramArgs pg;
          pg.x = xv;
          pg.groups = sh.groups;
          pg.b = r.b;
          pg.b_begin = r.b_begin;
          pg.max_m = sh.m;
          pg.gram_begin = dgb.as<std::int64_t>();
          pg.gram = dgram.as<float>();
          pg.norms = dnorms.as<float>();
          const double gram_ms = time_ms(stream, [&] { mc::pool_gram(res, pg); });
          std::vector<std::int64_t> pools_chosen(static_cast<std::size_t>(sh.groups * k)), gram_chosen(pools_chosen.size());
          mc::seed_grouped(res, sa);
          mc::copy_to_host(res, pools_chosen.data(), dchosen.data(), pools_chosen.size() * 8);
          mc::GroupedSeedingArgs sg = sa;
          sg.b_begin_host = b_begin.data();
          sg.scratch = dgram.data();
          sg.scratch_bytes = gram_bytes;
          const double seed_ms = time_ms(stream, [&] { mc::seed_grouped(res, sg); }, std::min(g_reps, 3));
          mc::copy_to_host(res, gram_chosen.data(), dchosen.data(), gram_chosen.size() * 8);
          const bool same = pools_chosen == gram_chosen;
          const double tf = 2.0 * static_cast<double>(sh.groups) * sh.m * sh.m * d / (gram_ms * 1e-3) / 1e12;
          const double rounds_ms = seed_ms - gram_ms;
          std::printf("  %-32s gram: matrices %7.3f ms (%4.0f TFLOP/s eff. = %4.1f%% of cuBLAS f16) | seeding %8.2f ms, "
                      "rounds %.3f ms/round | choices %s\n",
                      shape.c_str(), gram_ms, tf, 100 * tf / peak16, seed_ms, rounds_ms / k,
                      same ? "identical" : "DIFFER");
          g_rows.push_back({fmt("seeding %s gram", shape.c_str()),
                            fmt("%.2f ms: matrices %.3f ms (%.0f TFLOP/s, %.1f%% of f16 GEMM) + %.3f ms/round; "
                                "choices %s",
                                seed_ms, gram_ms, tf, 100 * tf / peak16, rounds_ms / k,
                                same ? "identical" : "DIFFER")});
        }
      }
    }
    // ---- a batch's Lloyd iteration (CudaBatchKMeans' steps on one level-3 batch) ----------
    if (only.empty() || only == "lloyd") {
      std::printf("\nLloyd iteration of a batch of node problems (grouped assign, then the update)\n");
      const std::int64_t groups = 186, m = 2750, k = 100, d = 1024;
      const std::int64_t n = groups * m, total_k = groups * k;
      megatax::bench::fill_uniform(big.data(), static_cast<std::size_t>(n * d), DType::kF16, 91, stream);
      mc::DeviceBuffer cen(static_cast<std::size_t>(total_k * d) * 2), cen32(static_cast<std::size_t>(total_k * d) * 4),
          labels(static_cast<std::size_t>(n) * 4), dist(static_cast<std::size_t>(n) * 4),
          global(static_cast<std::size_t>(n) * 4), sums(static_cast<std::size_t>(total_k * d) * 8),
          counts(static_cast<std::size_t>(total_k) * 8);
      // Centroids: the first k rows of each problem (as k-means++ would pick rows).
      std::vector<std::int64_t> row_begin, cb, ce, seed_rows;
      for (std::int64_t g = 0; g <= groups; ++g) row_begin.push_back(g * m);
      for (std::int64_t g = 0; g < groups; ++g) {
        cb.push_back(g * k);
        ce.push_back((g + 1) * k);
        for (std::int64_t c = 0; c < k; ++c) seed_rows.push_back(g * m + c);
      }
      mc::DeviceBuffer dseed(seed_rows.size() * 8);
      mc::copy_to_device(res, dseed.data(), seed_rows.data(), seed_rows.size() * 8);
      mc::gather_rows(res, big.data(), static_cast<std::size_t>(d) * 2, dseed.as<std::int64_t>(), total_k, cen.data());
      const MatrixView xv(big.data(), n, d, DType::kF16), cv(cen.data(), total_k, d, DType::kF16);
      mc::rows_to_f32(res, cv, cen32.as<float>());
      mc::GroupedAssignArgs g;
      g.x = xv;
      g.centroids = cv;
      g.row_begin = row_begin;
      g.centroid_begin = cb;
      g.centroid_end = ce;
      g.labels = labels.as<std::int32_t>();
      g.distances = dist.as<float>();
      const double assign_ms = time_ms(stream, [&] { mc::assign_grouped(res, g); });
      std::vector<std::int32_t> lab(static_cast<std::size_t>(n));
      mc::copy_to_host(res, lab.data(), labels.data(), lab.size() * 4);
      for (std::int64_t i = 0; i < n; ++i) lab[i] += static_cast<std::int32_t>((i / m) * k);
      mc::copy_to_device(res, global.data(), lab.data(), lab.size() * 4);
      const double zero_ms = time_ms(stream, [&] {
        mc::fill_zero(res, sums.data(), sums.size());
        mc::fill_zero(res, counts.data(), counts.size());
      });
      mc::AccumulateArgs acc;
      acc.x = xv;
      acc.label_type = mc::IndexType::kI32;
      acc.labels = global.data();
      acc.k = total_k;
      acc.sum_type = mc::SumType::kF64;
      acc.sums = sums.data();
      acc.counts = counts.as<std::int64_t>();
      acc.check_labels = false;  // as CudaBatchKMeans runs it
      const double acc_ms = time_ms(stream, [&] { mc::accumulate(res, acc); });
      mc::MeansArgs ma;
      ma.sums = sums.as<double>();
      ma.counts = counts.as<std::int64_t>();
      ma.k = total_k;
      ma.d = d;
      ma.centroids = cen32.as<float>();
      ma.converted = cen.data();
      ma.converted_dtype = DType::kF16;
      const double means_ms = time_ms(stream, [&] { mc::means(res, ma); });
      // The update as CudaBatchKMeans runs it: the means straight from accumulate's pass
      // (AccumulateArgs::means; no float64 sums array), from the same centroids; the bits
      // compared with the two-step path's (zeroed sums, accumulate, means) run once more.
      mc::DeviceBuffer cen32_b(cen32.size()), cen_b(cen.size());
      mc::rows_to_f32(res, cv, cen32.as<float>());
      mc::copy_device_to_device(res, cen32_b.data(), cen32.data(), cen32.size());
      mc::copy_device_to_device(res, cen_b.data(), cen.data(), cen.size());
      mc::fill_zero(res, sums.data(), sums.size());
      mc::fill_zero(res, counts.data(), counts.size());
      mc::accumulate(res, acc);
      mc::means(res, ma);
      mc::AccumulateArgs fused = acc;
      fused.sums = nullptr;
      fused.means = cen32_b.as<float>();
      fused.converted = cen_b.data();
      fused.converted_dtype = DType::kF16;
      const double fused_ms = time_ms(stream, [&] {
        mc::fill_zero(res, counts.data(), counts.size());
        mc::accumulate(res, fused);
      });
      std::vector<float> two_step(static_cast<std::size_t>(total_k * d)), one_pass(two_step.size());
      mc::copy_to_host(res, two_step.data(), cen32.data(), two_step.size() * 4);
      mc::copy_to_host(res, one_pass.data(), cen32_b.data(), one_pass.size() * 4);
      const bool same = std::memcmp(two_step.data(), one_pass.data(), two_step.size() * 4) == 0;
      const double x_ms = static_cast<double>(n * d * 2) / read_bw * 1e3;
      const double sums_ms = static_cast<double>(sums.size()) / read_bw * 1e3;
      const std::string shape = fmt("%lld x m=%lld k=%lld D=%lld f16", (long long)groups, (long long)m, (long long)k,
                                    (long long)d);
      std::printf("  %-32s assign %.3f ms | update: zero %.3f + accumulate %.3f + means %.3f ms, or means in the "
                  "accumulate's pass %.3f ms (%s) | read X once %.3f ms, the sums once %.3f ms\n",
                  shape.c_str(), assign_ms, zero_ms, acc_ms, means_ms, fused_ms, same ? "same bits" : "BITS DIFFER",
                  x_ms, sums_ms);
      g_rows.push_back({"lloyd " + shape,
                        fmt("assign %.3f, zero %.3f, accumulate %.3f, means %.3f ms; in one pass %.3f ms (%s); X read "
                            "%.3f ms",
                            assign_ms, zero_ms, acc_ms, means_ms, fused_ms, same ? "same bits" : "BITS DIFFER",
                            x_ms)});
    }
    CUBLAS_CHECK(cublasDestroy(cublas));

    std::printf("\n==== bench_cuda summary (%s) ====\n", res.device_name().c_str());
    for (const auto& r : g_rows) std::printf("%-44s %s\n", r.what.c_str(), r.cols.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
