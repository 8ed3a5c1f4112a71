// TaxonomyEngine::fit and predict-to-files: the level pipeline of DESIGN.md ("Fit, as data
// flows"): per level, sample -> train -> assign -> commit, with state kept for resume.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <thread>

#include "cluster/kmeans.h"
#include "core/background_jobs.h"
#include "core/env.h"
#include "core/fast_mod.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "core/random.h"
#include "core/uninit_vector.h"
#include "dist/executor.h"
#include "dist/message.h"
#include "io/npy.h"
#include "io/npy_array.h"
#include "io/parquet_writer.h"
#include "io/streamed_write.h"
#include "kernels/cpu/row_sums.h"
#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/vector_format.h"
#include "taxonomy/compute_backend.h"
#include "taxonomy/engine_impl.h"
#include "taxonomy/node_samples.h"
#include "taxonomy/row_groups.h"

namespace megatax {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string level_dir(int l) { return "level-" + std::to_string(l) + "/"; }
std::string state_dir(int l) { return "state/level-" + std::to_string(l) + "/"; }
std::string samples_prefix(int l) { return "state/samples-" + std::to_string(l); }

// The priority of point `id` in the training sample of level `level` (NodeSamples: a node's
// sample is its points of the smallest priorities): a function of the id, so a committed
// sample is stored as ids alone and its priorities recomputed on resume.
std::uint64_t sample_priority(std::int64_t id, std::uint64_t seed, int level) {
  return hash64(static_cast<std::uint64_t>(id), seed, static_cast<std::uint64_t>(level));
}

// Per-shard fit state after a level: node at that level (-1 below a leaf), path so far
// (int32 [n, levels]) and distance to the deepest centroid reached.
// (Arrays a pass writes in full are not zero-filled first: UninitVector.)
struct ShardState {
  UninitVector<std::int32_t> node;
  UninitVector<std::int32_t> paths;
  UninitVector<float> dist;
};

// The end of the run of ids from ids[i] (which `shard` holds) that the shard also holds,
// at most max_run long: ids ascending, so a run is a stretch of one shard.
std::size_t shard_run_end(const ShardInfo& shard, std::span<const std::int64_t> ids, std::size_t i,
                          std::size_t max_run) {
  const Id shard_end = shard.global_begin + shard.rows;
  std::size_t j = i + 1;
  while (j < ids.size() && j - i < max_run && ids[j] >= shard.global_begin && ids[j] < shard_end) ++j;
  return j;
}

// Reads rows of the dataset by global id (ids sorted ascending) into out (n x d, one row
// after the other): float32, or with `stored` in the dtype the files hold; checks they are
// finite. Per shard, up to kChunk ids at a time: a dense stretch (span at most twice the
// rows wanted) is read as one range and the wanted rows picked; a sparse one is read row by
// row in one storage call (one open, then a pread per row).
void gather_rows(const Dataset& data, std::span<const std::int64_t> ids, void* out, bool stored) {
  constexpr std::size_t kChunk = 4096;
  const std::int64_t d = data.dim();
  const DType dtype = stored ? data.dtype() : DType::kF32;
  const auto row_bytes = static_cast<std::int64_t>(d * dtype_size(dtype));
  std::vector<unsigned char> span_buf;
  std::vector<std::int64_t> rows;
  std::size_t i = 0;
  while (i < ids.size()) {
    const ShardRow at = data.locate(ids[i]);
    const auto& shard = data.shards()[at.shard];
    const std::size_t j = shard_run_end(shard, ids, i, kChunk);
    const std::int64_t span = ids[j - 1] - ids[i] + 1;
    const auto count = static_cast<std::int64_t>(j - i);
    auto* dst = static_cast<unsigned char*>(out) + static_cast<std::int64_t>(i) * row_bytes;
    const VectorReader& reader = data.reader(at.shard);
    auto read = [&](std::int64_t row, std::int64_t n, void* to) {
      if (stored) {
        reader.read(row, n, to);
      } else {
        reader.read_f32(row, n, static_cast<float*>(to));
      }
    };
    if (span == count) {  // consecutive: read straight into out
      read(at.row, span, dst);
    } else if (span <= 2 * count) {
      span_buf.resize(static_cast<std::size_t>(span * row_bytes));
      read(at.row, span, span_buf.data());
      for (std::size_t t = i; t < j; ++t)
        std::memcpy(static_cast<unsigned char*>(out) + static_cast<std::int64_t>(t) * row_bytes,
                    span_buf.data() + (ids[t] - ids[i]) * row_bytes, static_cast<std::size_t>(row_bytes));
    } else {
      rows.resize(j - i);
      for (std::size_t t = i; t < j; ++t) rows[t - i] = at.row + (ids[t] - ids[i]);
      if (stored) {
        reader.read_rows(rows, dst);
      } else {
        reader.read_rows_f32(rows, reinterpret_cast<float*>(dst));
      }
    }
    for (std::size_t t = i; t < j; ++t)
      check_finite(MatrixView(static_cast<unsigned char*>(out) + static_cast<std::int64_t>(t) * row_bytes, 1, d, dtype),
                   shard.path, at.row + (ids[t] - ids[i]), ids[t]);
    i = j;
  }
}

// The device addresses of `ids`' rows (ascending global ids) where `backend` keeps them
// (ComputeBackend::kept_rows): false when one of them is not kept.
bool kept_row_addresses(const Dataset& data, const taxonomy::ComputeBackend& backend,
                        std::span<const std::int64_t> ids, const void** out) {
  std::vector<std::int64_t> rows;
  std::size_t i = 0;
  while (i < ids.size()) {
    const ShardRow at = data.locate(ids[i]);
    const auto& shard = data.shards()[at.shard];
    const std::size_t j = shard_run_end(shard, ids, i, ids.size());
    rows.resize(j - i);
    for (std::size_t t = i; t < j; ++t) rows[t - i] = ids[t] - shard.global_begin;
    if (!backend.kept_rows(at.shard, rows, out + i)) return false;
    i = j;
  }
  return true;
}

// An array of n floats for a wide level's centroids (gigabytes), to be written in full by
// the caller: its pages faulted in on `threads` threads (one thread faulting them would take
// seconds), its elements not zero-filled (UninitVector: that fill alone was a one-thread
// pass of ~0.3 s over 3 GB).
UninitVector<float> make_level_array(std::size_t n, int threads) {
  UninitVector<float> v;
  v.reserve(n);
  advise_huge_pages(v.data(), n * sizeof(float));
  populate_pages(v.data(), n * sizeof(float), threads);
  v.resize(n);
  return v;
}

// How a pass's batches reach `backend` (the fit's passes and GPU predict). A backend
// computing in the data's dtype gets the rows as stored (read in parallel ranges; a GPU's
// into its page-locked buffer, copied as they land and kept while they fit); one computing
// in another dtype (a GPU's --gpu-dtype bf16 on f32 rows) gets them converted into that
// buffer the same way. A cosine pass's rows go there raw when the backend normalises them
// itself (a GPU, on the device: then they are kept normalised too), provided it sees their
// exact values (as stored, or converted to f32: normalised before any rounding); rows
// converted to 16 bits are normalised as f32 by the reading threads before their conversion
// (the host's bits either way). Otherwise the batches stay f32 for the caller to normalise
// (or, with no backend buffer, as stored into `stored_buffer` when given).
struct BackendRows {
  bool in_buffer = false;              // read into backend.batch_buffer(), handed on as they land
  bool normalised_by_backend = false;  // cosine: call backend.normalise_next_rows() before descend
  bool normalised_by_reader = false;   // cosine: normalised by the reading threads
  bool as_stored = false;              // in_buffer: in the stored dtype (else converted)
  bool normalised() const { return normalised_by_backend || normalised_by_reader; }
};
BackendRows route_rows(BatchReader& reader, taxonomy::ComputeBackend& backend, const Dataset& data,
                       std::int64_t shard, std::int64_t batch_rows, bool normalise,
                       std::vector<unsigned char>* stored_buffer) {
  BackendRows r;
  const std::int64_t d = data.dim();
  const DType into = backend.compute_dtype();
  const bool as_stored = backend.takes_stored_rows(data.dtype());
  const bool converted = !as_stored && backend.takes_stored_rows(into);
  const bool device_normalises = backend.normalises_rows() && (as_stored || into == DType::kF32);
  if (!(as_stored || converted) || (normalise && !device_normalises && !converted)) return r;
  const std::int64_t rows = std::min(batch_rows, data.shards()[static_cast<std::size_t>(shard)].rows);
  const auto bytes = static_cast<std::size_t>(rows * d) * dtype_size(as_stored ? data.dtype() : into);
  unsigned char* own = backend.batch_buffer(bytes);
  if (own == nullptr) {
    if (as_stored && !normalise && stored_buffer != nullptr) reader.keep_stored_dtype(stored_buffer);
    return r;
  }
  if (as_stored) {
    reader.keep_stored_dtype(own, bytes);
  } else {
    reader.convert_into(own, bytes, into);
  }
  reader.on_rows_landed([&backend, shard](std::int64_t b0, std::int64_t n, std::int64_t first, std::int64_t count) {
    backend.batch_rows_landed(shard, b0, n, first, count);
  });
  r.in_buffer = true;
  r.as_stored = as_stored;
  r.normalised_by_backend = normalise && device_normalises;
  r.normalised_by_reader = normalise && !device_normalises;
  if (r.normalised_by_reader)
    reader.transform_converted_rows([d](float* x, std::int64_t count) { taxonomy::normalise_rows(x, count, d, 1); });
  return r;
}

// gather_rows on `threads` threads: equal slices of `ids`, each into its own rows of out, in
// dtype `to`: as stored (to == data.dtype()), float32, or float32 converted to f16 / bf16
// (rounded to nearest: the values BatchReader::convert_into gives the pass; a finite value
// too large for f16 is Error(kDataLoss) naming its row and column).
void gather_rows(const Dataset& data, const std::vector<std::int64_t>& ids, void* out, DType to, int threads) {
  constexpr std::int64_t kMinSlice = 1024;
  const bool stored = to == data.dtype();
  const bool convert = !stored && to != DType::kF32;
  const std::int64_t d = data.dim();
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t row_bytes = d * static_cast<std::int64_t>(dtype_size(to));
  const std::int64_t slices = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, n / kMinSlice));
  parallel_for(static_cast<int>(slices), slices, [&](std::int64_t t, int) {
    const std::int64_t b = n * t / slices, e = n * (t + 1) / slices;
    const std::span<const std::int64_t> mine = std::span<const std::int64_t>(ids).subspan(
        static_cast<std::size_t>(b), static_cast<std::size_t>(e - b));
    auto* dst = static_cast<unsigned char*>(out) + b * row_bytes;
    if (!convert) {
      gather_rows(data, mine, dst, stored);
      return;
    }
    constexpr std::size_t kRows = 4096;  // f32 rows gathered, then converted, at a time
    std::vector<float> f32;
    for (std::size_t c = 0; c < mine.size(); c += kRows) {
      const std::span<const std::int64_t> part = mine.subspan(c, std::min(kRows, mine.size() - c));
      const auto values = part.size() * static_cast<std::size_t>(d);
      f32.resize(values);
      gather_rows(data, part, f32.data(), false);
      unsigned char* conv = dst + static_cast<std::int64_t>(c) * row_bytes;
      convert_from_f32(f32.data(), values, to, conv);
      const auto* bits = reinterpret_cast<const std::uint16_t*>(conv);
      const std::uint16_t inf = to == DType::kF16 ? 0x7C00u : 0x7F80u;
      for (std::size_t v = 0; v < values; ++v) {
        if ((bits[v] & 0x7FFFu) != inf) continue;
        const std::int64_t id = part[v / static_cast<std::size_t>(d)];
        const ShardRow at = data.locate(id);
        throw_error(ErrorCode::kDataLoss,
                    "shard " + data.shards()[at.shard].path + ": row " + std::to_string(at.row) + " (global id " +
                        std::to_string(id) + ") has a value too large for " + dtype_name(to) + " (" +
                        std::to_string(f32[v]) + ") in column " + std::to_string(static_cast<std::int64_t>(v) % d) +
                        ", the dtype its rows are converted to (f16's largest is 65504)");
      }
    }
  });
}

void write_shard_state(Storage& st, const std::string& prefix, const ShardState& s, int levels) {
  const auto n = static_cast<std::int64_t>(s.node.size());
  const std::int64_t shape1[1] = {n};
  const std::int64_t shape2[2] = {n, levels};
  write_npy(st, prefix + ".node.npy", std::span<const std::int32_t>(s.node), shape1);
  write_npy(st, prefix + ".paths.npy", std::span<const std::int32_t>(s.paths), shape2);
  write_npy(st, prefix + ".dist.npy", std::span<const float>(s.dist), shape1);
}

ShardState read_shard_state(const Storage& st, const std::string& prefix, std::int64_t rows,
                            int levels) {
  ShardState s;
  std::vector<std::int64_t> shape;
  s.node = io::read_npy_array<std::int32_t, DefaultInitAllocator<std::int32_t>>(st, prefix + ".node.npy", &shape);
  s.paths = io::read_npy_array<std::int32_t, DefaultInitAllocator<std::int32_t>>(st, prefix + ".paths.npy", &shape);
  if (shape.size() != 2 || shape[0] != rows || shape[1] != levels)
    throw_error(ErrorCode::kDataLoss, prefix + ".paths.npy: expected shape (" + std::to_string(rows) +
                                          ", " + std::to_string(levels) + ")");
  s.dist = io::read_npy_array<float, DefaultInitAllocator<float>>(st, prefix + ".dist.npy", &shape);
  if (static_cast<std::int64_t>(s.node.size()) != rows || static_cast<std::int64_t>(s.dist.size()) != rows)
    throw_error(ErrorCode::kDataLoss, prefix + ": state does not match the shard's " +
                                          std::to_string(rows) + " rows");
  return s;
}

// The read options of the config (Parquet columns).
VectorReadOptions read_options(const TaxonomyConfig& c) {
  VectorReadOptions o;
  o.column = c.column;
  o.id_column = c.id_column;
  o.skip_null = c.skip_null;
  return o;
}

// The ids a shard's outputs carry: the shard's id column when the dataset has one, else
// global ids (global_begin + row).
std::vector<std::int64_t> output_ids(const Dataset& data, std::size_t shard_index) {
  const ShardInfo& shard = data.shards()[shard_index];
  const std::int64_t n = shard.rows;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  if (data.has_ids() && n > 0) {
    data.reader(shard_index).read_ids(0, n, ids.data());
  } else {
    for (std::int64_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = shard.global_begin + i;
  }
  return ids;
}

// Writes one shard's outputs in the configured format (ids: output_ids()). Touches no reader
// of `data`: may run on another thread while the shards are read.
void write_outputs(Storage& st, const std::string& root, const Dataset& data, std::size_t shard_index,
                   std::span<const std::int32_t> paths, std::span<const float> dist,
                   const std::vector<std::int64_t>& ids, int levels, const std::string& format) {
  const ShardInfo& shard = data.shards()[shard_index];
  const auto n = static_cast<std::int64_t>(dist.size());
  const std::string stem = taxonomy::shard_stem(shard.path);
  const std::string base = root.empty() ? stem : (root.back() == '/' ? root + stem : root + "/" + stem);
  if (format == "parquet") {
    io::write_paths_parquet(st, base + ".parquet", ids, paths, levels, dist);
    return;
  }
  const std::int64_t shape1[1] = {n};
  const std::int64_t shape2[2] = {n, levels};
  write_npy(st, base + ".paths.npy", paths, shape2);
  write_npy(st, base + ".ids.npy", std::span<const std::int64_t>(ids), shape1);
  write_npy(st, base + ".dist.npy", dist, shape1);
}

// Refuses datasets whose shards would write the same output files.
void check_unique_stems(const Dataset& data) {
  std::map<std::string, std::string> seen;
  for (const auto& s : data.shards()) {
    auto [it, fresh] = seen.emplace(taxonomy::shard_stem(s.path), s.path);
    if (!fresh)
      throw_error(ErrorCode::kInvalidArgument, "shards " + it->second + " and " + s.path +
                                                   " have the same stem '" + it->first +
                                                   "': their outputs would collide");
  }
}

// Removes the temporary files that writes killed mid-way (a SIGKILLed rank) left in `dir`:
// write_atomic names them ".<name>.tmp.<pid>.<random>". Call only when no write into `dir`
// is in flight. A missing `dir` has none.
void remove_stale_temps(Storage& st, const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  if (!st.exists(d)) return;
  for (const auto& name : st.list(d))
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos)
      st.remove(d.back() == '/' ? d + name : d + "/" + name);
}

// Removes folder `dir` ("…/", holding files only) and its files; a missing folder is fine.
void remove_folder(Storage& st, const std::string& dir) {
  if (!st.exists(dir)) return;
  for (const auto& name : st.list(dir)) st.remove(dir + name);
  st.remove(dir);
}

