// taxonomy/plan.h -- a cost model of a fit: per level, the work, the bytes and the time.
//
// From the problem (N, dim, dtype, levels, branching, sample size, Lloyd iterations) and the
// machine (workers, GEMM rate per worker, storage read rate per worker, network rate per
// worker) it predicts, per level, the FLOPs of training and of the assignment pass, the bytes
// read from storage and exchanged between workers, the memory each worker holds, and the
// time, assuming each phase runs at the slower of its compute and I/O bounds. It is a model:
// `megatax plan` prints it and docs/scale.md compares it with measured runs.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace megatax::taxonomy {

struct PlanInput {
  double n = 0;                      // points
  std::int64_t dim = 0;
  double element_bytes = 4;          // 4 (f32), 2 (f16/bf16)
  std::vector<std::int64_t> branching;  // one per level
  std::int64_t sample_per_centroid = 256;
  int max_iter = 20;                 // Lloyd iterations per node (on its sample)
  int lloyd_passes = 0;
  int workers = 1;                   // ranks (one per GPU or per machine)
  double gemm_flops = 1e11;          // per worker, achieved by the assign kernel
  double storage_bytes_per_s = 1e9;  // per worker
  double network_bytes_per_s = 1e9;  // per worker
  std::int64_t batch_rows = 65536;
  double shards = 1;                 // input files
};

struct LevelPlan {
  int level = 0;
  double parents = 0, nodes = 0;
  double sample_points = 0;          // training points of the level (all nodes)
  double train_flops = 0, assign_flops = 0;
  double bytes_read = 0;             // input pass(es) + sample gathering
  double bytes_exchanged = 0;        // per worker: samples, centroids, summaries
  double memory_per_worker = 0;      // bytes
  double train_seconds = 0, assign_seconds = 0, exchange_seconds = 0, seconds = 0;
};

std::vector<LevelPlan> plan_fit(const PlanInput& in);

// A fixed-width table of the plan, with totals.
std::string format_plan(const PlanInput& in, const std::vector<LevelPlan>& levels);

}  // namespace megatax::taxonomy
