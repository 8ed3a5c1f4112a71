#include "kernels/cpu/knn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/uninit_vector.h"
#include "kernels/cpu/block_kernel.h"
#include "kernels/cpu/topk.h"
#include "megatax/error.h"

namespace megatax::kernels {
namespace {

// Blocking of the scan (see knn.h). A block's distance buffer is kQueryBlock x
// (16 * kPanelsPerChunk) floats = 128 KiB: it stays in L2 between the kernel and the handler.
constexpr std::int64_t kQueryBlock = 128;
constexpr std::int64_t kPanelsPerChunk = 16;
// A database range handed to one thread is at least this many panels (8192 rows), so
// splitting a small database over threads does not cost more than it saves.
constexpr std::int64_t kMinPanelsPerRange = 512;

// Queries of one block, converted for the kernels: rounded to the database dtype, widened to
// float and zero-padded to dim_padded; bf16 pairs and squared norms beside them.
struct PreparedQueries {
  std::int64_t n = 0;
  std::int64_t ld = 0;
  const float* data = nullptr;        // n x ld: `values`, or the caller's rows when usable as is
  std::vector<float> values;          // n x ld
  std::vector<std::uint32_t> pairs;   // n x ld/2 (bf16 databases)
  std::vector<float> norms;           // n
};

// Squared norm in float64 with four interleaved partial sums (a fixed order, so the same bits
// every time; four chains instead of one keep the adder busy).
float squared_norm(const float* v, std::int64_t dim) {
  double acc[4] = {0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + 4 <= dim; k += 4)
    for (int t = 0; t < 4; ++t) acc[t] += static_cast<double>(v[k + t]) * v[k + t];
  for (; k < dim; ++k) acc[0] += static_cast<double>(v[k]) * v[k];
  return static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

void prepare_queries(const MatrixView& q, std::int64_t begin, std::int64_t count,
                     const PackedMatrix& db, PreparedQueries* out) {
  const std::int64_t dim = db.dim(), ld = db.dim_padded();
  out->n = count;
  out->norms.resize(static_cast<std::size_t>(count));
  const bool f16 = db.dtype() == DType::kF16, bf16 = db.dtype() == DType::kBF16;
  // f32 rows against an f32 database with an even dim are used in place: no copy of the
  // block (the kernels read dim_padded == dim columns at the caller's stride).
  if (q.dtype == DType::kF32 && db.dtype() == DType::kF32 && dim == ld) {
    out->ld = q.stride;
    out->data = static_cast<const float*>(q.row(begin));
    for (std::int64_t i = 0; i < count; ++i)
      out->norms[static_cast<std::size_t>(i)] = squared_norm(out->data + i * out->ld, dim);
    return;
  }
  out->ld = ld;
  out->values.resize(static_cast<std::size_t>(count * ld));
  out->data = out->values.data();
  if (bf16) out->pairs.resize(static_cast<std::size_t>(count * ld / 2));
  // 16-bit databases: queries rounded to the database dtype (bulk conversions: the scalar
  // ones' bits), the bf16 kernels also taking them as packed pairs.
  std::vector<std::uint16_t> half(f16 || bf16 ? static_cast<std::size_t>(ld) : 0, 0);
  for (std::int64_t i = 0; i < count; ++i) {
    float* v = out->values.data() + i * ld;
    convert_to_f32(q.dtype, q.row(begin + i), static_cast<std::size_t>(dim), v);
    for (std::int64_t k = dim; k < ld; ++k) v[k] = 0.f;  // padding
    if (f16 || bf16) {
      convert_from_f32(v, static_cast<std::size_t>(dim), db.dtype(), half.data());
      convert_to_f32(db.dtype(), half.data(), static_cast<std::size_t>(dim), v);
    }
    out->norms[static_cast<std::size_t>(i)] = squared_norm(v, dim);
    if (bf16) {  // half[dim..ld) stays 0: the padding's bf16
      std::uint32_t* p = out->pairs.data() + i * ld / 2;
      for (std::int64_t m = 0; m < ld / 2; ++m)
        p[m] = static_cast<std::uint32_t>(half[static_cast<std::size_t>(2 * m)]) |
               (static_cast<std::uint32_t>(half[static_cast<std::size_t>(2 * m + 1)]) << 16);
    }
  }
}

// Scans panels [panel_begin, panel_end) of db for the prepared queries into `topk`.
void scan_range(const PreparedQueries& q, const PackedMatrix& db, Metric metric,
                DistanceBlockFn kernel, std::int64_t panel_begin, std::int64_t panel_end,
                TopK* topk) {
  // Sized by the range (a few panels of centroids in a k-means assignment) and left
  // uninitialised: the kernel writes every distance and mask the top-k reads (block_kernel.h).
  const std::int64_t chunk_panels = std::min(kPanelsPerChunk, panel_end - panel_begin);
  const std::int64_t ld_distances = 16 * chunk_panels;
  UninitVector<float> distances(static_cast<std::size_t>(q.n * ld_distances));
  UninitVector<std::uint16_t> masks(static_cast<std::size_t>(q.n * chunk_panels));
  DistanceBlockArgs args;
  args.queries = q.data;
  args.ld_queries = q.ld;
  args.query_bf16_pairs = q.pairs.empty() ? nullptr : q.pairs.data();
  args.query_norms = q.norms.data();
  args.nq = q.n;
  args.dim_padded = db.dim_padded();
  args.dtype = db.dtype();
  args.metric = metric;
  args.thresholds = topk->thresholds();
  args.distances = distances.data();
  args.ld_distances = ld_distances;
  args.masks = masks.data();
  args.ld_masks = chunk_panels;
  for (std::int64_t p = panel_begin; p < panel_end; p += chunk_panels) {
    const std::int64_t np = std::min(chunk_panels, panel_end - p);
    args.panels = db.panel(p);
    args.npanels = np;
    args.db_norms = db.norms() + p * kPanelRows;
    kernel(args);
    topk->add_block(distances.data(), ld_distances, masks.data(), chunk_panels, np,
                    p * kPanelRows, db.rows() - p * kPanelRows);
  }
}

void check_args(const MatrixView& queries, const PackedMatrix& db, std::int64_t k) {
  validate_view(queries, "queries");
  if (queries.dim != db.dim())
    throw_error(ErrorCode::kInvalidArgument, "queries have dim " + std::to_string(queries.dim) +
                                                 ", index has dim " + std::to_string(db.dim()));
  if (k < 1) throw_error(ErrorCode::kInvalidArgument, "k must be >= 1, got " + std::to_string(k));
}

}  // namespace

void knn_search(const MatrixView& queries, const PackedMatrix& db, std::int64_t k,
                Metric metric, float* distances, std::int64_t* ids,
                const KnnOptions& options) {
  check_args(queries, db, k);
  const SimdLevel level = resolve_simd_level(options.simd);
  const DistanceBlockFn kernel = distance_block_kernel(level);
  const std::int64_t nq = queries.rows;
  if (nq == 0) return;
  const bool negate = metric == Metric::kInnerProduct;

  const std::int64_t n_blocks = (nq + kQueryBlock - 1) / kQueryBlock;
  const std::int64_t panels = db.panels();
  // No more results can exist than rows: keep at most that many, pad the rest at the end.
  const std::int64_t k_kept = std::max<std::int64_t>(1, std::min(k, db.rows()));
  const int threads = resolve_threads(options.threads, std::numeric_limits<std::int64_t>::max());
  // Few query blocks: also split the database so every thread has work (Q = 1..16 scans).
  // Four ranges per thread rather than one: tasks are claimed dynamically, so a thread that
  // starts late or shares its core for a while does not leave the others waiting at the end.
  std::int64_t n_ranges = 1;
  if (n_blocks < threads) {
    n_ranges = std::min<std::int64_t>(4 * ((threads + n_blocks - 1) / n_blocks),
                                      std::max<std::int64_t>(1, panels / kMinPanelsPerRange));
  }
  const std::int64_t panels_per_range = (panels + n_ranges - 1) / std::max<std::int64_t>(n_ranges, 1);

  std::vector<std::unique_ptr<TopK>> results(static_cast<std::size_t>(n_blocks * n_ranges));
  parallel_for(threads, n_blocks * n_ranges, [&](std::int64_t task, int) {
    const std::int64_t block = task / n_ranges, range = task % n_ranges;
    const std::int64_t q0 = block * kQueryBlock, qn = std::min(kQueryBlock, nq - q0);
    const std::int64_t p0 = range * panels_per_range;
    const std::int64_t p1 = std::min(panels, p0 + panels_per_range);
    PreparedQueries prepared;
    prepare_queries(queries, q0, qn, db, &prepared);
    auto topk = std::make_unique<TopK>(qn, k_kept);
    if (p0 < p1) scan_range(prepared, db, metric, kernel, p0, p1, topk.get());
    results[static_cast<std::size_t>(task)] = std::move(topk);
  });
  for (std::int64_t block = 0; block < n_blocks; ++block) {
    TopK& first = *results[static_cast<std::size_t>(block * n_ranges)];
    for (std::int64_t range = 1; range < n_ranges; ++range)
      first.merge(*results[static_cast<std::size_t>(block * n_ranges + range)]);
    const std::int64_t q0 = block * kQueryBlock;
    first.finish(distances + q0 * k, ids + q0 * k, k, negate);  // pads past k_kept
  }
}

void nearest(const MatrixView& queries, const PackedMatrix& db, Metric metric,
             std::int64_t* labels, float* distances, const KnnOptions& options) {
  check_args(queries, db, 1);
  std::vector<float> d;
  std::vector<std::int64_t> l;
  float* dp = distances;
  std::int64_t* lp = labels;
  if (dp == nullptr) {
    d.resize(static_cast<std::size_t>(queries.rows));
    dp = d.data();
  }
  if (lp == nullptr) {
    l.resize(static_cast<std::size_t>(queries.rows));
    lp = l.data();
  }
  knn_search(queries, db, 1, metric, dp, lp, options);
}

void all_distances(const MatrixView& queries, const PackedMatrix& db, Metric metric, float* out,
                   std::int64_t ld_out, const KnnOptions& options) {
  check_args(queries, db, 1);
  const DistanceBlockFn kernel = distance_block_kernel(resolve_simd_level(options.simd));
  const std::int64_t nq = queries.rows, panels = db.panels();
  if (nq == 0 || panels == 0) return;
  const std::int64_t n_chunks = (panels + kPanelsPerChunk - 1) / kPanelsPerChunk;
  const std::int64_t n_blocks = (nq + kQueryBlock - 1) / kQueryBlock;
  const int threads = resolve_threads(options.threads, n_blocks * n_chunks);
  const std::int64_t chunks_per_task =
      std::max<std::int64_t>(1, (n_chunks + 4 * threads - 1) / (4 * threads));
  const std::int64_t tasks_per_block = (n_chunks + chunks_per_task - 1) / chunks_per_task;
  const float never = -std::numeric_limits<float>::infinity();
  parallel_for(threads, n_blocks * tasks_per_block, [&](std::int64_t task, int) {
    const std::int64_t block = task / tasks_per_block, part = task % tasks_per_block;
    const std::int64_t q0 = block * kQueryBlock, qn = std::min(kQueryBlock, nq - q0);
    PreparedQueries q;
    prepare_queries(queries, q0, qn, db, &q);
    const std::int64_t ld = 16 * kPanelsPerChunk;
    UninitVector<float> buf(static_cast<std::size_t>(qn * ld));  // the kernel writes what is read
    UninitVector<std::uint16_t> masks(static_cast<std::size_t>(qn * kPanelsPerChunk));
    std::vector<float> thresholds(static_cast<std::size_t>(qn), never);
    DistanceBlockArgs args;
    args.queries = q.data;
    args.ld_queries = q.ld;
    args.query_bf16_pairs = q.pairs.empty() ? nullptr : q.pairs.data();
    args.query_norms = q.norms.data();
    args.nq = qn;
    args.dim_padded = db.dim_padded();
    args.dtype = db.dtype();
    args.metric = metric;
    args.thresholds = thresholds.data();
    args.distances = buf.data();
    args.ld_distances = ld;
    args.masks = masks.data();
    args.ld_masks = kPanelsPerChunk;
    const std::int64_t c1 = std::min(n_chunks, (part + 1) * chunks_per_task);
    for (std::int64_t c = part * chunks_per_task; c < c1; ++c) {
      const std::int64_t p = c * kPanelsPerChunk;
      args.panels = db.panel(p);
      args.npanels = std::min(kPanelsPerChunk, panels - p);
      args.db_norms = db.norms() + p * kPanelRows;
      kernel(args);
      const std::int64_t j0 = p * kPanelRows;
      const std::int64_t cols = std::min(args.npanels * kPanelRows, db.rows() - j0);
      for (std::int64_t i = 0; i < qn; ++i) {
        float* dst = out + (q0 + i) * ld_out + j0;
        const float* src = buf.data() + i * ld;
        for (std::int64_t j = 0; j < cols; ++j) dst[j] = metric == Metric::kL2 ? src[j] : -src[j];
      }
    }
  });
}

}  // namespace megatax::kernels