// Removes the state folder `state` ("…/state") of a complete fit of `levels` levels: every
// level's state folder and sample files, whatever a killed run's clean-up left of them (a
// commit's clean-up of the level before runs after its manifest, and may not have
// finished), its temporaries, then the folder.
void remove_fit_state(Storage& st, const std::string& state, int levels) {
  if (!st.exists(state)) return;
  for (int l = 1; l <= levels; ++l) {
    remove_folder(st, state + "/level-" + std::to_string(l) + "/");
    for (const char* suffix : {".offsets.npy", ".ids.npy", ".priorities.npy"})
      st.remove(state + "/samples-" + std::to_string(l) + suffix);
  }
  remove_stale_temps(st, state);
  st.remove(state);
}

json::Value dataset_json(const Dataset& data) {
  json::Value v = json::Value::object();
  v.set("pattern", data.pattern());
  v.set("rows", data.rows());
  v.set("dim", data.dim());
  json::Value shards = json::Value::array();
  for (const auto& s : data.shards()) {
    json::Value e = json::Value::object();
    e.set("name", taxonomy::base_name(s.path));
    e.set("rows", s.rows);
    shards.push_back(std::move(e));
  }
  v.set("shards", std::move(shards));
  return v;
}

json::Value level_json(const taxonomy::Tree& tree, int l, const LevelReport& r) {
  const auto& lv = tree.level(l);
  json::Value v = json::Value::object();
  v.set("level", l);
  v.set("nodes", lv.nodes());
  v.set("split_parents", r.split_parents);
  v.set("points", r.points);
  v.set("inertia", r.inertia);
  v.set("seconds", r.seconds);
  std::vector<std::int64_t> sizes(lv.count);
  std::sort(sizes.begin(), sizes.end());
  json::Value sz = json::Value::object();
  if (!sizes.empty()) {
    sz.set("min", sizes.front());
    sz.set("median", sizes[sizes.size() / 2]);
    sz.set("p99", sizes[std::min(sizes.size() - 1, sizes.size() * 99 / 100)]);
    sz.set("max", sizes.back());
  }
  v.set("sizes", std::move(sz));
  // Per-node branching (the node table holds it exactly: children = nodes with that parent).
  json::Value br = json::Value::object();
  br.set("min", r.min_children);
  br.set("max", r.max_children);
  v.set("branching", std::move(br));
  v.set("split_rounds", r.split_rounds);
  return v;
}


// Sends each node's sampled (priority, id) pairs to the worker that owns the node
// (node mod workers) and returns what this worker owns, merged. Exact: bottom-k merges.
taxonomy::NodeSamples route_samples(taxonomy::NodeSamples local, dist::Executor& ex,
                                    std::int64_t n_nodes, std::int64_t k) {
  const int R = ex.workers();
  if (R == 1) return local;  // one worker owns every node: nothing to move (nor to copy)
  std::vector<std::int64_t> offsets;
  UninitVector<std::int64_t> ids, prio;
  local.flatten(&offsets, &ids, &prio);
  std::vector<std::vector<std::int64_t>> nodes_to(static_cast<std::size_t>(R)), ids_to(static_cast<std::size_t>(R)),
      prio_to(static_cast<std::size_t>(R));
  for (std::int64_t j = 0; j + 1 < static_cast<std::int64_t>(offsets.size()); ++j) {
    const auto w = static_cast<std::size_t>(j % R);
    for (std::int64_t t = offsets[static_cast<std::size_t>(j)]; t < offsets[static_cast<std::size_t>(j + 1)]; ++t) {
      nodes_to[w].push_back(j);
      ids_to[w].push_back(ids[static_cast<std::size_t>(t)]);
      prio_to[w].push_back(prio[static_cast<std::size_t>(t)]);
    }
  }
  std::vector<std::string> send(static_cast<std::size_t>(R));
  for (std::size_t w = 0; w < send.size(); ++w) {
    dist::MessageWriter m;
    m.put_array<std::int64_t>(nodes_to[w]);
    m.put_array<std::int64_t>(ids_to[w]);
    m.put_array<std::int64_t>(prio_to[w]);
    send[w] = m.take();
  }
  taxonomy::NodeSamples merged(n_nodes, k);
  for (const std::string& bytes : ex.alltoall(send)) {
    dist::MessageReader m(bytes, "sample message");
    const auto nodes = m.get_array<std::int64_t>();
    const auto sid = m.get_array<std::int64_t>();
    const auto sp = m.get_array<std::int64_t>();
    for (std::size_t t = 0; t < nodes.size(); ++t)
      merged.offer(nodes[t], static_cast<std::uint64_t>(sp[t]), sid[t]);
  }
  return merged;
}

// Test hook for the distributed tests: MEGATAX_TEST_CRASH_RANK=r and
// MEGATAX_TEST_CRASH_LEVEL=l make rank r kill itself (SIGKILL) in level l's assignment pass.
bool test_crash_here(int rank, int level) {
  const char* r = std::getenv("MEGATAX_TEST_CRASH_RANK");
  const char* l = std::getenv("MEGATAX_TEST_CRASH_LEVEL");
  return r != nullptr && l != nullptr && std::atoi(r) == rank && std::atoi(l) == level;
}

// A level's next samples in flat form (NodeSamples::flatten), as written to storage.
struct FlatSamples {
  std::vector<std::int64_t> offsets;
  UninitVector<std::int64_t> ids;  // (their priorities: sample_priority, not stored)
};

// One node's tally in a shard's pass: its points and their summed distance, side by side so
// that a row's bookkeeping touches one cache line (a wide level's nodes are scattered over
// megabytes: two arrays cost two misses a row).
struct NodeTally {
  std::int64_t count = 0;
  double inertia = 0.0;
};

// What one shard's assignment pass adds up: per touched node, points and summed distance.
struct ShardSummary {
  std::int64_t shard = 0;
  std::vector<std::int64_t> nodes, counts;
  std::vector<double> inertia;
};

// A shard's per-node tallies as a backend took them (ComputeBackend::take_tallies).
using TakenTallies = std::future<taxonomy::ComputeBackend::NodeTallies>;

// Moves the pass's per-node tallies of one shard into *sum, in node order, and resets them
// (and `touched`, the nodes with a non-zero count, each once, in any order). Node nd's is
// tally[nd * stride]. `tmp`: scratch.
void take_shard_summary(std::vector<std::int32_t>& touched, std::vector<NodeTally>& tally, std::size_t stride,
                        std::vector<std::int32_t>& tmp, ShardSummary* sum) {
  if (touched.size() < 1024) {
    std::sort(touched.begin(), touched.end());
  } else {
    taxonomy::sort_node_ids(touched, static_cast<std::int64_t>(tally.size() / stride), tmp);
  }
  sum->nodes.reserve(sum->nodes.size() + touched.size());
  sum->counts.reserve(sum->counts.size() + touched.size());
  sum->inertia.reserve(sum->inertia.size() + touched.size());
  for (const std::int32_t nd : touched) {
    NodeTally& t = tally[static_cast<std::size_t>(nd) * stride];
    sum->nodes.push_back(nd);
    sum->counts.push_back(t.count);
    sum->inertia.push_back(t.inertia);
    t = NodeTally{};
  }
  touched.clear();
}

// Children per parent of level l-1 (0: the parent stays a leaf), from the parents' point
// counts (all-reduced: every rank computes the same plan). Unbalanced: b_l for parents
// with at least b_l points. Balanced: b_j = clamp(round(b_l * count_j / mean), min, max)
// over the parents with at least min_node_size points, never more than the parent's
// points or its training sample (min(count_j, sample_capacity(l))).
std::vector<std::int64_t> plan_branching(const TaxonomyConfig& cfg, int l,
                                         const std::vector<std::int64_t>& counts) {
  const std::int64_t b = cfg.branching_at(l);
  std::vector<std::int64_t> branch(counts.size(), 0);
  if (!cfg.balance) {
    for (std::size_t j = 0; j < counts.size(); ++j) branch[j] = counts[j] >= b ? b : 0;
    return branch;
  }
  const std::int64_t min_node = std::max(cfg.min_node_size > 0 ? cfg.min_node_size : b, cfg.min_branching);
  const std::int64_t max_b = cfg.max_branching_at(l), cap = cfg.sample_capacity(l);
  double total = 0;
  std::int64_t splittable = 0;
  for (std::int64_t c : counts)
    if (c >= min_node) {
      total += static_cast<double>(c);
      ++splittable;
    }
  if (splittable == 0) return branch;
  const double mean = total / static_cast<double>(splittable);
  for (std::size_t j = 0; j < counts.size(); ++j) {
    const std::int64_t c = counts[j];
    if (c < min_node) continue;
    std::int64_t bj = std::llround(static_cast<double>(b) * static_cast<double>(c) / mean);
    bj = std::clamp(bj, cfg.min_branching, max_b);
    bj = std::min({bj, c, cap});
    branch[j] = bj >= 2 ? bj : 0;
  }
  return branch;
}

// Leaf-size cap of the last level: max_leaf_size, or 1.5 x N / prod(b_l).
std::int64_t leaf_cap(const TaxonomyConfig& cfg, std::int64_t n) {
  if (cfg.max_leaf_size > 0) return cfg.max_leaf_size;
  double leaves = 1;
  for (int l = 1; l <= cfg.n_levels; ++l) leaves *= static_cast<double>(cfg.branching_at(l));
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(1.5 * static_cast<double>(n) / leaves)));
}

// Dynamic splitting plan (last level): for every child with more than `cap` points, into how
// many siblings it is split (ceil(count / cap)); pieces[j][c] for child c of parent j (1 =
// kept). Returns the parents with at least one split child (ascending). Decided from the
// all-reduced counts: the same on every rank.
std::vector<std::int64_t> plan_splits(const taxonomy::TreeLevel& lv, const std::vector<std::int64_t>& child_counts,
                                      std::int64_t cap, std::vector<std::vector<std::int64_t>>* pieces) {
  std::vector<std::int64_t> parents;
  pieces->assign(lv.child_begin.size() - 1, {});
  for (std::size_t j = 0; j + 1 < lv.child_begin.size(); ++j) {
    const std::int64_t b = lv.child_begin[j], e = lv.child_begin[j + 1];
    bool any = false;
    std::vector<std::int64_t> p(static_cast<std::size_t>(e - b), 1);
    for (std::int64_t c = b; c < e; ++c) {
      const std::int64_t n = child_counts[static_cast<std::size_t>(c)];
      if (n > cap) {
        p[static_cast<std::size_t>(c - b)] = (n + cap - 1) / cap;
        any = true;
      }
    }
    if (!any) continue;
    (*pieces)[j] = std::move(p);
    parents.push_back(static_cast<std::int64_t>(j));
  }
  return parents;
}

}  // namespace

namespace {
// fn() on `ex`'s worker; with several workers a failure on one must stop all of them (no
// collective may hang): abort() rather than throw.
template <class F>
auto on_workers(dist::Executor& ex, F&& fn) -> decltype(fn()) {
  if (ex.workers() == 1) return fn();
  try {
    return fn();
  } catch (const std::exception& e) {
    ex.abort(e.what());
    throw;  // not reached (abort() does not return); the compiler cannot see that through the virtual call
  }
}
}  // namespace

FitReport TaxonomyEngine::fit(const std::string& input_uri, const std::string& output_uri,
                              const FitOptions& options) {
  // Several workers: nothing is committed past the last complete level of a failed fit.
  std::unique_ptr<dist::Executor> ex = dist::make_executor(options.executor);
  return on_workers(*ex, [&] { return fit_with(*ex, input_uri, output_uri, options); });
}

