#include "taxonomy/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace megatax::taxonomy {

std::vector<LevelPlan> plan_fit(const PlanInput& in) {
  std::vector<LevelPlan> out;
  const double d = static_cast<double>(in.dim), R = std::max(1, in.workers);
  double parents = 1;
  for (std::size_t i = 0; i < in.branching.size(); ++i) {
    LevelPlan p;
    p.level = static_cast<int>(i + 1);
    const double b = static_cast<double>(in.branching[i]);
    p.parents = parents;
    p.nodes = parents * b;
    // Each parent trains on min(its points, sample_per_centroid * b) points.
    const double per_parent = in.n / parents;
    p.sample_points = parents * std::min(per_parent, static_cast<double>(in.sample_per_centroid) * b);
    // k-means: (max_iter + 1) assignments of the sample against b centroids (+ seeding, small).
    p.train_flops = 2.0 * p.sample_points * b * d * (in.max_iter + 1) * 1.1;
    p.assign_flops = 2.0 * in.n * b * d * (1 + in.lloyd_passes);
    p.bytes_read = in.n * d * in.element_bytes * (1 + in.lloyd_passes) + p.sample_points * d * in.element_bytes;
    // Exchanged per worker: sample ids to owners (16 B each), every centroid to everyone,
    // per-shard node partial sums to the node owners (32 B per touched (shard, node) pair,
    // at most one per point) and the node totals back to everyone (24 B a node).
    const double samples_next = (i + 1 < in.branching.size())
                                    ? std::min(in.n, p.nodes * in.sample_per_centroid * static_cast<double>(in.branching[i + 1]))
                                    : 0;
    const double summaries = std::min(in.n, p.nodes * in.shards) * 32 / R + p.nodes * 24;
    p.bytes_exchanged = R > 1 ? (samples_next * 16 / R + p.nodes * d * 4 + summaries) : 0;
    // Memory per worker: a batch, the level's centroids, its share of next samples, a
    // training group (capped at 256 MB by default), one shard's state.
    const double group = std::min(p.sample_points / R * d * 4, 256.0 * (1 << 20));
    const double shard_state = in.n / std::max(1.0, in.shards) * (4.0 * (i + 1) + 8);
    p.memory_per_worker = static_cast<double>(in.batch_rows) * d * 4 + p.nodes * d * 4 +
                          samples_next / R * 16 + group + shard_state;
    // Nodes are trained by their owners: at most `parents` workers share the training.
    p.train_seconds = p.train_flops / (std::min(R, parents) * in.gemm_flops);
    const double compute = p.assign_flops / (R * in.gemm_flops);
    const double io = p.bytes_read / (R * in.storage_bytes_per_s);
    p.assign_seconds = std::max(compute, io);
    p.exchange_seconds = p.bytes_exchanged / in.network_bytes_per_s;
    p.seconds = p.train_seconds + p.assign_seconds + p.exchange_seconds;
    out.push_back(p);
    parents = p.nodes;
  }
  return out;
}

namespace {
std::string si(double v, const char* unit) {
  const char* prefixes[] = {"", "k", "M", "G", "T", "P", "E"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 6) {
    v /= 1000;
    ++i;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3g %s%s", v, prefixes[i], unit);
  return buf;
}
std::string duration(double s) {
  char buf[48];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
  else std::snprintf(buf, sizeof buf, "%.2f h", s / 3600);
  return buf;
}
}  // namespace

std::string format_plan(const PlanInput& in, const std::vector<LevelPlan>& levels) {
  std::string s;
  char line[512];
  std::snprintf(line, sizeof line,
                "plan: N=%s dim=%lld (%g B/elem), %d workers at %s/s GEMM, %s/s storage, %s/s network each\n",
                si(in.n, "").c_str(), static_cast<long long>(in.dim), in.element_bytes, in.workers,
                si(in.gemm_flops, "FLOP").c_str(), si(in.storage_bytes_per_s, "B").c_str(),
                si(in.network_bytes_per_s, "B").c_str());
  s += line;
  std::snprintf(line, sizeof line, "%-5s %10s %11s %12s %12s %11s %11s %11s %10s %10s %10s\n", "level", "nodes",
                "sample", "train FLOP", "assign FLOP", "read", "exchanged", "mem/worker", "train", "assign",
                "total");
  s += line;
  double total = 0, flops = 0, bytes = 0;
  for (const auto& p : levels) {
    std::snprintf(line, sizeof line, "%-5d %10s %11s %12s %12s %11s %11s %11s %10s %10s %10s\n", p.level,
                  si(p.nodes, "").c_str(), si(p.sample_points, "").c_str(), si(p.train_flops, "").c_str(),
                  si(p.assign_flops, "").c_str(), si(p.bytes_read, "B").c_str(), si(p.bytes_exchanged, "B").c_str(),
                  si(p.memory_per_worker, "B").c_str(), duration(p.train_seconds).c_str(),
                  duration(p.assign_seconds).c_str(), duration(p.seconds).c_str());
    s += line;
    total += p.seconds;
    flops += p.train_flops + p.assign_flops;
    bytes += p.bytes_read;
  }
  std::snprintf(line, sizeof line, "total: %s FLOP, %s read, estimated %s (%s points*level/s)\n", si(flops, "").c_str(),
                si(bytes, "B").c_str(), duration(total).c_str(),
                si(total > 0 ? in.n * static_cast<double>(levels.size()) / total : 0, "").c_str());
  s += line;
  return s;
}

}  // namespace megatax::taxonomy
