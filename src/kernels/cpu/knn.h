// kernels/cpu/knn.h -- fused streaming k-nearest-neighbour search over a PackedMatrix.
//
// Streams the database panel run by panel run through the block kernel of the chosen SIMD
// level and keeps, per query, the best k (distance, id) pairs in a top-k handler; a
// [nq, ntotal] distance matrix never exists (the largest buffer is one block: at most
// 128 queries x 256 rows of floats per thread).
//
// Work split: the queries are cut in blocks of up to 128; when there are fewer blocks than
// threads the database is also cut in contiguous ranges, one handler per (block, range),
// merged in range order at the end. Results do not depend on the thread count.
//
// Ordering: results per query are sorted by (distance, id) ascending, ties to the smaller
// id. For kInnerProduct the value returned is the similarity <q, x>, sorted descending
// (ties still to the smaller id). L2 distances are clamped at >= 0.
//
// Thread-safety: concurrent calls on the same const PackedMatrix are safe.
#pragma once

#include <cstdint>

#include "kernels/cpu/packed_matrix.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::kernels {

struct KnnOptions {
  int threads = 0;                     // worker threads; 0 = all hardware threads
  SimdLevel simd = SimdLevel::kAuto;   // code path; kAuto = default_simd_level()
};

// queries: nq x dim (any dtype; converted to the database dtype, rounded to nearest even,
// as the kernels compute in that dtype). distances/ids: nq * k outputs, row-major.
// Preconditions (checked, Error(kInvalidArgument)): queries.dim == db.dim(), k >= 1.
// If k > db.rows(), entries past db.rows() in each row are id -1 and distance +inf
// (kInnerProduct: -inf). Queries must be finite (not checked here: callers validate;
// a NaN query yields id -1 entries).
void knn_search(const MatrixView& queries, const PackedMatrix& db, std::int64_t k,
                Metric metric, float* distances, std::int64_t* ids,
                const KnnOptions& options = {});

// The k = 1 case (the k-means assignment step): labels[i] = nearest row (-1 if db is
// empty), distances[i] its distance (kInnerProduct: similarity). Either output may be null.
void nearest(const MatrixView& queries, const PackedMatrix& db, Metric metric,
             std::int64_t* labels, float* distances, const KnnOptions& options = {});

// Dense distances for a few queries (k-means++ seeding, diagnostics): out[i * ld_out + j]
// for every db row j (kInnerProduct: similarity). Same numerics as knn_search. The caller
// owns the nq x db.rows() output, so keep nq small.
void all_distances(const MatrixView& queries, const PackedMatrix& db, Metric metric, float* out,
                   std::int64_t ld_out, const KnnOptions& options = {});

}  // namespace megatax::kernels