FitReport TaxonomyEngine::fit_with(dist::Executor& ex, const std::string& input_uri,
                                   const std::string& output_uri, const FitOptions& options) {
  Impl& s = *impl_;
  const auto t_fit = Clock::now();
  {  // the tree is about to change: predict's kept GPU levels would be stale
    std::lock_guard<std::mutex> lock(s.gpu_mutex);
    s.gpu_backend.reset();
  }
  const TaxonomyConfig& cfg = s.config;
  const int R = ex.workers(), me = ex.rank();
  const bool driver = ex.is_driver();
  auto log = [&](const std::string& m) {
    if (options.log && (driver || R == 1)) options.log(m);
  };
  auto log_worker = [&](const std::string& m) {  // every rank reports its own work
    if (options.log) options.log(R > 1 ? "rank " + std::to_string(me) + "/" + std::to_string(R) + ": " + m : m);
  };
  auto check_stop = [&]() {
    if (options.should_stop && options.should_stop())
      throw_error(ErrorCode::kCancelled, "fit interrupted; the last committed level is kept (resume to finish)");
  };
  Dataset data = Dataset::open(input_uri, read_options(s.config));
  const std::int64_t d = data.dim(), N = data.rows();
  if (cfg.dim != 0 && cfg.dim != d)
    throw_error(ErrorCode::kInvalidArgument, "dataset '" + input_uri + "' has dim " +
                                                 std::to_string(d) + ", config dim is " + std::to_string(cfg.dim));
  if (N < cfg.branching_at(1))
    throw_error(ErrorCode::kInvalidArgument, "dataset '" + input_uri + "' has " + std::to_string(N) +
                                                 " points, fewer than branching_factor " +
                                                 std::to_string(cfg.branching_at(1)) + " at level 1");
  check_unique_stems(data);
  for (const auto& shard : data.shards())
    if (shard.rows == 0)
      throw_error(ErrorCode::kInvalidArgument,
                  shard.path + ": the shard has no rows (remove it from the input)");
  const auto n_shards = static_cast<std::int64_t>(data.shards().size());
  std::string out_root;
  std::unique_ptr<Storage> out_storage = open_storage_for_uri(output_uri, &out_root);
  s.open_storage();
  Storage& st = *s.storage;
  const std::string manifest_path = s.path(kManifestName);
  const int L = cfg.n_levels;
  const kernels::KnnOptions knn = s.knn_options();
  auto owner = [&](std::int64_t node) { return static_cast<int>(node % R); };

  // ---- Fresh start or resume (every worker reads the same files) ----------------------
  int done = 0;
  bool complete = false;  // resuming a fit that already finished: nothing to redo
  taxonomy::NodeSamples samples;  // training samples of level done + 1 (owned nodes)
  json::Value manifest = json::Value::object();
  json::Value level_entries = json::Value::array();
  FitReport report;
  if (st.exists(manifest_path)) {
    if (!options.resume)
      throw_error(ErrorCode::kAlreadyExists,
                  "a taxonomy already exists at '" + cfg.storage_uri + "' (" + manifest_path +
                      "); pass --resume to continue it or choose another storage");
    manifest = json::parse(read_all(st, manifest_path), manifest_path);
    std::string why;
    TaxonomyConfig old = taxonomy::config_from_json(manifest["config"]);
    if (!taxonomy::same_model_config(old, cfg, &why))
      throw_error(ErrorCode::kFailedPrecondition, "cannot resume '" + cfg.storage_uri + "': " + why);
    if (!(manifest["dataset"] == dataset_json(data)))
      throw_error(ErrorCode::kFailedPrecondition,
                  "cannot resume '" + cfg.storage_uri + "': the input shards differ from the run being resumed");
    done = static_cast<int>(manifest["levels_done"].as_int());
    complete = manifest["status"].as_string() == "complete";
    level_entries = manifest["levels"];
    s.load_levels(done, d);
    if (done >= 1 && done < L) {
      std::vector<std::int64_t> sh;
      const std::string p = s.path(samples_prefix(done + 1));
      const auto offsets = io::read_npy_array<std::int64_t>(st, p + ".offsets.npy", &sh);
      const auto ids = io::read_npy_array<std::int64_t>(st, p + ".ids.npy", &sh);
      // Each id's priority is a function of the id (sample_priority), so the files hold
      // only the ids (a state that also wrote .priorities.npy resumes the same way).
      std::vector<std::int64_t> priorities(ids.size());
      for (std::size_t t = 0; t < ids.size(); ++t)
        priorities[t] = static_cast<std::int64_t>(sample_priority(ids[t], cfg.seed, done + 1));
      samples = taxonomy::NodeSamples::unflatten(cfg.sample_capacity(done + 1), offsets, ids, priorities);
    }
    report.resumed_from_level = done;
    log("resuming '" + cfg.storage_uri + "' after level " + std::to_string(done) +
        (R > 1 ? " on " + std::to_string(R) + " ranks" : ""));
  } else {
    s.tree = taxonomy::Tree(d, s.kernel_metric());
  }
  manifest.set("format", "mega-taxonomy");
  manifest.set("format_version", kTaxonomyFormatVersion);
  manifest.set("status", complete ? "complete" : "fitting");
  manifest.set("config", taxonomy::config_to_json(cfg));
  manifest.set("dim", d);
  manifest.set("dataset", dataset_json(data));

  // Removes what a failed fresh single-process fit wrote before its first commit.
  auto cleanup_uncommitted = [&]() noexcept {
    try {
      if (R > 1 || st.exists(manifest_path)) return;
      for (const auto& name : st.list(s.path(state_dir(1)))) st.remove(s.path(state_dir(1) + name));
      st.remove(s.path(state_dir(1)));
      st.remove(s.path("state"));
    } catch (...) {
    }
  };

  // Where the kernels run (CPU, or this rank's GPU); after the resume checks, so that a
  // resume on another device is refused as such.
  const std::unique_ptr<taxonomy::ComputeBackend> backend =
      taxonomy::make_compute_backend(cfg.device, cfg.gpu_dtype, cfg.gpu, data.dtype());
  if (cfg.device != "cpu") log_worker("kernels on " + backend->describe());
  if (const unsigned online = std::thread::hardware_concurrency();
      cfg.threads <= 0 && static_cast<unsigned>(hardware_threads()) < online) {
    // A launcher's binding or the node's other ranks narrowed the default (core/parallel.h).
    log_worker("threads: " + std::to_string(hardware_threads()) + " of the node's " + std::to_string(online) +
               " CPUs (this process may run on " + std::to_string(allowed_cpus()) + ", the job has " +
               std::to_string(node_local_ranks()) + " processes on the node; --threads sets it)");
  }
  // What the GPU multiplied in ("auto" resolved against the data): a GPU predict with
  // gpu_dtype auto uses it (Impl::predict_gpu_dtype).
  if (cfg.device == "cuda") manifest.set("gpu_compute_dtype", dtype_name(backend->compute_dtype()));
  // Trains many node problems per launch when the backend can (the CUDA one).
  const std::unique_ptr<cluster::BatchKMeansDevice> batch_kmeans = backend->make_batch_kmeans(s.kernel_metric());
  // More of them (each its own stream and buffers): batches train that many at a time, one's
  // kernels filling the gaps of the others' host round trips (the training lanes below).
  // MEGATAX_TRAIN_LANES = 1..8 (default 2).
  std::vector<std::unique_ptr<cluster::BatchKMeansDevice>> more_lanes;
  if (batch_kmeans != nullptr) {
    const auto lanes = env_int("MEGATAX_TRAIN_LANES", 1, 8).value_or(2);
    for (int i = 1; i < lanes; ++i) more_lanes.push_back(backend->make_batch_kmeans(s.kernel_metric()));
  }
  std::vector<float> batch_buffer;  // reused by every shard's BatchReader (run_shards is serial per worker)
  std::vector<unsigned char> stored_buffer;  // the same, for batches kept in their stored dtype
  std::int64_t points_levels = 0;
  // A level's commit that goes on while the next level trains (one process; see step 4).
  BackgroundJobs pending_commit(1);
  std::future<UninitVector<float>> next_level_array;  // the next level's centroid array, being made
  double background_commit_s = 0;  // the last deferred commit's seconds (set by its job)
  // A deferred commit's samples are flattened from `samples` (once the level's `next` has
  // moved there) while the next level trains; `samples` changes only after this is done.
  std::future<void> samples_flattening;
  auto samples_settled = [&samples_flattening] {
    if (samples_flattening.valid()) samples_flattening.get();
  };
  for (int l = done + 1; l <= L; ++l) {
    const auto t_level = Clock::now();
    LevelReport lr;
    lr.level = l;
    log("level " + std::to_string(l) + "/" + std::to_string(L) + ": training");
    // ---- 1. Samples: level 1 by id slices, routed to the root's owner -----------------
    if (l == 1) {
      taxonomy::NodeSamples local(1, cfg.sample_capacity(1));
      const std::int64_t id0 = N * me / R, id1 = N * (me + 1) / R;
      for (std::int64_t id = id0; id < id1; ++id) local.offer(0, sample_priority(id, cfg.seed, 1), id);
      samples = route_samples(std::move(local), ex, 1, cfg.sample_capacity(1));
    }
    const std::int64_t n_parents = s.tree.nodes(l - 1);
    const std::vector<std::int64_t> parent_counts =
        l == 1 ? std::vector<std::int64_t>{N} : s.tree.level(l - 1).count;
    std::vector<std::int64_t> branch = plan_branching(cfg, l, parent_counts);
    std::vector<std::int64_t> to_train;  // parents (re)trained in this round
    for (std::int64_t j = 0; j < n_parents; ++j)
      if (branch[static_cast<std::size_t>(j)] > 0) to_train.push_back(j);
    lr.split_parents = static_cast<std::int64_t>(to_train.size());
    std::vector<std::vector<float>> parent_centroids(static_cast<std::size_t>(n_parents));
    std::vector<std::vector<std::int64_t>> pieces;  // split round: siblings per child
    const bool collect = l < L;
    const std::int64_t next_k = collect ? cfg.sample_capacity(l + 1) : 1;
    taxonomy::NodeSamples next;
    std::int64_t n_nodes = 0;
    std::vector<std::int64_t> counts;
    std::vector<double> inertia;
    const std::int64_t cap_leaf = cfg.balance && l == L ? leaf_cap(cfg, N) : 0;
    // When no round can follow the first and one process trains every parent, the level's
    // centroids file is final as the groups come out of training: it is streamed to storage
    // meanwhile (a deep level's are gigabytes: its disk time then overlaps the training
    // instead of the pass). The pieces are the trained buffers themselves (in `trained`, then
    // `parent_centroids`, or `level_centroids`, then the tree: all declared before the stream,
    // so they outlive it).
    std::vector<std::vector<float>> trained;  // a round's centroids, per parent it trains
    // One process training on a batch device: the level's centroid array itself, which the
    // batches train into (parent u of `mine` at level_offset[u]) instead of `trained`.
    UninitVector<float> level_centroids;
    std::vector<std::size_t> level_offset;
    bool in_place = false;
    std::string centroid_header;
    std::optional<io::StreamedWrite> centroid_stream;
    if (driver && R == 1 && l >= 2 && (cap_leaf == 0 || cfg.max_split_rounds == 0) && cfg.lloyd_passes == 0) {
      std::int64_t planned = 0;
      for (std::int64_t j : to_train) planned += branch[static_cast<std::size_t>(j)];
      const std::int64_t shape[2] = {planned, d};
      centroid_header = io::make_npy_header("<f4", shape);
      centroid_stream.emplace(st, s.path(level_dir(l) + "centroids.npy"));
      centroid_stream->append(centroid_header.data(), centroid_header.size());
    }
    // Appends the centroids of mine[u0, u1) to the stream (in parent order: the level's
    // concatenation).
    auto stream_trained = [&](std::size_t u0, std::size_t u1) {
      if (!centroid_stream) return;
      if (in_place) {
        centroid_stream->append(level_centroids.data() + level_offset[u0],
                                (level_offset[u1] - level_offset[u0]) * sizeof(float));
        return;
      }
      for (std::size_t u = u0; u < u1; ++u) centroid_stream->append(trained[u].data(), trained[u].size() * sizeof(float));
    };
    // The driver's write of the level's final centroids, run while the pass goes on (a deep
    // level's are gigabytes); the commit waits for it before the manifest. Declared before
    // the rounds so that an error anywhere in the level finishes it before `s` goes.
    BackgroundJobs centroid_write(1);
    bool centroids_written = false;
    auto write_centroids = [&st, &s, &centroid_stream, &centroid_header, l, d] {
      const taxonomy::TreeLevel& lv = s.tree.level(l);
      if (centroid_stream) {  // streamed: the same bytes, already on their way
        const std::uint64_t want = centroid_header.size() + lv.centroids.size() * sizeof(float);
        if (centroid_stream->appended() != want)
          throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": " +
                                                std::to_string(centroid_stream->appended()) +
                                                " centroid bytes streamed, " + std::to_string(want) + " expected");
        centroid_stream->finish();
        return;
      }
      const std::int64_t shape[2] = {lv.nodes(), d};
      write_npy(st, s.path(level_dir(l) + "centroids.npy"), std::span<const float>(lv.centroids), shape);
    };
    bool outputs_written = false;  // the last level's pass wrote the outputs (no state files)
    for (int round = 0;; ++round) {
    // ---- 2. Train the parents this worker owns; everyone gets every centroid ----------
    std::vector<std::int64_t> mine;  // parents to train that this worker owns
    for (std::int64_t j : to_train)
      if (owner(j) == me) mine.push_back(j);
    trained.assign(mine.size(), {});
    const auto t_train = Clock::now();
    // Where training time goes, summed over the node problems (thread-seconds).
    std::mutex breakdown_mutex;
    double gather_s = 0, seed_s = 0, kassign_s = 0, update_s = 0;
    // batched: seeding's device calls, host parts (of the runs: the pools handed to the device)
    double seed_device_s = 0, seed_runs_s = 0, seed_pools_s = 0, seed_chosen_s = 0;
    // batched: points to the device; inside fit_kmeans_batch (a lane gathers its own group's
    // samples before its batch: `gather_s` is what the lanes waited for them)
    double prepare_s = 0, batch_s = 0, collect_s = 0;
    double ahead_s = 0;  // batched, kept rows: the addresses' thread (`gather_s` has the lanes' waits)
    // batched, rows read on the host: batches read while the lane's batch before trained, and
    // those reads' own seconds (`gather_s` has the lanes' waits for them)
    std::int64_t read_ahead_batches = 0;
    double read_ahead_s = 0;
    double setup_s = 0;  // batched, one process: the level's centroid array allocated
    std::int64_t seed_steps = 0;
    auto add_breakdown = [&](double g, const cluster::KMeansResult& r) {
      std::lock_guard<std::mutex> lock(breakdown_mutex);
      gather_s += g;
      seed_s += r.seed_seconds;
      kassign_s += r.assign_seconds;
      update_s += r.update_seconds;
    };
    // Samples as stored (f16/bf16) when the backend computes in that dtype and nothing
    // normalises them: half the bytes, no conversion on the way to the device.
    const bool stored = !s.normalise() && backend->takes_stored_rows(data.dtype());
    // Rows of another dtype than the backend multiplies in are converted to its dtype as the
    // pass reads them (and kept so: BatchReader::convert_into), and gathered so here.
    const DType compute = backend->compute_dtype();
    const bool converted = !s.normalise() && !stored && backend->takes_stored_rows(compute);
    const DType x_dtype = stored ? data.dtype() : converted ? compute : DType::kF32;
    // The node problem of `parent` (b children) in the first round.
    auto node_params = [&](std::int64_t parent, std::int64_t b, int threads) {
      cluster::KMeansParams kp;
      kp.k = b;
      kp.max_iter = cfg.max_iter;
      kp.tol = cfg.tol;
      kp.seed = hash64(cfg.seed, static_cast<std::uint64_t>(l), static_cast<std::uint64_t>(parent));
      kp.metric = s.kernel_metric();
      kp.spherical = cfg.metric != TaxonomyMetric::kL2;
      kp.final_assignment = false;  // the level's assignment pass re-assigns every point
      kp.threads = threads;
      return kp;
    };
    bool batched = false;
    std::size_t lanes_used = 0;  // batched: device objects training batches at once
    {
      const std::int64_t budget_rows = std::max<std::int64_t>(
          1, cfg.memory_budget_mb * (std::int64_t{1} << 20) / (d * static_cast<std::int64_t>(dtype_size(x_dtype))));
      Progress bar("level " + std::to_string(l) + "/" + std::to_string(L) + " train",
                   static_cast<std::int64_t>(mine.size()), "nodes", options.progress);
      // A group of parents from g0 whose samples fit the memory budget (at least one):
      // returns its end; *rows = their samples' total.
      auto group_end = [&](std::size_t g0, std::int64_t* rows) {
        std::size_t g1 = g0;
        *rows = 0;
        while (g1 < mine.size()) {
          const std::int64_t m = samples.size(mine[g1]);
          if (g1 > g0 && *rows + m > budget_rows) break;
          *rows += m;
          ++g1;
        }
        return g1;
      };
      // The same with the parents' sample ids.
      auto next_group = [&](std::size_t g0, std::vector<std::vector<std::int64_t>>* ids) {
        std::int64_t rows = 0;
        const std::size_t g1 = group_end(g0, &rows);
        ids->clear();
        for (std::size_t u = g0; u < g1; ++u) ids->push_back(samples.ids(mine[u]));
        return g1;
      };
      if (batch_kmeans != nullptr && round == 0) {
        // Each group's problems at once on the device (one launch per step for all of them),
        // several groups at a time (the lanes below: one group held per lane).
        batched = true;
        if (R == 1) {
          // The level's array, made while the level before committed (else now).
          const auto t_setup = Clock::now();
          in_place = true;
          level_offset.assign(mine.size() + 1, 0);
          for (std::size_t u = 0; u < mine.size(); ++u)
            level_offset[u + 1] = level_offset[u] + static_cast<std::size_t>(branch[static_cast<std::size_t>(mine[u])] * d);
          if (next_level_array.valid()) level_centroids = next_level_array.get();  // made while level l - 1 committed
          if (level_centroids.size() != level_offset.back())
            level_centroids = make_level_array(level_offset.back(), cfg.threads);
          setup_s += since(t_setup);
        }
        struct Group {
          std::size_t g0 = 0, g1 = 0;
          std::vector<std::vector<unsigned char>> xs;
          std::vector<MatrixView> views;
          std::vector<cluster::KMeansParams> kps;
          std::vector<const void*> rows_at;  // the rows' device addresses when the device keeps them all
          double seconds = 0;
        };
        // The samples' rows straight from the device when the pass keeps the data there
        // (no host read, no copy over the bus; the host never needs a row: caller memory for
        // the centroids, seeds kept on the device, no spherical k-means). The pass keeps rows
        // in the dtype the backend multiplies in, as stored or converted to it: x_dtype, the
        // values the host's gather gives.
        const bool kept_as_x = !s.normalise() && backend->takes_stored_rows(x_dtype);
        const bool try_kept = in_place && kept_as_x && cfg.metric == TaxonomyMetric::kL2 &&
                              batch_kmeans->can_seed() && batch_kmeans->takes_device_rows(x_dtype);
        // Gathers group [g0, g1) (ids: its parents' sample ids): their device addresses when
        // try_kept and the device keeps them all, else the rows into `buffer` when the device
        // offers one (problems one after the other: one copy to the device), else into
        // vectors of its own (kAny). kKeptOnly: the addresses or nothing (rows_at empty: the
        // device does not keep them all); kReadOnly: the rows read (the addresses known missing).
        enum class Gather { kAny, kKeptOnly, kReadOnly };
        auto gather_group = [&](std::size_t g0, std::size_t g1, unsigned char* buffer, Gather how) {
          const auto t_gather = Clock::now();
          Group gr;
          gr.g0 = g0;
          gr.g1 = g1;
          const auto n_group = static_cast<std::int64_t>(g1 - g0);
          const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(x_dtype);
          std::vector<std::size_t> offset(static_cast<std::size_t>(n_group) + 1, 0);
          for (std::size_t u = 0; u < static_cast<std::size_t>(n_group); ++u)
            offset[u + 1] = offset[u] + static_cast<std::size_t>(samples.size(mine[g0 + u])) * row_bytes;
          std::vector<std::vector<std::int64_t>> ids(static_cast<std::size_t>(n_group));
          gr.views.resize(static_cast<std::size_t>(n_group));
          gr.kps.resize(static_cast<std::size_t>(n_group));
          const int outer = resolve_threads(cfg.threads, n_group);
          const int inner_threads = std::max(1, resolve_threads(cfg.threads, 1 << 20) / std::max(1, outer));
          // Problem u's ids (sorted: thousands per parent, on these threads) and its shape.
          auto check_sample = [&](std::size_t u) {
            ids[u] = samples.ids(mine[g0 + u]);
            const auto m = static_cast<std::int64_t>(ids[u].size());
            const std::int64_t parent = mine[g0 + u];
            const std::int64_t b = branch[static_cast<std::size_t>(parent)];
            if (m < b)
              throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": node " + std::to_string(parent) +
                                                    " has a sample of " + std::to_string(m) + " < " + std::to_string(b));
            gr.views[u] = MatrixView(nullptr, m, d, x_dtype);
            gr.kps[u] = node_params(parent, b, 1);
          };
          const bool kept = try_kept && how != Gather::kReadOnly;
          if (kept) {
            gr.rows_at.resize(offset.back() / row_bytes);
            std::atomic<bool> all_kept{true};
            parallel_for(outer, n_group, [&](std::int64_t t, int) {
              const auto u = static_cast<std::size_t>(t);
              check_sample(u);
              if (!kept_row_addresses(data, *backend, ids[u], gr.rows_at.data() + offset[u] / row_bytes))
                all_kept = false;
            });
            if (all_kept) {
              gr.seconds = since(t_gather);
              return gr;
            }
            gr.rows_at.clear();  // read them after all
            if (how == Gather::kKeptOnly) return gr;
          }
          if (buffer == nullptr) gr.xs.resize(static_cast<std::size_t>(n_group));
          parallel_for(outer, n_group, [&](std::int64_t t, int) {
            const auto u = static_cast<std::size_t>(t);
            if (!kept) check_sample(u);  // (else done above)
            const auto m = static_cast<std::int64_t>(ids[u].size());
            unsigned char* x = buffer;
            if (x != nullptr) {
              x += offset[u];
            } else {
              gr.xs[u].resize(static_cast<std::size_t>(m) * row_bytes);
              x = gr.xs[u].data();
            }
            gather_rows(data, ids[u], x, x_dtype, n_group > 1 ? inner_threads : cfg.threads);
            if (s.normalise())
              taxonomy::normalise_rows(reinterpret_cast<float*>(x), m, d, n_group > 1 ? inner_threads : cfg.threads);
            gr.views[u] = MatrixView(x, m, d, x_dtype);
          });
          gr.seconds = since(t_gather);
          return gr;
        };
        // Lanes: each device object trains whole batches, one after the other, on a thread
        // and a stream of its own; with several, one's kernels fill the gaps of the others'
        // host round trips (each step of a batch waits for its results). Batches are cut in parent
        // order; which lane trains one changes no bit (a problem's result depends on its own
        // points only). In place, a batch's centroids land in the array while its lane's next
        // batch trains (fit_kmeans_batch's centroids_later); batches are streamed in parent
        // order once landed. A lane ends with its last read-back landed, whatever happens.
        std::vector<cluster::BatchKMeansDevice*> lanes{batch_kmeans.get()};
        for (const auto& more : more_lanes)
          if (lanes.size() < mine.size()) lanes.push_back(more.get());
        lanes_used = lanes.size();
        // Rows kept in host memory are gathered over the bus by a few of the GPU's cores: one
        // lane's gather then runs beside the other's kernels instead of taking every core.
        for (cluster::BatchKMeansDevice* lane : lanes) lane->set_rows_over_bus(try_kept && backend->keeps_rows_on_host());
        // The batches: parents [cut[b], cut[b + 1]) with their samples' rows.
        std::vector<std::size_t> cut{0};
        std::vector<std::int64_t> cut_rows;
        while (cut.back() < mine.size()) {
          std::int64_t rows = 0;
          cut.push_back(group_end(cut.back(), &rows));
          cut_rows.push_back(rows);
        }
        const std::size_t n_batches = cut_rows.size();
        if (in_place) {  // each lane's read-back buffers for the level's largest batch, made meanwhile
          std::size_t most = 0;
          for (std::size_t b = 0; b < n_batches; ++b) {
            std::size_t floats = 0;
            for (std::size_t u = cut[b]; u < cut[b + 1]; ++u)
              floats += static_cast<std::size_t>(branch[static_cast<std::size_t>(mine[u])] * d);
            most = std::max(most, floats);
          }
          for (cluster::BatchKMeansDevice* lane : lanes) lane->expect_read_backs(most);
        }
        // Kept rows: one thread finds the batches' device addresses (sorted sample ids looked
        // up: milliseconds a batch), up to kAhead batches ahead of the lanes' claims, so that a
        // lane's batch starts training at once.
        struct Ahead {
          std::mutex mu;
          std::condition_variable changed;
          std::vector<std::optional<Group>> groups;  // by batch; taken (reset) by its lane
          std::size_t claimed = 0;                   // batches claimed by the lanes
          bool stop = false;
          std::exception_ptr error;
        } ahead;
        constexpr std::size_t kAhead = 2;
        ahead.groups.resize(n_batches);
        bool finding = false;  // the thread runs (set before the lanes start)
        auto find_addresses = [&] {
          try {
            for (std::size_t b = 0; b < n_batches; ++b) {
              {
                std::unique_lock<std::mutex> lock(ahead.mu);
                ahead.changed.wait(lock, [&] { return ahead.stop || b < ahead.claimed + kAhead; });
                if (ahead.stop) return;
              }
              Group gr = gather_group(cut[b], cut[b + 1], nullptr, Gather::kKeptOnly);
              std::lock_guard<std::mutex> lock(ahead.mu);
              ahead.groups[b] = std::move(gr);
              ahead.changed.notify_all();
            }
          } catch (...) {
            std::lock_guard<std::mutex> lock(ahead.mu);
            ahead.error = std::current_exception();
            ahead.changed.notify_all();
          }
        };
        // Batch b's addresses found ahead (the thread's error, if any, thrown here).
        auto take_addresses = [&](std::size_t b) {
          std::unique_lock<std::mutex> lock(ahead.mu);
          ahead.changed.wait(lock, [&] { return ahead.error != nullptr || ahead.groups[b].has_value(); });
          if (ahead.error != nullptr) std::rethrow_exception(ahead.error);
          Group gr = std::move(*ahead.groups[b]);
          ahead.groups[b].reset();
          return gr;
        };
        struct Batch {
          std::size_t g0 = 0, g1 = 0;
          bool landed = false;  // its centroids are where they go
        };
        std::mutex lane_mutex;  // guards what follows, the times and `trained`, the stream
        std::size_t next_batch = 0;         // the next batch to claim
        std::vector<Batch> batches;         // in parent order
        std::size_t streamed = 0;           // batches[0, streamed) are streamed
        std::exception_ptr lane_error;      // the first lane's failure
        constexpr std::size_t kNone = static_cast<std::size_t>(-1);
        auto stream_landed = [&] {  // under lane_mutex
          for (; streamed < batches.size() && batches[streamed].landed; ++streamed)
            stream_trained(batches[streamed].g0, batches[streamed].g1);
        };
        // Claims the next batch for a lane: kNone when none is left or a lane failed.
        auto claim_batch = [&]() -> std::size_t {
          std::lock_guard<std::mutex> lock(lane_mutex);
          if (lane_error != nullptr || next_batch >= n_batches) return kNone;
          const std::size_t b = next_batch++;
          batches.push_back({cut[b], cut[b + 1], false});
          return b;
        };
        // Claimed batch b's kept rows' addresses when the thread finds them (else none), the
        // wait for them in its `seconds`, the thread's time for them in *found_s.
        auto claimed_addresses = [&](std::size_t b, double* found_s) {
          Group gr;
          if (finding) {
            const auto t_wait = Clock::now();
            {
              std::lock_guard<std::mutex> lock(ahead.mu);
              ahead.claimed = std::max(ahead.claimed, b + 1);
              ahead.changed.notify_all();
            }
            gr = take_addresses(b);
            *found_s = gr.seconds;
            gr.seconds = since(t_wait);
          }
          return gr;
        };
        // A lane claims its next batch as it starts one and has its rows gathered while this
        // one trains: kept rows read over the bus (kept in host memory) by the device
        // (prefetch_from_device), rows read from the shards by the host into the lane's
        // other points buffer (not when kept rows were not looked for ahead: then a batch's
        // rows may or may not be kept, found out as it is read).
        // Each read ahead runs on every thread, beside the other lanes' reads and host work: on
        // fewer (the cores left after one a lane, shared) the lanes' host work ran sooner but the
        // reads took longer than the batches they hid behind (H200 host, session 45).
        const bool gather_ahead = try_kept && backend->keeps_rows_on_host();
        auto points_bytes = [&](std::size_t b) { return static_cast<std::size_t>(cut_rows[b] * d) * dtype_size(x_dtype); };
        auto run_lane = [&](std::size_t lane) {
          cluster::BatchKMeansDevice& dev = *lanes[lane];
          std::size_t landing = kNone;  // this lane's batch whose read-back is under way
          std::size_t next = kNone;     // its batch claimed ahead, with:
          Group next_gr;                // its kept rows' addresses (or none), and
          double next_found_s = 0;
          std::future<Group> next_read;  // its rows being read into points buffer 1 - slot
          int slot = 0;                  // the points buffer of the batch in hand, when read
          const bool read_ahead = !try_kept || finding;  // (`finding` is set as the lanes start)
          try {
            for (;;) {
              check_stop();
              std::size_t b = next;
              Group gr;
              double found_s = 0;  // the addresses' thread's time for this batch
              bool have_rows = false;  // its rows read ahead
              if (b != kNone) {
                found_s = next_found_s;
                next = kNone;
                if (next_read.valid()) {
                  const auto t_wait = Clock::now();
                  gr = next_read.get();
                  const double read_s = gr.seconds;
                  gr.seconds = since(t_wait) + next_gr.seconds;
                  slot = 1 - slot;
                  have_rows = true;
                  std::lock_guard<std::mutex> lock(lane_mutex);
                  ++read_ahead_batches;
                  read_ahead_s += read_s;
                } else {
                  gr = std::move(next_gr);
                }
              } else {
                b = claim_batch();
                if (b == kNone) break;
                gr = claimed_addresses(b, &found_s);
              }
              const std::size_t g0 = cut[b], g1 = cut[b + 1];
              const bool kept_rows = !gr.rows_at.empty();
              if (kept_rows ? gather_ahead && finding : read_ahead) {
                next = claim_batch();
                if (next != kNone) {
                  next_gr = claimed_addresses(next, &next_found_s);
                  if (!next_gr.rows_at.empty()) {
                    if (gather_ahead) dev.prefetch_from_device(next_gr.views, next_gr.rows_at);
                  } else if (read_ahead) {
                    unsigned char* buffer = dev.points_buffer(kept_rows ? slot : 1 - slot, points_bytes(next));
                    if (kept_rows) slot = 1 - slot;  // (this batch's rows are not in a points buffer)
                    next_read = std::async(std::launch::async, [&, n0 = cut[next], n1 = cut[next + 1], buffer] {
                      return gather_group(n0, n1, buffer, finding ? Gather::kReadOnly : Gather::kAny);
                    });
                  }
                }
              }
              if (!kept_rows && !have_rows) {  // read now (not every row kept, or not looked for)
                // Into the device's buffer; kept rows not looked for ahead need none (were one
                // missing after all, the group reads into its own).
                unsigned char* buffer = try_kept && !finding ? nullptr : dev.points_buffer(slot, points_bytes(b));
                const double waited_s = gr.seconds;
                gr = gather_group(g0, g1, buffer, finding ? Gather::kReadOnly : Gather::kAny);
                gr.seconds += waited_s;
              }
              cluster::BatchKMeansTimes bt;
              const auto t_batch = Clock::now();
              std::vector<float*> out;
              if (in_place)
                for (std::size_t u = g0; u < g1; ++u) out.push_back(level_centroids.data() + level_offset[u]);
              auto results = cluster::fit_kmeans_batch(gr.views, gr.kps, dev, cfg.threads, &bt, out, gr.rows_at, in_place);
              const double batch_seconds = since(t_batch);
              std::lock_guard<std::mutex> lock(lane_mutex);
              gather_s += gr.seconds;
              ahead_s += found_s;
              batch_s += batch_seconds;
              seed_s += bt.seeding;
              seed_device_s += bt.seeding_device;
              seed_runs_s += bt.seeding_runs;
              seed_pools_s += bt.seeding_pools;
              seed_chosen_s += bt.seeding_chosen;
              seed_steps += bt.seeding_steps;
              prepare_s += bt.prepare;
              kassign_s += bt.assign;
              update_s += bt.update;
              collect_s += bt.collect;
              for (std::size_t u = 0; u < results.size(); ++u) trained[g0 + u] = std::move(results[u].centroids);
              if (in_place) {  // the lane's batch before landed as this one's read-back started
                if (landing != kNone) batches[landing].landed = true;
                landing = b;
              } else {
                batches[b].landed = true;
              }
              stream_landed();
              bar.add(static_cast<std::int64_t>(results.size()));
            }
            const auto t_landed = Clock::now();
            dev.centroids_landed();
            std::lock_guard<std::mutex> lock(lane_mutex);
            collect_s += since(t_landed);
            if (landing != kNone) batches[landing].landed = true;
            stream_landed();
          } catch (...) {
            try {
              dev.centroids_landed();
            } catch (...) {  // (the first error is the one reported)
            }
            std::lock_guard<std::mutex> lock(lane_mutex);
            if (lane_error == nullptr) lane_error = std::current_exception();
          }
        };
        {
          std::thread finder;
          if (try_kept) {
            try {
              finder = std::thread(find_addresses);
              finding = true;
            } catch (const std::system_error&) {  // no thread: each lane finds its own
            }
          }
          std::vector<std::thread> lane_threads;
          try {
            for (std::size_t i = 1; i < lanes.size(); ++i) lane_threads.emplace_back(run_lane, i);
          } catch (const std::system_error&) {  // no more threads: the lanes started take every batch
          }
          run_lane(0);
          for (auto& t : lane_threads) t.join();
          if (finder.joinable()) {
            {
              std::lock_guard<std::mutex> lock(ahead.mu);
              ahead.stop = true;
              ahead.changed.notify_all();
            }
            finder.join();
          }
        }
        if (lane_error != nullptr) std::rethrow_exception(lane_error);
        if (streamed != batches.size())
          throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": " + std::to_string(batches.size() - streamed) +
                                                " trained batches not streamed");
      }
      std::size_t g0 = batched ? mine.size() : 0;
      while (g0 < mine.size()) {
        check_stop();
        std::vector<std::vector<std::int64_t>> ids;
        const std::size_t g1 = next_group(g0, &ids);
        const auto n_group = static_cast<std::int64_t>(g1 - g0);
        const int outer = backend->concurrent_training() ? resolve_threads(cfg.threads, n_group) : 1;
        parallel_for(n_group > 1 ? outer : 1, n_group, [&](std::int64_t t, int) {
          const auto& node_ids = ids[static_cast<std::size_t>(t)];
          const auto m = static_cast<std::int64_t>(node_ids.size());
          const std::int64_t parent = mine[g0 + static_cast<std::size_t>(t)];
          const std::int64_t b = branch[static_cast<std::size_t>(parent)];
          // Concurrent problems share the threads: a group smaller than the thread count
          // (the memory budget bounds it) still keeps every core busy.
          kernels::KnnOptions inner = knn;
          inner.threads = n_group > 1 && outer > 1
                              ? std::max(1, resolve_threads(cfg.threads, 1 << 20) / outer)
                              : cfg.threads;
          if (round > 0) {
            // Split round: partition the parent's sample among its current children and
            // split each oversized child by k-means on its part; siblings stay in place.
            std::vector<float> x(static_cast<std::size_t>(m * d));
            gather_rows(data, node_ids, x.data(), DType::kF32, inner.threads);
            if (s.normalise()) taxonomy::normalise_rows(x.data(), m, d, inner.threads);
            const std::vector<float>& old = parent_centroids[static_cast<std::size_t>(parent)];
            const std::int64_t b_old = static_cast<std::int64_t>(old.size()) / d;
            kernels::PackedMatrix pm(d, DType::kF32);
            pm.append(f32_view(old.data(), b_old, d));
            std::vector<std::int64_t> label(static_cast<std::size_t>(m));
            std::vector<float> dd(static_cast<std::size_t>(m));
            kernels::nearest(f32_view(x.data(), m, d), pm, s.kernel_metric(), label.data(), dd.data(), inner);
            const auto& p = pieces[static_cast<std::size_t>(parent)];
            std::vector<float> out;
            for (std::int64_t c = 0; c < b_old; ++c) {
              const float* keep = old.data() + c * d;
              std::vector<float> rows;
              if (p[static_cast<std::size_t>(c)] > 1)
                for (std::int64_t i = 0; i < m; ++i)
                  if (label[static_cast<std::size_t>(i)] == c) rows.insert(rows.end(), x.data() + i * d, x.data() + (i + 1) * d);
              const std::int64_t rc = static_cast<std::int64_t>(rows.size()) / d;
              const std::int64_t k = std::min(p[static_cast<std::size_t>(c)], rc);
              if (k < 2) {
                out.insert(out.end(), keep, keep + d);
                continue;
              }
              cluster::KMeansParams kp;
              kp.k = k;
              kp.max_iter = cfg.max_iter;
              kp.tol = cfg.tol;
              kp.seed = hash64(hash64(cfg.seed, static_cast<std::uint64_t>(l), static_cast<std::uint64_t>(parent)),
                               static_cast<std::uint64_t>(round), static_cast<std::uint64_t>(c));
              kp.metric = s.kernel_metric();
              kp.spherical = cfg.metric != TaxonomyMetric::kL2;
          kp.final_assignment = false;  // the level's assignment pass re-assigns every point
              kp.threads = inner.threads;
              const auto assigner = backend->make_assigner(s.kernel_metric(), inner);
              auto r = cluster::fit_kmeans(f32_view(rows.data(), rc, d), kp, *assigner);
              out.insert(out.end(), r.centroids.begin(), r.centroids.end());
            }
            trained[g0 + static_cast<std::size_t>(t)] = std::move(out);
            bar.add(1);
            return;
          }
          if (m < b)
            throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": node " + std::to_string(parent) +
                                                  " has a sample of " + std::to_string(m) + " < " + std::to_string(b));
          const auto t_gather = Clock::now();
          std::vector<unsigned char> x(static_cast<std::size_t>(m * d) * dtype_size(x_dtype));
          gather_rows(data, node_ids, x.data(), x_dtype, inner.threads);
          if (s.normalise()) taxonomy::normalise_rows(reinterpret_cast<float*>(x.data()), m, d, inner.threads);
          const double gathered = since(t_gather);
          const cluster::KMeansParams kp = node_params(parent, b, inner.threads);
          const auto assigner = backend->make_assigner(s.kernel_metric(), inner);
          auto r = cluster::fit_kmeans(MatrixView(x.data(), m, d, x_dtype), kp, *assigner);
          add_breakdown(gathered, r);
          trained[g0 + static_cast<std::size_t>(t)] = std::move(r.centroids);
          bar.add(1);
        });
        stream_trained(g0, g1);
        g0 = g1;
      }
    }
    lr.train_seconds += since(t_train);
    const auto t_tree = Clock::now();
    if (!mine.empty())
      log_worker("level " + std::to_string(l) + ": trained " + std::to_string(mine.size()) + " nodes in " +
                 std::to_string(since(t_train)) + " s (" +
                 (batched ? "batched on the device, " + std::to_string(lanes_used) + " lane(s), seconds summed over them"
                          : std::string("thread-seconds")) + ": gather " + std::to_string(gather_s) +
                 (ahead_s > 0 ? " (addresses found ahead in " + std::to_string(ahead_s) + ")" : std::string()) +
                 (read_ahead_batches > 0 ? " (" + std::to_string(read_ahead_batches) +
                                               " batches read ahead on the host in " + std::to_string(read_ahead_s) + ")"
                                         : std::string()) +
                 (batched ? ", centroid array " + std::to_string(setup_s) +
                                ", batches " + std::to_string(batch_s) + ": prepare " + std::to_string(prepare_s)
                          : std::string()) +
                 ", seeding " + std::to_string(seed_s) +
                 (batched ? " (" + std::to_string(seed_steps) + " steps, device calls " + std::to_string(seed_device_s) +
                                ", host runs " + std::to_string(seed_runs_s) + " (pools to the device " +
                                std::to_string(seed_pools_s) + "), chosen " + std::to_string(seed_chosen_s) + ")"
                          : std::string()) +
                 ", assign " + std::to_string(kassign_s) +
                 ", update " + std::to_string(update_s) +
                 (batched ? ", collect " + std::to_string(collect_s) : std::string()) + ")");
    for (std::size_t lane = 0; lane <= more_lanes.size(); ++lane) {
      cluster::BatchKMeansDevice* dev = lane == 0 ? batch_kmeans.get() : more_lanes[lane - 1].get();
      const std::string inside = dev != nullptr ? dev->take_breakdown() : std::string();
      if (!inside.empty() && !mine.empty())
        log_worker("level " + std::to_string(l) + ": training, lane " + std::to_string(lane + 1) + ": " + inside);
    }
    double exchange_s = 0, concat_s = 0, add_s = 0, graphs_s = 0, device_s = 0;
    auto t_step = Clock::now();
    auto step = [&t_step](double& into) {
      const auto now = Clock::now();
      into += std::chrono::duration<double>(now - t_step).count();
      t_step = now;
    };
    if (R == 1) {  // nothing to exchange: the trained centroids move in place (or are there)
      for (std::size_t u = 0; u < mine.size() && !in_place; ++u) {
        const auto j = static_cast<std::size_t>(mine[u]);
        parent_centroids[j] = std::move(trained[u]);
        branch[j] = static_cast<std::int64_t>(parent_centroids[j].size()) / d;
      }
    } else {
      dist::MessageWriter m;
      std::size_t bytes = (mine.size() + 1) * sizeof(std::int64_t);
      for (const auto& c : trained) bytes += sizeof(std::int64_t) + c.size() * sizeof(float);
      m.reserve(bytes);
      m.put_array<std::int64_t>(mine);
      for (const auto& c : trained) m.put_array<float>(c);
      const auto all = ex.allgather(m.take());
      for (const std::string& bytes : all) {
        dist::MessageReader r(bytes, "centroid message");
        const auto parents = r.get_array<std::int64_t>();
        for (std::int64_t j : parents) {
          parent_centroids[static_cast<std::size_t>(j)] = r.get_array<float>();
          branch[static_cast<std::size_t>(j)] = static_cast<std::int64_t>(parent_centroids[static_cast<std::size_t>(j)].size()) / d;
        }
      }
    }
    step(exchange_s);
    // The level's centroids, parent by parent: gigabytes on a wide level, so the fresh buffer
    // asks for huge pages and the copies run on every thread.
    UninitVector<float> centroids;
    std::vector<std::int64_t> parent;
    if (in_place) {
      for (std::int64_t j = 0; j < n_parents; ++j)
        parent.insert(parent.end(), static_cast<std::size_t>(branch[static_cast<std::size_t>(j)]), j);
      centroids = std::move(level_centroids);
      in_place = false;  // a split round trains into `trained`
    } else {
      std::vector<std::size_t> offset(static_cast<std::size_t>(n_parents) + 1, 0);
      for (std::int64_t j = 0; j < n_parents; ++j) {
        const std::int64_t bj = branch[static_cast<std::size_t>(j)];
        const std::vector<float>& c = parent_centroids[static_cast<std::size_t>(j)];
        if (bj > 0 && static_cast<std::int64_t>(c.size()) != bj * d)
          throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": parent " + std::to_string(j) +
                                                " has no centroids for its " + std::to_string(bj) + " children");
        offset[static_cast<std::size_t>(j) + 1] = offset[static_cast<std::size_t>(j)] + (bj > 0 ? c.size() : 0);
        parent.insert(parent.end(), static_cast<std::size_t>(bj), j);
      }
      const std::size_t total = offset.back();
      centroids.reserve(total);
      advise_huge_pages(centroids.data(), total * sizeof(float));
      // Fresh pages faulted in on every thread; resize() writes nothing (the copies fill it).
      populate_pages(centroids.data(), total * sizeof(float), cfg.threads);
      centroids.resize(total);
      parallel_for(resolve_threads(cfg.threads, n_parents / 8), n_parents, [&](std::int64_t j, int) {
        const std::vector<float>& c = parent_centroids[static_cast<std::size_t>(j)];
        const std::size_t o = offset[static_cast<std::size_t>(j)], e = offset[static_cast<std::size_t>(j) + 1];
        if (e > o) std::memcpy(centroids.data() + o, c.data(), (e - o) * sizeof(float));
      });
    }
    step(concat_s);
    s.tree.truncate(l - 1);
    s.tree.add_level(std::move(centroids), std::move(parent));
    step(add_s);
    s.tree.build_graphs(l, cfg.hnsw_threshold, s.hnsw_params(), cfg.threads);
    step(graphs_s);
    backend->prepare_level(s.tree, l);
    step(device_s);
    n_nodes = s.tree.nodes(l);
    log_worker("level " + std::to_string(l) + ": centroids exchanged and level built in " +
               std::to_string(since(t_tree)) + " s (exchange " + std::to_string(exchange_s) + ", concatenate " +
               std::to_string(concat_s) + ", level " + std::to_string(add_s) + ", graphs " +
               std::to_string(graphs_s) + ", backend " + std::to_string(device_s) + ")");

    // ---- 2b. Optional full-data Lloyd passes (assign, sum in float64, update) --------
    for (int pass = 1; pass <= cfg.lloyd_passes; ++pass) {
      std::vector<double> sums(static_cast<std::size_t>(n_nodes * d), 0.0);
      std::vector<std::int64_t> members(static_cast<std::size_t>(n_nodes), 0);
      Progress bar("level " + std::to_string(l) + "/" + std::to_string(L) + " lloyd " +
                       std::to_string(pass) + "/" + std::to_string(cfg.lloyd_passes),
                   N, "pts", options.progress);
      ex.run_shards(n_shards, [&](std::int64_t si) {
        const ShardInfo& shard = data.shards()[static_cast<std::size_t>(si)];
        UninitVector<std::int32_t> prev_node;
        if (l == 1) {
          prev_node.assign(static_cast<std::size_t>(shard.rows), 0);
        } else {
          prev_node = read_shard_state(st, s.path(state_dir(l - 1) + taxonomy::base_name(shard.path)),
                                       shard.rows, l - 1).node;
        }
        const auto cap = static_cast<std::size_t>(cfg.batch_rows);
        std::vector<std::int32_t> node(cap), child(cap);
        std::vector<float> dist(cap);
        BatchReader reader(data, static_cast<std::size_t>(si), cfg.batch_rows, 0, -1, &batch_buffer);
        Batch batch;
        while (reader.next(&batch)) {
          check_stop();
          check_finite(batch, data);
          if (s.normalise()) taxonomy::normalise_rows(batch.data, batch.view.rows, d, cfg.threads);
          backend->descend(s.tree, l, batch.view, prev_node.data() + batch.local_begin, node.data(), child.data(),
                         dist.data(), knn);
          for (std::int64_t i = 0; i < batch.view.rows; ++i) {
            const std::int32_t nd = node[static_cast<std::size_t>(i)];
            if (nd < 0) continue;
            ++members[static_cast<std::size_t>(nd)];
            double* sum = sums.data() + static_cast<std::int64_t>(nd) * d;
            kernels::add_row_f64(batch.data + i * d, sum, d);
          }
          bar.add(batch.view.rows);
        }
      });
      ex.allreduce_sum(std::span<std::int64_t>(members));
      ex.allreduce_sum(std::span<double>(sums));
      const auto& cur = s.tree.level(l);
      UninitVector<float> lloyd_centroids = cur.centroids;
      std::vector<std::int64_t> parents = cur.parent;
      for (std::int64_t c = 0; c < n_nodes; ++c) {
        const std::int64_t m = members[static_cast<std::size_t>(c)];
        if (m == 0) continue;  // no point chose it: keep the sample-trained centroid
        float* cen = lloyd_centroids.data() + c * d;
        for (std::int64_t j = 0; j < d; ++j)
          cen[j] = static_cast<float>(sums[static_cast<std::size_t>(c * d + j)] / static_cast<double>(m));
        if (cfg.metric != TaxonomyMetric::kL2) taxonomy::normalise_rows(cen, 1, d);
      }
      s.tree.truncate(l - 1);
      s.tree.add_level(std::move(lloyd_centroids), std::move(parents));
      s.tree.build_graphs(l, cfg.hnsw_threshold, s.hnsw_params(), cfg.threads);
      backend->prepare_level(s.tree, l);
    }

    // This level's training samples are done with unless a split round may retrain: free
    // them before the pass collects the next level's (bounded memory).
    if (cap_leaf == 0) {
      samples_settled();
      samples = taxonomy::NodeSamples();
    }

    // ---- 3. Assignment pass: shards claimed dynamically by the workers ----------------
    // No split round follows this pass: the centroids are final (the pass only reads them).
    // Level 1's are small and a failed first level leaves nothing behind, so from level 2.
    const bool last_round = cap_leaf == 0 || round >= cfg.max_split_rounds;
    if (driver && l >= 2 && last_round) {
      centroid_write.submit(write_centroids);
      centroids_written = true;
    }
    // The last level's final pass writes each shard's outputs instead of its state files:
    // nothing reads those state files but the outputs step, which then has nothing to do.
    outputs_written = l == L && last_round;
    const auto t_assign = Clock::now();
    (void)backend->take_descend_breakdown();  // counts of this pass only
    // Each node is expected to be offered its share of this worker's points.
    const std::int64_t node_share = (N + R * n_nodes - 1) / (R * std::max<std::int64_t>(n_nodes, 1));
    if (collect) next = taxonomy::NodeSamples(n_nodes, next_k, node_share);
    std::vector<ShardSummary> summaries;
    // One worker (R == 1) folds each shard's per-node counts and inertia into the level's
    // sums as the shard ends, while the shards come in index order (0, 1, ...: so each
    // node's float64 sum sees the shards in that order, the same bits as the summaries added
    // in shard order below); a shard out of that order, and every later one, leaves a
    // summary, added after the folded ones in shard order (the folded shards all precede
    // them). No summaries, no sorting of each shard's nodes.
    const bool fold = R == 1;
    std::int64_t next_to_fold = 0;
    std::vector<std::int64_t> folded_count;
    std::vector<double> folded_inertia;
    std::vector<char> folded_has;
    if (fold) {
      folded_count.assign(static_cast<std::size_t>(n_nodes), 0);
      folded_inertia.assign(static_cast<std::size_t>(n_nodes), 0.0);
      folded_has.assign(static_cast<std::size_t>(n_nodes), 0);
    }
    std::int64_t my_points = 0;
    std::vector<std::int64_t> my_shards;
    // Where this worker's pass time goes (seconds; the shards run one after another).
    struct {
      double state = 0, read = 0, check = 0, descend = 0, bookkeep = 0;
      // Of `state`: the last level's state read and this one's made, waiting for the writes'
      // queue, the shard summaries.
      double prev = 0, writes = 0, summary = 0;
      // The bookkeeping's two steps (book_rows; it runs in one place at a time): the paths
      // copied and the rows sorted out by thread, then the rows served (tallies, offers).
      double book_sort = 0, book_serve = 0;
    } pass;
    // Per-node tallies of the current shard (touched entries reset after each). A level of
    // few nodes gives each its own cache line (stride 4: 64 bytes), so that the bookkeeping's
    // threads can serve single nodes (level 1's 100 nodes on 16 threads: groups of 8 left 3
    // threads idle and the rest uneven); wider levels pack them, 4 to a line.
    constexpr std::size_t kTalliesPerLine = 64 / sizeof(NodeTally);
    const std::size_t stride = n_nodes <= 8192 ? kTalliesPerLine : 1;
    std::vector<NodeTally> node_tally(static_cast<std::size_t>(n_nodes) * stride);
    std::vector<std::int32_t> touched, sort_scratch;
    std::vector<std::vector<std::int32_t>> touched_by;  // per bookkeeping thread, merged into touched
    // A finished shard's tallies are folded into the level's sums (one worker) or made its
    // summary (several; sorted by node) in the background while the next shard is booked:
    // its tallies and touched nodes are swapped (vectors: no copies) with a second
    // set, which the job zeroes as it goes, so the set comes back as the next shard's spare.
    // Jobs run one at a time in shard order: the sums' bits do not change (level 3 of a 20M
    // fit on a GPU: 0.2 s of its pass folding on 16 threads, the host otherwise waiting for
    // the device's descent of the next shard). Only the jobs touch `summaries` and the
    // folded sums until tally_jobs.wait().
    std::vector<NodeTally> tally_spare;
    std::vector<std::int32_t> tally_touched;
    BackgroundJobs tally_jobs(1);
    // The bookkeeping's rows sorted out: by_owner[t * T + o], rows of slice t that thread o serves.
    std::vector<std::vector<std::int32_t>> by_owner;
    // The last level's state of shard next_state_shard, being read (-1: none).
    std::future<ShardState> next_state;
    std::int64_t next_state_shard = -1;
    auto read_state_ahead = [&](std::int64_t shard) {
      if (l < 2 || shard < 0 || shard >= n_shards || shard == next_state_shard) return;
      if (next_state.valid()) next_state.wait();  // another shard's, not needed
      const ShardInfo& after = data.shards()[static_cast<std::size_t>(shard)];
      next_state_shard = shard;
      std::string path = s.path(state_dir(l - 1) + taxonomy::base_name(after.path));
      next_state = std::async(std::launch::async, [&st, path = std::move(path), rows = after.rows, l] {
        return read_shard_state(st, path, rows, l - 1);
      });
    };
    auto merge_touched = [&] {
      for (auto& tt : touched_by) {
        touched.insert(touched.end(), tt.begin(), tt.end());
        tt.clear();
      }
    };
    // A shard's state files (or outputs) are written while the pass goes on with the next
    // shards (eight behind at most: each file costs two fsyncs, the file's and its
    // directory's, and a pass writes three per shard; their latencies overlap, where one or
    // two writers would wait them out in turn); all are durable before the level's sums are
    // exchanged (and so before any commit of the level).
    BackgroundJobs state_writes(8);
    WorkerPool pass_pool(cfg.threads);  // kept threads for every batch's bookkeeping
    // Every batch's children (run_shards is serial per worker): one buffer for the pass.
    std::int64_t widest = 0;
    for (const ShardInfo& sh : data.shards()) widest = std::max(widest, sh.rows);
    std::vector<std::int32_t> child(static_cast<std::size_t>(std::min<std::int64_t>(cfg.batch_rows, widest)));
    // Whether the backend keeps every batch of shard `si` (n rows): its pass then reads nothing.
    auto shard_kept = [&](std::int64_t si, std::int64_t n) {
      bool kept = n > 0;
      for (std::int64_t r0 = 0; r0 < n && kept; r0 += cfg.batch_rows)
        kept = backend->resident(si, r0, std::min(cfg.batch_rows, n - r0));
      return kept;
    };
    // The next shard's first batch, read (by the reader's threads, into the pass's buffers,
    // handed to the backend as it lands) while this shard's results are booked and its state
    // queued: the pass then costs about its reads alone, not reads plus host work. Started
    // once a shard's last batch is descended (its rows are done with, the buffers free), for
    // the shard this worker runs next, claimed then (run_shards_ahead: with several workers
    // too). Its error, if any, is the next shard's; a shard other than the one read ahead
    // drops the read (waits for it, then forgets it) before it does anything, as does the
    // pass's end, so the backend is never used from two places. A shard whose rows the
    // backend takes where they lie (expect_rows_in_place) is not read: only its file is
    // made ready (registered with the GPU) in the background.
    struct ReadAhead {
      std::int64_t shard = -1;
      std::unique_ptr<BatchReader> reader;
      BackendRows routed;
      VectorReader::InPlaceRows where_they_lie;  // set: not read, the backend takes the rows there
      Batch batch;
      bool got = false;
      std::future<void> read;
      void drop() {
        if (read.valid()) {
          try {
            read.get();
          } catch (...) {  // a shard not taken after all: its error is not this pass's
          }
        }
        reader.reset();
        where_they_lie = {};
        shard = -1;
      }
      ~ReadAhead() { drop(); }
    } ahead;
    // Shard si's rows where they lie in place (its file's read-only mapping), for a backend
    // that may keep batches there rather than a copy (raw rows as stored, in the dtype it
    // computes in); empty otherwise.
    auto rows_in_place = [&](std::int64_t si, const BackendRows& routed) {
      const VectorReader& r = data.reader(static_cast<std::size_t>(si));
      if (!routed.in_buffer || !routed.as_stored || s.normalise() || !backend->takes_rows_in_place() ||
          r.dtype() != backend->compute_dtype())
        return VectorReader::InPlaceRows{};
      return r.rows_in_place();
    };
    auto read_ahead = [&](std::int64_t next) {
      if (next < 0 || next >= n_shards || ahead.shard >= 0) return;
      read_state_ahead(next);
      const std::int64_t rows = data.shards()[static_cast<std::size_t>(next)].rows;
      if (rows == 0 || shard_kept(next, rows)) return;
      try {
        ahead.shard = next;
        ahead.reader = std::make_unique<BatchReader>(data, static_cast<std::size_t>(next), cfg.batch_rows, 0, -1,
                                                     &batch_buffer);
        ahead.routed = route_rows(*ahead.reader, *backend, data, next, cfg.batch_rows, s.normalise(), &stored_buffer);
        ahead.got = false;
        // Rows the backend takes where they lie are not read (their file registered meanwhile).
        if (const auto in_place = rows_in_place(next, ahead.routed);
            in_place.data != nullptr && backend->expect_rows_in_place(in_place.file)) {
          ahead.where_they_lie = in_place;
          return;
        }
        ahead.read = std::async(std::launch::async,
                                [r = ahead.reader.get(), &a = ahead] { a.got = r->next(&a.batch); });
      } catch (...) {  // not read ahead: the shard's own read meets the error again
        ahead.drop();
      }
    };
    {
      Progress bar("level " + std::to_string(l) + "/" + std::to_string(L) + " assign", N, "pts",
                   options.progress);
      log("level " + std::to_string(l) + "/" + std::to_string(L) + ": assigning " +
          std::to_string(N) + " points");
      // The paths, node counts and sample offers of rows [r0, r0 + m) once descended, on
      // every thread, in two steps: thread t copies a slice of the rows' paths and sorts
      // the slice's rows out by the thread that serves their node (nodes with
      // (nd / 4) % T == o: 4 nodes to a cache line of tallies; nd % T == o where each node
      // has a line of its own, `stride` 4); then thread o takes its
      // rows from every slice in slice order, so each node's count, inertia sum and sample
      // offers are those of one thread in row order (the same bits on any thread count;
      // NodeSamples' nodes are independent). Where every thread read every row's node
      // and skipped the others' (a mispredicted branch a row, T times over), a batch took
      // as long on 16 threads as on 2.
      // `tallied`: the backend tallied the rows' nodes (tallies_on_device): only their paths
      // and sample offers are left here.
      auto book_rows = [&](ShardState& cur, const ShardState& prev, const std::int32_t* batch_child, Id global_begin,
                           std::int64_t r0, std::int64_t first, std::int64_t m, bool tallied) {
        const auto t_book = Clock::now();
        const int T = std::min(pass_pool.threads(), resolve_threads(cfg.threads, m / 8192));
        if (static_cast<int>(touched_by.size()) < T) touched_by.resize(static_cast<std::size_t>(T));
        if (by_owner.size() < static_cast<std::size_t>(T) * static_cast<std::size_t>(T))
          by_owner.resize(static_cast<std::size_t>(T) * static_cast<std::size_t>(T));
        const FastMod owner(static_cast<std::uint32_t>(T));
        const int node_shift = stride == 1 ? 2 : 0;  // nodes served together: a line's 4, or 1
        // Rows i of [0, m) are rows r0 + first + i of the shard and first + i of the batch.
        const std::int32_t* nodes = cur.node.data() + r0 + first;
        const float* dists = cur.dist.data() + r0 + first;
        const Id id0 = global_begin + r0 + first;
        // The loops keep their arrays in locals (the lambda's references would be
        // reloaded after each store).
        auto serve = [&](std::int64_t i, std::vector<std::int32_t>& my_touched) {
          const std::int32_t nd = nodes[i];
          if (!tallied) {
            NodeTally& t = node_tally[static_cast<std::size_t>(nd) * stride];
            if (t.count++ == 0) my_touched.push_back(nd);
            t.inertia += dists[i];
          }
          if (collect) {
            const Id id = id0 + i;
            next.offer(nd, sample_priority(id, cfg.seed, l + 1), id);
          }
        };
        pass_pool.run(T, [&, T, r0, first, m](std::int64_t t, int) {
          const std::int64_t i0 = m * t / T, i1 = m * (t + 1) / T;
          std::int32_t* paths = cur.paths.data();
          const std::int32_t* prev_paths = prev.paths.data();
          const std::int32_t* children = batch_child + first;
          for (std::int64_t i = i0; i < i1; ++i) {
            const std::int64_t r = r0 + first + i;
            for (int u = 0; u < l - 1; ++u) paths[r * l + u] = prev_paths[r * (l - 1) + u];
            paths[r * l + l - 1] = children[i];
          }
          if (tallied && !collect) return;  // nothing to serve
          if (T == 1) {  // one thread serves every node: no sorting out
            auto& my_touched = touched_by[0];
            for (std::int64_t i = i0; i < i1; ++i)
              if (nodes[i] >= 0) serve(i, my_touched);
            return;
          }
          std::vector<std::int32_t>* mine =
              by_owner.data() + static_cast<std::size_t>(t) * static_cast<std::size_t>(T);
          for (int o = 0; o < T; ++o) mine[o].clear();
          for (std::int64_t i = i0; i < i1; ++i) {
            const std::int32_t nd = nodes[i];
            if (nd >= 0)
              mine[owner(static_cast<std::uint32_t>(nd) >> node_shift)].push_back(static_cast<std::int32_t>(i));
          }
        });
        const auto t_sorted = Clock::now();
        pass.book_sort += std::chrono::duration<double>(t_sorted - t_book).count();
        if (T > 1 && (collect || !tallied)) {
          pass_pool.run(T, [&, T](std::int64_t o, int) {
            auto& my_touched = touched_by[static_cast<std::size_t>(o)];
            for (int t = 0; t < T; ++t)
              for (const std::int32_t i : by_owner[static_cast<std::size_t>(t) * static_cast<std::size_t>(T) +
                                                   static_cast<std::size_t>(o)])
                serve(i, my_touched);
          });
        }
        merge_touched();
        pass.book_serve += since(t_sorted);
      };
      // A batch's bookkeeping: rows [r0, r0 + m) of a shard starting at global id
      // global_begin, their children at batch_child.
      auto book_batch = [&](ShardState& cur, const ShardState& prev, const std::int32_t* batch_child, Id global_begin,
                            std::int64_t r0, std::int64_t m, bool tallied) {
        constexpr std::int64_t kMaxRows = std::int64_t{1} << 30;  // row numbers in int32
        for (std::int64_t first = 0; first < m; first += kMaxRows)
          book_rows(cur, prev, batch_child, global_begin, r0, first, std::min(kMaxRows, m - first), tallied);
        bar.add(m);
      };
      // A shard's end, once booked: its state files (or outputs) queued for writing, its
      // tallies handed to the background fold or summary. `taken`: the shard's tallies as the
      // backend took them (tallies_on_device; nodes ascending), else the host's are.
      auto finish_shard = [&](std::int64_t si, ShardState cur, const std::string& name,
                              std::shared_ptr<TakenTallies> taken) {
        const auto t_submit = Clock::now();
        if (outputs_written) {
          state_writes.submit([&, si, state = std::move(cur), ids = output_ids(data, static_cast<std::size_t>(si))] {
            write_outputs(*out_storage, out_root, data, static_cast<std::size_t>(si), state.paths, state.dist, ids,
                          L, cfg.output_format);
          });
        } else {
          state_writes.submit([&st, path = s.path(state_dir(l) + name), state = std::move(cur), l] {
            write_shard_state(st, path, state, l);
          });
        }
        const auto t_summary = Clock::now();
        pass.writes += std::chrono::duration<double>(t_summary - t_submit).count();
        if (taken) {  // one job at a time, in submission order: folded in shard order
          auto tallied = std::make_shared<ShardSummary>();
          {
            if (!taken->valid()) throw_error(ErrorCode::kInternal, "shard " + name + ": its node tallies were not taken");
            auto t = taken->get();  // (the backend's read-back; its error is the shard's)
            tallied->shard = si;
            tallied->nodes = std::move(t.nodes);
            tallied->counts = std::move(t.counts);
            tallied->inertia = std::move(t.inertia);
          }
          if (fold && si == next_to_fold) {
            ++next_to_fold;
            tally_jobs.submit([&, sum = std::move(tallied)] {
              const auto nt = static_cast<std::int64_t>(sum->nodes.size());
              const int T = resolve_threads(cfg.threads, nt / 16384);
              parallel_for(T, T, [&](std::int64_t t, int) {
                for (std::int64_t u = nt * t / T; u < nt * (t + 1) / T; ++u) {
                  const auto nd = static_cast<std::size_t>(sum->nodes[static_cast<std::size_t>(u)]);
                  folded_count[nd] += sum->counts[static_cast<std::size_t>(u)];
                  folded_inertia[nd] += sum->inertia[static_cast<std::size_t>(u)];
                  folded_has[nd] = 1;
                }
              });
            });
          } else {
            tally_jobs.submit([&, sum = std::move(tallied)] { summaries.push_back(std::move(*sum)); });
          }
          pass.summary += since(t_summary);
          return;
        }
        // The shard's tallies swapped for the spare set (zeroed by the job before), then
        // folded or summarised in the background while the next shard runs.
        tally_jobs.wait();
        if (tally_spare.size() != node_tally.size()) tally_spare.assign(node_tally.size(), NodeTally{});
        std::swap(node_tally, tally_spare);
        std::swap(touched, tally_touched);
        if (fold && si == next_to_fold) {
          ++next_to_fold;
          tally_jobs.submit([&] {
            // Each touched node once: slices of tally_touched on the job's threads are disjoint.
            const auto nt = static_cast<std::int64_t>(tally_touched.size());
            const int T = resolve_threads(cfg.threads, nt / 16384);
            parallel_for(T, T, [&](std::int64_t t, int) {
              for (std::int64_t u = nt * t / T; u < nt * (t + 1) / T; ++u) {
                const auto nd = static_cast<std::size_t>(tally_touched[static_cast<std::size_t>(u)]);
                const NodeTally tally = std::exchange(tally_spare[nd * stride], NodeTally{});
                folded_count[nd] += tally.count;
                folded_inertia[nd] += tally.inertia;
                folded_has[nd] = 1;
              }
            });
            tally_touched.clear();
          });
        } else {
          tally_jobs.submit([&, si] {
            ShardSummary sum;
            sum.shard = si;
            take_shard_summary(tally_touched, tally_spare, stride, sort_scratch, &sum);
            summaries.push_back(std::move(sum));
          });
        }
        pass.summary += since(t_summary);
      };
      // On a backend that descends off the host (a GPU), the last batch of each shard is
      // booked, and the shard finished, by a background job while the next shard's state is
      // read and its first batch descended (the device otherwise idled while the host booked;
      // on the CPU the two would only share the cores). One job at a time, in shard
      // order; a shard's bookkeeping waits for the last shard's job (wait_tail below), so
      // the sums, samples and files have the same bits.
      struct Tail {
        ShardState cur, prev;
        std::vector<std::int32_t> child;  // the last batch's children (`child` is the next's)
        std::shared_ptr<TakenTallies> tallied;  // the backend's tallies of the shard, if it took them
      };
      // (MEGATAX_TEST_BOOK_BEHIND=1, a test hook: on any backend, so the CPU's tests run it)
      const bool book_behind = backend->descends_off_host() || env_switch("MEGATAX_TEST_BOOK_BEHIND", false);
      double tail_book_s = 0;  // the jobs' bookkeeping seconds (the main thread laps pass.bookkeep meanwhile)
      BackgroundJobs tail_jobs(1);
      auto submit_tail = [&](std::int64_t si, ShardState&& cur, ShardState&& prev, std::int64_t r0, std::int64_t m,
                             const std::string& name, std::shared_ptr<TakenTallies> tallied) {
        auto t = std::make_shared<Tail>();
        t->cur = std::move(cur);
        t->prev = std::move(prev);
        t->tallied = std::move(tallied);
        t->child.assign(child.begin(), child.begin() + m);
        const Id global_begin = data.shards()[static_cast<std::size_t>(si)].global_begin;
        tail_jobs.submit([&, t, si, r0, m, global_begin, name] {
          const auto t_book = Clock::now();
          book_batch(t->cur, t->prev, t->child.data(), global_begin, r0, m, t->tallied != nullptr);
          tail_book_s += since(t_book);  // (added to pass.bookkeep once the jobs are done)
          finish_shard(si, std::move(t->cur), name, std::move(t->tallied));
        });
      };
      try {
        my_shards = ex.run_shards_ahead(n_shards, [&](std::int64_t si, const dist::Executor::ClaimNext& claim_next) {
          if (test_crash_here(me, l)) std::raise(SIGKILL);  // test hook: a rank dies mid-level
          const ShardInfo& shard = data.shards()[static_cast<std::size_t>(si)];
          const std::int64_t n = shard.rows;
          const std::string name = taxonomy::base_name(shard.path);
          if (ahead.shard >= 0 && ahead.shard != si) ahead.drop();  // read ahead for nothing
          // This shard's bookkeeping starts once the last shard's tail has run (then the
          // tallies a shard that threw left behind are cleared).
          bool tail_waited = false, tail_submitted = false;
          auto wait_tail = [&] {
            if (tail_waited) return;
            tail_jobs.wait();
            tail_waited = true;
            merge_touched();
            for (const std::int32_t node : touched) {  // left over by a shard that threw
              node_tally[static_cast<std::size_t>(node) * stride] = NodeTally{};
            }
            touched.clear();
          };
          const auto t_shard = Clock::now();
          auto t_stage = t_shard;
          auto lap = [&t_stage](double& into) {
            const auto now = Clock::now();
            into += std::chrono::duration<double>(now - t_stage).count();
            t_stage = now;
          };
          ShardState prev;
          if (l == 1) {
            prev.node.assign(static_cast<std::size_t>(n), 0);
            prev.dist.assign(static_cast<std::size_t>(n), 0.f);
          } else {
            if (next_state_shard == si) {
              prev = next_state.get();  // read while the shard before was descended (or its error)
            } else {
              if (next_state.valid()) next_state.wait();  // another shard's: not needed
              prev = read_shard_state(st, s.path(state_dir(l - 1) + name), n, l - 1);
            }
            next_state_shard = -1;
            // The next shard's state is read behind this one (one worker takes the shards in
            // index order; with several, the guess may miss, costing one read, and the read
            // ahead of the next shard's rows reads the claimed one's instead).
            read_state_ahead(si + 1);
          }
          // Not filled: the descent writes every row's node (-1 below a leaf) and the
          // bookkeeping every row's path (a shard's ~2 MB at level 3, a pass's 0.3 GB).
          ShardState cur;
          cur.node.resize(static_cast<std::size_t>(n));
          cur.paths.resize(static_cast<std::size_t>(n * l));
          cur.dist = std::move(prev.dist);  // (rows stopped above keep theirs; prev's are not read again)
          lap(pass.state);
          pass.prev += std::chrono::duration<double>(t_stage - t_shard).count();
          // The shard's tallies as the backend took them (its kept batches' descents tally
          // them on the device, tallies_on_device), or null: the bookkeeping tallies.
          std::shared_ptr<TakenTallies> tallied;
          // Rows [r0, r0 + m) once descended: booked here, or, the shard's last batch on a
          // backend that descends off the host, in the background with the shard's end.
          auto bookkeep = [&](std::int64_t r0, std::int64_t m) {
            wait_tail();
            if (r0 + m < n || !book_behind) {
              book_batch(cur, prev, child.data(), shard.global_begin, r0, m, tallied != nullptr);
              return;
            }
            submit_tail(si, std::move(cur), std::move(prev), r0, m, name, std::move(tallied));
            tail_submitted = true;
          };
          // The shard's rows tallied where they descend, when the backend can (kept batches;
          // read ones from level 2 on: level 1's few nodes cost the host little and its
          // one-group descent leaves no results on the device to tally): taken once the last
          // batch is descended (before its bookkeeping, which may run behind), the backend's
          // tallies stand for the shard's (ShardSummary's node order) and the rows'
          // bookkeeping skips them.
          const bool kept = shard_kept(si, n);
          const bool tally_there = (kept || l >= 2) && n > 0 && backend->tallies_on_device(n_nodes);
          if (tally_there) {
            tallied = std::make_shared<TakenTallies>();
            backend->begin_tallies(n_nodes);
          }
          auto take_tallies_after = [&](std::int64_t r0, std::int64_t m) {
            if (tally_there && r0 + m == n) *tallied = backend->take_tallies();
          };
          // Batches the backend kept (a GPU's memory) are descended where they are: the
          // shard is not read again.
          const std::int64_t per = cfg.batch_rows;
          if (kept) {
            for (std::int64_t r0 = 0; r0 < n; r0 += per) {
              check_stop();
              const std::int64_t m = std::min(per, n - r0);
              backend->descend_resident(s.tree, l, si, r0, m, prev.node.data() + r0, cur.node.data() + r0,
                                        child.data(), cur.dist.data() + r0);
              take_tallies_after(r0, m);
              lap(pass.descend);
              bookkeep(r0, m);
              lap(pass.bookkeep);
            }
          } else {
            std::unique_ptr<BatchReader> own_reader;
            BackendRows routed;
            VectorReader::InPlaceRows where_they_lie;  // set: the backend takes the rows there
            Batch batch;
            bool have = false;  // `batch` holds the next batch
            if (ahead.shard == si) {  // read (or registered) while the shard before was booked
              std::future<void> read = std::move(ahead.read);
              ahead.shard = -1;
              own_reader = std::move(ahead.reader);  // (kept alive until the read is done)
              where_they_lie = std::exchange(ahead.where_they_lie, {});
              if (read.valid()) read.get();
              routed = ahead.routed;
              batch = ahead.batch;
              have = ahead.got;
            } else {
              own_reader = std::make_unique<BatchReader>(data, static_cast<std::size_t>(si), cfg.batch_rows, 0, -1,
                                                         &batch_buffer);
              routed = route_rows(*own_reader, *backend, data, si, cfg.batch_rows, s.normalise(), &stored_buffer);
              if (const auto in_place = rows_in_place(si, routed);
                  in_place.data != nullptr && backend->expect_rows_in_place(in_place.file)) {
                where_they_lie = in_place;
              } else {
                have = own_reader->next(&batch);
              }
            }
            // Not read: each batch handed to the backend where it lies, which copies it over
            // the bus and checks it (the row it names is checked here again for the error).
            const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(backend->compute_dtype());
            if (where_they_lie.data != nullptr && si + 1 < n_shards && ex.workers() == 1) {
              // The next shard's file registered while this one's rows cross the bus, not
              // after (H200: level 1 of 20M x 1024 f16 2.0 -> 1.6 s): the next index, which a
              // lone worker claims next (with several, the next claim is known only at the
              // shard's end: read_ahead registers it then).
              if (const auto next = rows_in_place(si + 1, routed); next.data != nullptr)
                backend->expect_rows_in_place(next.file);
            }
            for (std::int64_t r0 = 0; where_they_lie.data != nullptr && r0 < n; r0 += per) {
              lap(pass.read);
              check_stop();
              const std::int64_t m = std::min(per, n - r0);
              const unsigned char* rows = where_they_lie.data + static_cast<std::size_t>(r0) * row_bytes;
              backend->offer_resident(si, r0);
              backend->offer_rows_in_place(where_they_lie.file, rows);
              backend->descend(s.tree, l, MatrixView(rows, m, d, backend->compute_dtype(), d), prev.node.data() + r0,
                               cur.node.data() + r0, child.data(), cur.dist.data() + r0, knn);
              if (const std::int64_t bad = backend->non_finite_row(); bad >= 0) {
                backend->forget_resident(si, r0);
                check_finite(MatrixView(rows + static_cast<std::size_t>(bad) * row_bytes, 1, d, backend->compute_dtype()),
                             shard.path, r0 + bad, shard.global_begin + r0 + bad);
                throw_error(ErrorCode::kInternal, "shard " + shard.path + ": the GPU found a non-finite value in row " +
                                                      std::to_string(r0 + bad) + ", the host none");
              }
              take_tallies_after(r0, m);
              lap(pass.descend);
              if (r0 + m == n) read_ahead(claim_next());
              bookkeep(r0, m);
              lap(pass.bookkeep);
            }
            BatchReader& reader = *own_reader;
            // (rows read: they may still be kept where they lie)
            const VectorReader::InPlaceRows in_place = have ? rows_in_place(si, routed) : VectorReader::InPlaceRows{};
            for (; have; have = reader.next(&batch)) {
              lap(pass.read);
              check_stop();
              if (!batch.checked) check_finite(batch, data);
              if (s.normalise() && !routed.normalised())
                taxonomy::normalise_rows(batch.data, batch.view.rows, d, cfg.threads);
              lap(pass.check);
              const std::int64_t r0 = batch.local_begin, m = batch.view.rows;
              if (routed.in_buffer) backend->offer_resident(si, r0);
              if (in_place.data != nullptr)
                backend->offer_rows_in_place(in_place.file, in_place.data + static_cast<std::size_t>(r0 * d) *
                                                                               dtype_size(backend->compute_dtype()));
              if (routed.normalised_by_backend) backend->normalise_next_rows();
              backend->descend(s.tree, l, batch.view, prev.node.data() + r0, cur.node.data() + r0, child.data(),
                             cur.dist.data() + r0, knn);
              take_tallies_after(r0, m);
              lap(pass.descend);
              if (reader.remaining() == 0) read_ahead(claim_next());
              bookkeep(r0, m);
              lap(pass.bookkeep);
            }
          }
          lap(pass.read);
          if (!tail_submitted) {  // booked here (or no rows): the shard finished here
            wait_tail();
            finish_shard(si, std::move(cur), name, std::move(tallied));
          }
          my_points += n;
          lap(pass.state);
        });
        ahead.drop();  // a shard read ahead but not run (none when every shard runs in order)
        const auto t_tail = Clock::now();
        tail_jobs.wait();
        pass.bookkeep += since(t_tail) + tail_book_s;
        const auto t_writes = Clock::now();
        state_writes.wait();
        pass.state += since(t_writes);
        pass.writes += since(t_writes);
        const auto t_fold = Clock::now();
        tally_jobs.wait();
        pass.state += since(t_fold);
        pass.summary += since(t_fold);
      } catch (...) {
        tail_jobs.drain();
        tally_jobs.drain();
        state_writes.drain();  // nothing may write into the level's files after this
        ahead.drop();
        if (l == 1 && done == 0) cleanup_uncommitted();
        throw;
      }
    }
    lr.assign_seconds += since(t_assign);
    {
      std::string shard_list;
      for (std::int64_t si : my_shards) {
        if (!shard_list.empty()) shard_list += ',';
        shard_list += std::to_string(si);
      }
      log_worker("level " + std::to_string(l) + ": assigned " + std::to_string(my_shards.size()) + " shards [" +
                 shard_list + "], " + std::to_string(my_points) + " points in " +
                 std::to_string(lr.assign_seconds) + " s (read " + std::to_string(pass.read) +
                 ", check " + std::to_string(pass.check) + ", descend " + std::to_string(pass.descend) +
                 ", bookkeeping " + std::to_string(pass.bookkeep) + " (paths and sorting out " +
                 std::to_string(pass.book_sort) + ", serving " + std::to_string(pass.book_serve) + "), state files " +
                 std::to_string(pass.state) + ": last level's read " + std::to_string(pass.prev) +
                 ", waiting for writes " + std::to_string(pass.writes) + ", summaries " +
                 std::to_string(pass.summary) + ")");
      const std::string inside = backend->take_descend_breakdown();
      if (!inside.empty()) log_worker("level " + std::to_string(l) + ": descend: " + inside);
    }
    // Per-node counts and inertia, summed in shard order: the same bits on any rank count.
    // Each node's partial sums go to its owner (volume ~ touched (shard, node) pairs / R),
    // the owner adds them in shard order, and the totals are shared (16 bytes a node).
    // One worker owns every node: its collectives still run (a callback executor counts on
    // them) but carry nothing, and it adds its own summaries where they are (a wide level
    // has tens of millions of parts: no copies of them into messages and back).
    const auto t_sums = Clock::now();
    counts.assign(static_cast<std::size_t>(n_nodes), 0);
    inertia.assign(static_cast<std::size_t>(n_nodes), 0.0);
    {
      const bool alone = R == 1;
      std::vector<std::string> send(static_cast<std::size_t>(R));
      if (!alone) {
        std::vector<std::vector<std::int64_t>> shard_to(static_cast<std::size_t>(R)),
            node_to(static_cast<std::size_t>(R)), count_to(static_cast<std::size_t>(R));
        std::vector<std::vector<double>> inertia_to(static_cast<std::size_t>(R));
        for (const auto& sum : summaries)
          for (std::size_t t = 0; t < sum.nodes.size(); ++t) {
            const auto w = static_cast<std::size_t>(owner(sum.nodes[t]));
            shard_to[w].push_back(sum.shard);
            node_to[w].push_back(sum.nodes[t]);
            count_to[w].push_back(sum.counts[t]);
            inertia_to[w].push_back(sum.inertia[t]);
          }
        for (std::size_t w = 0; w < send.size(); ++w) {
          dist::MessageWriter m;
          m.put_array<std::int64_t>(shard_to[w]);
          m.put_array<std::int64_t>(node_to[w]);
          m.put_array<std::int64_t>(count_to[w]);
          m.put_array<double>(inertia_to[w]);
          send[w] = m.take();
        }
      }
      // The owner adds each node's partial sums in shard order without sorting the parts (a
      // wide level has ~100k of them per shard): a shard's parts are one contiguous run of
      // the message of the worker that processed it (or of its own summary); the runs are
      // taken in shard order and added into per-node accumulators, so each node's float64
      // sum sees the shards in index order, as on one worker.
      struct Received {
        std::vector<std::int64_t> shard, node, count;
        std::vector<double> inertia;
      };
      std::vector<Received> received;
      for (const std::string& bytes : ex.alltoall(send)) {
        if (alone) break;
        dist::MessageReader r(bytes, "shard summary message");
        Received got;
        got.shard = r.get_array<std::int64_t>();
        got.node = r.get_array<std::int64_t>();
        got.count = r.get_array<std::int64_t>();
        got.inertia = r.get_array<double>();
        received.push_back(std::move(got));
      }
      struct Run {
        std::int64_t shard;
        const std::int64_t *node, *count;
        const double* inertia;
        std::size_t size;
      };
      std::vector<Run> runs;
      if (alone) {
        for (const auto& sum : summaries)
          runs.push_back({sum.shard, sum.nodes.data(), sum.counts.data(), sum.inertia.data(), sum.nodes.size()});
      }
      for (const Received& got : received) {
        const auto& sh = got.shard;
        for (std::size_t t = 0; t < sh.size();) {
          std::size_t e = t + 1;
          while (e < sh.size() && sh[e] == sh[t]) ++e;
          runs.push_back({sh[t], got.node.data() + t, got.count.data() + t, got.inertia.data() + t, e - t});
          t = e;
        }
      }
      std::stable_sort(runs.begin(), runs.end(), [](const Run& x, const Run& y) { return x.shard < y.shard; });
      // After the shards folded during the pass (one worker), which precede every summary.
      std::vector<std::int64_t> node_count_sum =
          fold ? std::move(folded_count) : std::vector<std::int64_t>(static_cast<std::size_t>(n_nodes), 0);
      std::vector<double> node_inertia_sum =
          fold ? std::move(folded_inertia) : std::vector<double>(static_cast<std::size_t>(n_nodes), 0.0);
      std::vector<char> has_part =
          fold ? std::move(folded_has) : std::vector<char>(static_cast<std::size_t>(n_nodes), 0);
      for (const Run& run : runs) {
        for (std::size_t t = 0; t < run.size; ++t) {
          const auto nd = static_cast<std::size_t>(run.node[t]);
          node_count_sum[nd] += run.count[t];
          node_inertia_sum[nd] += run.inertia[t];
          has_part[nd] = 1;
        }
      }
      std::vector<std::int64_t> own_nodes, own_counts;
      std::vector<double> own_inertia;
      for (std::int64_t nd = 0; nd < n_nodes; ++nd) {
        if (has_part[static_cast<std::size_t>(nd)] == 0) continue;
        if (alone) {
          counts[static_cast<std::size_t>(nd)] = node_count_sum[static_cast<std::size_t>(nd)];
          inertia[static_cast<std::size_t>(nd)] = node_inertia_sum[static_cast<std::size_t>(nd)];
          continue;
        }
        own_nodes.push_back(nd);
        own_counts.push_back(node_count_sum[static_cast<std::size_t>(nd)]);
        own_inertia.push_back(node_inertia_sum[static_cast<std::size_t>(nd)]);
      }
      dist::MessageWriter m;
      if (!alone) {
        m.put_array<std::int64_t>(own_nodes);
        m.put_array<std::int64_t>(own_counts);
        m.put_array<double>(own_inertia);
      }
      for (const std::string& bytes : ex.allgather(m.take())) {
        if (alone) break;
        dist::MessageReader r(bytes, "node totals message");
        const auto nd = r.get_array<std::int64_t>();
        const auto ct = r.get_array<std::int64_t>();
        const auto in = r.get_array<double>();
        for (std::size_t t = 0; t < nd.size(); ++t) {
          counts[static_cast<std::size_t>(nd[t])] = ct[t];
          inertia[static_cast<std::size_t>(nd[t])] = in[t];
        }
      }
    }
    log_worker("level " + std::to_string(l) + ": node counts and inertia summed in " + std::to_string(since(t_sums)) +
               " s (" + std::to_string(summaries.size()) + " shard summaries" +
               (fold ? ", " + std::to_string(next_to_fold) + " shards folded during the pass" : std::string()) + ")");
    // ---- 3b. Dynamic splitting (balance, last level): parents with an oversized child are
    // re-trained with more children and the level is assigned again. Decided from the
    // all-reduced counts, so every rank takes the same branch.
    if (last_round) break;
    to_train = plan_splits(s.tree.level(l), counts, cap_leaf, &pieces);
    if (to_train.empty()) break;
    {  // split from the centroids the pass used (Lloyd-refined when lloyd_passes > 0)
      const auto& cur = s.tree.level(l);
      for (std::int64_t j = 0; j < n_parents; ++j) {
        const std::int64_t b0 = cur.child_begin[static_cast<std::size_t>(j)], e0 = cur.child_begin[static_cast<std::size_t>(j + 1)];
        parent_centroids[static_cast<std::size_t>(j)].assign(cur.centroids.begin() + b0 * d, cur.centroids.begin() + e0 * d);
      }
    }
    ++lr.split_rounds;
    log("level " + std::to_string(l) + "/" + std::to_string(L) + ": split round " + std::to_string(round + 1) +
        ": re-training " + std::to_string(to_train.size()) + " parents with leaves over " +
        std::to_string(cap_leaf) + " points");
    }  // rounds
    if (collect) next = route_samples(std::move(next), ex, n_nodes, next_k);
    auto& lv = s.tree.mutable_level(l);
    lv.count = counts;
    lv.inertia = inertia;
    for (std::int64_t c : counts) lr.points += c;
    for (std::size_t j = 0; j + 1 < lv.child_begin.size(); ++j) {
      const std::int64_t k = lv.child_begin[j + 1] - lv.child_begin[j];
      if (k == 0) continue;
      lr.min_children = lr.min_children == 0 ? k : std::min(lr.min_children, k);
      lr.max_children = std::max(lr.max_children, k);
    }
    for (double v : inertia) lr.inertia += v;
    lr.nodes = n_nodes;
    points_levels += N;
    // One process training the next level on a batch device trains it into one array of
    // all its centroids: gigabytes on a wide level, whose pages take a while to fault in
    // (not zero-filled after: make_level_array). Its size is known now (the same plan the
    // next level makes from these counts): it is made while this level commits.
    if (R == 1 && batch_kmeans != nullptr && collect) {
      std::int64_t total = 0;
      for (std::int64_t b : plan_branching(cfg, l + 1, counts)) total += b * d;
      next_level_array = std::async(std::launch::async, [total, threads = cfg.threads] {
        return make_level_array(static_cast<std::size_t>(total), threads);
      });
    }

    // ---- 4. Commit (the driver): model files, next samples, then the manifest ----------
    const auto t_commit = Clock::now();
    // The last pass wrote the outputs: this commit also completes the fit (one manifest).
    if (l == L && outputs_written) {
      manifest.set("status", "complete");
      manifest.set("output_uri", output_uri);
    }
    // The driver needs every owner's samples to write them. One worker defers their commit
    // (see below): it flattens them in the background too (20M samples take ~0.2 s), into
    // `flat`, and says so through `flatten_later`; the commit's files wait for that.
    auto flat = std::make_shared<FlatSamples>();
    std::shared_ptr<std::promise<void>> flatten_later;
    std::shared_future<void> flattened;
    if (collect && R == 1) {
      flatten_later = std::make_shared<std::promise<void>>();
      flattened = flatten_later->get_future().share();
    } else if (collect) {
      taxonomy::NodeSamples all_samples;
      {
        std::vector<std::int64_t> my_o;
        UninitVector<std::int64_t> my_i, my_p;
        next.flatten(&my_o, &my_i, &my_p, cfg.threads);
        dist::MessageWriter m;
        m.put_array<std::int64_t>(my_o);
        m.put_array<std::int64_t>(my_i);
        m.put_array<std::int64_t>(my_p);
        const auto parts = ex.allgather(m.take());
        if (driver) {
          all_samples = taxonomy::NodeSamples(n_nodes, next_k);
          for (const std::string& bytes : parts) {
            dist::MessageReader r(bytes, "sample message");
            const auto o = r.get_array<std::int64_t>();  // in message order (not argument order)
            const auto i = r.get_array<std::int64_t>();
            const auto p = r.get_array<std::int64_t>();
            all_samples.merge(taxonomy::NodeSamples::unflatten(next_k, o, i, p));
          }
        }
      }
      if (driver) all_samples.flatten(&flat->offsets, &flat->ids, nullptr, cfg.threads);
    }
    const double samples_s = since(t_commit);  // gathered and flattened
    double centroids_wait_s = 0;
    if (driver) {
      // The previous level's commit, when it went on in the background, is done first: the
      // manifests go out in level order (and its error, if any, surfaces here).
      const auto t_wait_commit = Clock::now();
      pending_commit.wait();
      const double waited_commit = since(t_wait_commit);
      if (background_commit_s > 0)
        log_worker("level " + std::to_string(l - 1) + ": its commit's files and manifest took " +
                   std::to_string(background_commit_s) + " s in the background (level " + std::to_string(l) +
                   " waited " + std::to_string(waited_commit) + " s for them)");
      background_commit_s = 0;
      // The level's files as bytes of their own (a deferred commit outlives this level's
      // variables).
      struct LevelFiles {
        std::vector<std::int64_t> nodes;
        std::shared_ptr<const FlatSamples> samples;
        std::vector<double> inertia;
        std::vector<std::pair<std::string, std::string>> graphs;  // path, serialized graph
      };
      auto f = std::make_shared<LevelFiles>();
      f->nodes.resize(static_cast<std::size_t>(2 * n_nodes));
      for (std::int64_t i = 0; i < n_nodes; ++i) {
        f->nodes[static_cast<std::size_t>(2 * i)] = lv.parent[static_cast<std::size_t>(i)];
        f->nodes[static_cast<std::size_t>(2 * i + 1)] = counts[static_cast<std::size_t>(i)];
      }
      f->inertia = inertia;
      f->samples = flat;
      for (std::size_t j = 0; j < lv.graph.size(); ++j)
        if (lv.graph[j])
          f->graphs.emplace_back(s.path(level_dir(l) + "hnsw-" + std::to_string(j) + ".bin"), lv.graph[j]->serialize());
      // The level's files are independent: written at the same time (each write_atomic is
      // durable when it returns: their fsyncs overlap), all of them before the manifest.
      if (!centroids_written) centroid_write.submit(write_centroids);
      std::vector<std::function<void()>> writes;
      writes.push_back([&st, f, path = s.path(level_dir(l) + "nodes.npy"), n_nodes] {
        const std::int64_t shape[2] = {n_nodes, 2};
        write_npy(st, path, std::span<const std::int64_t>(f->nodes), shape);
      });
      writes.push_back([&st, f, path = s.path(level_dir(l) + "inertia.npy"), n_nodes] {
        io::write_npy_f64(st, path, f->inertia, {n_nodes});
      });
      for (std::size_t g = 0; g < f->graphs.size(); ++g)
        writes.push_back([&st, f, g] { st.write_atomic(f->graphs[g].first, f->graphs[g].second); });
      if (collect) {
        const std::string samples_path = s.path(samples_prefix(l + 1));
        writes.push_back([&st, f, path = samples_path + ".offsets.npy"] {
          const std::int64_t shape[1] = {static_cast<std::int64_t>(f->samples->offsets.size())};
          write_npy(st, path, std::span<const std::int64_t>(f->samples->offsets), shape);
        });
        writes.push_back([&st, f, path = samples_path + ".ids.npy"] {
          const std::int64_t shape[1] = {static_cast<std::int64_t>(f->samples->ids.size())};
          write_npy(st, path, std::span<const std::int64_t>(f->samples->ids), shape);
        });
      }
      auto write_files = [writes = std::move(writes)] {
        parallel_for(static_cast<int>(writes.size()), static_cast<std::int64_t>(writes.size()),
                     [&](std::int64_t t, int) { writes[static_cast<std::size_t>(t)](); });
      };
      // One process and a level that another follows: the files, the manifest and the
      // clean-up go on in the background while the next level trains (the next commit, the
      // end of the fit or the stop hook wait for them). A process killed meanwhile resumes
      // from the manifest before, as if killed during a commit.
      const bool defer = R == 1 && collect;
      if (!defer) write_files();
      const auto t_centroids = Clock::now();
      centroid_write.wait();  // the stream belongs to this level: finished here either way
      centroids_wait_s = since(t_centroids);
      lr.seconds = since(t_level);
      json::Value entries = json::Value::array();
      for (const json::Value& e : level_entries.as_array())
        if (e["level"].as_int() < l) entries.push_back(e);
      entries.push_back(level_json(s.tree, l, lr));
      level_entries = entries;
      manifest.set("levels", level_entries);
      manifest.set("levels_done", l);
      manifest.set("workers", R);
      const bool completes = manifest["status"].as_string() == "complete";
      auto finish = [&st, &out_storage, out_root, completes, manifest_path, manifest_text = json::dump(manifest, 2),
                     level_path = s.path(level_dir(l)), prev_state = l > 1 ? s.path(state_dir(l - 1)) : std::string(),
                     prev_samples = l > 1 ? s.path(samples_prefix(l)) : std::string(),
                     state_path = s.path("state"), levels = L] {
        // Left by an attempt killed while it wrote this level (its centroids are written
        // during the pass), or, when this commit completes the fit, its outputs.
        remove_stale_temps(st, level_path);
        if (completes) remove_stale_temps(*out_storage, out_root);
        st.write_atomic(manifest_path, manifest_text);
        // The previous level's state is no longer needed (every worker finished level l).
        if (!prev_state.empty()) {
          remove_folder(st, prev_state);
          for (const char* suffix : {".offsets.npy", ".ids.npy", ".priorities.npy"}) st.remove(prev_samples + suffix);
        }
        if (completes) remove_fit_state(st, state_path, levels);
      };
      if (defer) {
        pending_commit.submit([write_files = std::move(write_files), finish = std::move(finish), flattened,
                               &background_commit_s] {
          const auto t0 = Clock::now();
          if (flattened.valid()) flattened.get();  // the samples (or their error; a broken promise)
          write_files();
          finish();
          background_commit_s = since(t0);  // read after the job is waited for
        });
      } else {
        finish();
      }
    }
    lr.seconds = since(t_level);
    if (driver)
      log_worker("level " + std::to_string(l) + ": committed in " + std::to_string(since(t_commit)) + " s (" +
                 std::to_string(n_nodes) + " x " + std::to_string(d) + " centroids, samples, manifest; samples " +
                 std::to_string(samples_s) + ", waiting for the centroid file " + std::to_string(centroids_wait_s) +
                 ")");
    ex.barrier();  // level l is committed before anyone goes on (or stops)
    report.levels.push_back(lr);
    samples_settled();
    samples = std::move(next);
    if (flatten_later) {
      // Reads `samples` while the next level trains (which reads it too); a promise never
      // kept (the thread did not start) fails the deferred commit, which waits for it.
      samples_flattening = std::async(std::launch::async, [&samples, flat, done = std::move(flatten_later),
                                                           threads = cfg.threads] {
        try {
          samples.flatten(&flat->offsets, &flat->ids, nullptr, threads);
          done->set_value();
        } catch (...) {
          done->set_exception(std::current_exception());
        }
      });
    }
    log("level " + std::to_string(l) + "/" + std::to_string(L) + ": " + std::to_string(n_nodes) +
        " nodes, inertia " + std::to_string(lr.inertia) + ", " + std::to_string(lr.seconds) + " s");
    if (options.stop_after_level == l && l < L) {
      pending_commit.wait();  // the level is committed when the hook stops the fit
      throw_error(ErrorCode::kCancelled, "fit stopped after level " + std::to_string(l) + " (test hook)");
    }
  }
  pending_commit.wait();  // (the last level commits in the foreground; for a loop left early)

  // ---- 5. Outputs (each worker writes its shards'), then the manifest says complete ----
  if (manifest["status"].as_string() != "complete") {
    ex.run_shards(n_shards, [&](std::int64_t si) {
      const ShardInfo& shard = data.shards()[static_cast<std::size_t>(si)];
      const std::string name = taxonomy::base_name(shard.path);
      ShardState fin = read_shard_state(st, s.path(state_dir(L) + name), shard.rows, L);
      write_outputs(*out_storage, out_root, data, static_cast<std::size_t>(si), fin.paths, fin.dist,
                    output_ids(data, static_cast<std::size_t>(si)), L, cfg.output_format);
    });
    ex.barrier();
    manifest.set("status", "complete");
    manifest.set("output_uri", output_uri);
    if (driver) {
      remove_stale_temps(*out_storage, out_root);
      st.write_atomic(manifest_path, json::dump(manifest, 2));
      remove_fit_state(st, s.path("state"), L);
    }
    ex.barrier();
  }
  s.manifest = std::move(manifest);
  s.fitted = true;
  report.points = N;
  report.seconds = since(t_fit);
  report.points_levels_per_second = report.seconds > 0 ? static_cast<double>(points_levels) / report.seconds : 0;
  return report;
}

PredictReport TaxonomyEngine::predict(const std::string& input_uri, const std::string& output_uri,
                                      const FitOptions& options) const {
  // Under mpirun / srun (options.executor, as for fit) the ranks claim the shards
  // dynamically and each writes its shards' files (with device cuda, each on its local
  // GPU); every rank returns the totals. A failure on one rank stops all of them.
  std::unique_ptr<dist::Executor> ex = dist::make_executor(options.executor);
  return on_workers(*ex, [&] { return predict_shards(*ex, input_uri, output_uri, options); });
}

PredictReport TaxonomyEngine::predict_shards(dist::Executor& ex, const std::string& input_uri,
                                             const std::string& output_uri, const FitOptions& options) const {
  const Impl& s = *impl_;
  if (!s.fitted) throw_error(ErrorCode::kFailedPrecondition, "predict: the taxonomy is not fitted");
  Dataset data = Dataset::open(input_uri, read_options(s.config));
  if (data.dim() != s.tree.dim())
    throw_error(ErrorCode::kInvalidArgument, "dataset '" + input_uri + "' has dim " +
                                                 std::to_string(data.dim()) + ", taxonomy has dim " +
                                                 std::to_string(s.tree.dim()));
  check_unique_stems(data);
  std::string out_root;
  auto out_storage = open_storage_for_uri(output_uri, &out_root);
  const int L = s.tree.levels();
  if (options.beam < 1) throw_error(ErrorCode::kInvalidArgument, "predict: beam must be >= 1, got " + std::to_string(options.beam));
  const bool on_gpu = Impl::predict_on_gpu(options);
  // Where the time goes (options.log at the end): preparing the device, reading (and
  // checking) batches, descending, writing the outputs.
  double prepare_s = 0, read_s = 0, descend_s = 0, write_s = 0;
  const auto t_start = Clock::now();
  auto t_lap = t_start;
  auto lap = [&t_lap](double& into) {
    const auto now = Clock::now();
    into += std::chrono::duration<double>(now - t_lap).count();
    t_lap = now;
  };
  // On a GPU: one backend holding every level's centroids on the device (the fit's descent:
  // each row against all children of its node, grouped by node, one launch a batch and
  // level). Batches are read into its page-locked buffer (as stored, or converted to the
  // dtype it multiplies in), copied to the device as they land and kept there until their
  // last level (a cosine model's rows normalised as the fit's are).
  std::unique_ptr<taxonomy::ComputeBackend> gpu;
  if (on_gpu) {
    gpu = taxonomy::make_compute_backend("cuda", s.predict_gpu_dtype(options), options.predict_gpu, data.dtype());
    gpu->keep_prepared_levels();
    for (int l = 1; l <= L; ++l) gpu->prepare_level(s.tree, l);
  }
  lap(prepare_s);
  const std::int64_t d = s.tree.dim();
  const kernels::KnnOptions knn = s.knn_options();
  PredictReport report;
  Progress bar("predict", data.rows(), "pts", options.progress && ex.workers() == 1);
  std::vector<std::int32_t> prev, node, child;
  std::vector<float> batch_floats;  // every shard's f32 batches (one allocation)
  ex.run_shards(static_cast<std::int64_t>(data.shards().size()), [&](std::int64_t shard_index) {
    const auto si = static_cast<std::size_t>(shard_index);
    const ShardInfo& shard = data.shards()[si];
    std::vector<std::int32_t> paths(static_cast<std::size_t>(shard.rows * L), -1);
    std::vector<float> dist(static_cast<std::size_t>(shard.rows), 0.f);
    if (shard.rows > 0) {
      BatchReader reader(data, si, s.config.batch_rows, 0, -1, &batch_floats);
      // As the fit's passes (route_rows): into the GPU's page-locked buffer, kept.
      const BackendRows routed = gpu ? route_rows(reader, *gpu, data, static_cast<std::int64_t>(si), s.config.batch_rows,
                                                  s.normalise(), nullptr)
                                     : BackendRows{};
      Batch batch;
      while (reader.next(&batch)) {
        if (options.should_stop && options.should_stop())
          throw_error(ErrorCode::kCancelled, "predict interrupted (outputs of finished shards are kept)");
        if (!batch.checked) check_finite(batch, data);
        lap(read_s);
        const std::int64_t n = batch.view.rows, r0 = batch.local_begin;
        if (on_gpu) {
          if (s.normalise() && !routed.normalised()) taxonomy::normalise_rows(batch.data, n, d, s.config.threads);
          prev.assign(static_cast<std::size_t>(n), 0);
          node.resize(static_cast<std::size_t>(n));
          child.resize(static_cast<std::size_t>(n));
          float* out_dist = dist.data() + r0;
          const auto sid = static_cast<std::int64_t>(si);
          for (int l = 1; l <= L; ++l) {
            if (l > 1 && gpu->resident(sid, r0, n)) {
              gpu->descend_resident(s.tree, l, sid, r0, n, prev.data(), node.data(), child.data(), out_dist);
            } else {
              if (routed.in_buffer && l == 1) gpu->offer_resident(sid, r0);
              if (routed.normalised_by_backend) gpu->normalise_next_rows();
              gpu->descend(s.tree, l, batch.view, prev.data(), node.data(), child.data(), out_dist, knn);
            }
            for (std::int64_t i = 0; i < n; ++i)
              paths[static_cast<std::size_t>((r0 + i) * L + l - 1)] = child[static_cast<std::size_t>(i)];
            prev.swap(node);
          }
          gpu->forget_resident(sid, r0);
        } else {
          Prediction p = this->predict(batch.view, options.beam);
          report.beam_changed += p.beam_changed;
          std::copy(p.paths.begin(), p.paths.end(), paths.begin() + r0 * L);
          std::copy(p.distances.begin(), p.distances.end(), dist.begin() + r0);
        }
        report.rows += n;
        bar.add(n);
        lap(descend_s);
      }
    }
    lap(read_s);
    write_outputs(*out_storage, out_root, data, si, paths, dist, output_ids(data, si), L, s.config.output_format);
    lap(write_s);
  });
  if (options.log) {
    const std::string who = ex.workers() > 1 ? "rank " + std::to_string(ex.rank()) + "/" +
                                                   std::to_string(ex.workers()) + ": "
                                             : "";
    char line[256];
    std::snprintf(line, sizeof line,
                  "predict: %lld rows in %.3f s on %s (prepare %.3f, read %.3f, descend %.3f, outputs %.3f)",
                  static_cast<long long>(report.rows), since(t_start), on_gpu ? "cuda" : "cpu", prepare_s, read_s,
                  descend_s, write_s);
    options.log(who + line);
    if (gpu) options.log(who + "predict: " + gpu->take_descend_breakdown());
  }
  std::int64_t totals[2] = {report.rows, report.beam_changed};
  ex.allreduce_sum(totals);
  report.rows = totals[0];
  report.beam_changed = totals[1];
  return report;
}

}  // namespace megatax
