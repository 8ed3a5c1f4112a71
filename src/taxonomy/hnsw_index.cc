#include "taxonomy/hnsw_index.h"

#include <hnswlib/hnswlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "kernels/cpu/pair_distance.h"
#include "megatax/dtype.h"
#include "megatax/error.h"

namespace megatax::taxonomy {
namespace {

// ---- hnswlib's side: the space the graph is built with --------------------------------

// hnswlib's distance signature over our pair kernels (param -> DistParam).
struct DistParam {
  std::size_t dim = 0;
  kernels::PairDistanceFn fn = nullptr;
};
float hnsw_distance(const void* a, const void* b, const void* param) {
  const auto* p = static_cast<const DistParam*>(param);
  return p->fn(static_cast<const float*>(a), b, static_cast<std::int64_t>(p->dim));
}

// f32 rows, distance = our f32 pair kernel (L2: squared distance; inner product: -<x, y>,
// smaller is nearer).
class Space final : public hnswlib::SpaceInterface<float> {
 public:
  Space(std::int64_t dim, kernels::PairDistanceFn fn) {
    param_.dim = static_cast<std::size_t>(dim);
    param_.fn = fn;
  }
  std::size_t get_data_size() override { return param_.dim * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return &hnsw_distance; }
  void* get_dist_func_param() override { return &param_; }

 private:
  DistParam param_;
};

// hnswlib 0.6 reads and writes indexes through file paths only; bytes go through a private
// temporary file (removed on every path out).
class TempFile {
 public:
  TempFile() {
    static std::atomic<std::uint64_t> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("megatax-hnsw-" + std::to_string(::getpid()) + "-" +
              std::to_string(counter.fetch_add(1)) + ".bin"))
                .string();
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- The search's own structures ---------------------------------------------------------

// Zeroed bytes, 64-byte aligned; large buffers are 2 MiB aligned and asked to be backed by
// huge pages (Linux transparent huge pages in "madvise" mode; a hint, failure is harmless):
// a search touches rows all over the buffer.
class AlignedBytes {
 public:
  void allocate(std::size_t bytes) {
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    const std::size_t align = bytes >= kHuge ? kHuge : 64;
    const std::size_t rounded = std::max((bytes + align - 1) / align * align, align);
    p_.reset(std::aligned_alloc(align, rounded));
    if (!p_)
      throw_error(ErrorCode::kResourceExhausted,
                  "hnsw: cannot allocate " + std::to_string(bytes) + " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == kHuge) (void)::madvise(p_.get(), rounded, MADV_HUGEPAGE);
#endif
    std::memset(p_.get(), 0, rounded);
  }
  char* data() const { return static_cast<char*>(p_.get()); }

 private:
  struct Free {
    void operator()(void* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<void, Free> p_;
};

// Asks for every cache line of [p, p + bytes).
inline void prefetch_lines(const void* p, std::size_t bytes) {
  constexpr std::uintptr_t kLine = 64;
  const auto* c = static_cast<const char*>(p);
  const char* end = c + bytes;
  for (const char* q =
           reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(c) & ~(kLine - 1));
       q < end; q += kLine)
    __builtin_prefetch(q, 0, 3);
}

// A candidate: (distance, internal id), ordered by distance, ties to the smaller id (the
// search does not depend on container details).
struct Candidate {
  float d;
  std::uint32_t id;
};
inline bool nearer(const Candidate& a, const Candidate& b) {
  return a.d < b.d || (a.d == b.d && a.id < b.id);
}

// The search list of layer 0: the (at most) ef nearest candidates seen, sorted by `nearer`,
// each flagged once expanded. Equivalent to hnswlib's pair of heaps up to ties (hnswlib
// admits a candidate only when strictly nearer than the farthest kept; here an equal
// distance and a smaller id also enter): it expands the nearest unexpanded candidate among
// the ef nearest seen, and stops when none is left. Insertion: binary search, then one
// memmove of the tail (the flags live in a parallel byte array).
class CandidateList {
 public:
  void reset(std::size_t capacity) {
    capacity_ = capacity;
    size_ = 0;
    next_ = 0;
    items_.resize(capacity + 1);
    expanded_.resize(capacity + 1);
  }
  std::size_t size() const { return size_; }
  const Candidate& operator[](std::size_t i) const { return items_[i]; }
  void offer(const Candidate& e) {
    if (size_ == capacity_ && !nearer(e, items_[size_ - 1])) return;
    std::size_t lo = 0, hi = size_;  // first position whose item is not nearer than e
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (nearer(items_[mid], e))
        lo = mid + 1;
      else
        hi = mid;
    }
    const std::size_t tail = size_ - lo;  // the farthest falls into the spare slot when full
    std::memmove(&items_[lo + 1], &items_[lo], tail * sizeof(Candidate));
    std::memmove(&expanded_[lo + 1], &expanded_[lo], tail);
    items_[lo] = e;
    expanded_[lo] = 0;
    size_ = std::min(size_ + 1, capacity_);
    next_ = std::min(next_, lo);
  }
  // The nearest candidate not yet expanded (flagged now); false when there is none.
  bool pop_unexpanded(Candidate* out) {
    while (next_ < size_ && expanded_[next_]) ++next_;
    if (next_ >= size_) return false;
    expanded_[next_] = 1;
    *out = items_[next_];
    return true;
  }

 private:
  std::vector<Candidate> items_;        // capacity + 1 (a spare slot for the shift)
  std::vector<std::uint8_t> expanded_;  // parallel to items_
  std::size_t capacity_ = 0, size_ = 0, next_ = 0;
};

// The rows a search has evaluated. Graphs of up to `bitset_rows` rows (HnswParams): one bit
// per row (32 KiB at the default limit, cleared per query); wider ones: an open-addressing
// set of ids (linear probing) sized to the work of one search rather than to the graph.
// Either way the sets of the queries in flight together stay in cache.
class VisitedSet {
 public:
  void clear(std::size_t rows, std::size_t bitset_rows) {
    bitset_ = rows <= bitset_rows;
    if (bitset_) {
      bits_.assign((rows + 63) / 64, 0);
      return;
    }
    if (slots_.empty()) slots_.resize(kInitial);
    std::fill(slots_.begin(), slots_.end(), kEmpty);
    size_ = 0;
  }
  // Adds id; false when it was already there.
  bool insert(std::uint32_t id) {
    if (bitset_) {
      std::uint64_t& w = bits_[id >> 6];
      const std::uint64_t bit = std::uint64_t{1} << (id & 63);
      if (w & bit) return false;
      w |= bit;
      return true;
    }
    if (2 * (size_ + 1) > slots_.size()) grow();
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t h = hash(id) & mask;; h = (h + 1) & mask) {
      if (slots_[h] == id) return false;
      if (slots_[h] == kEmpty) {
        slots_[h] = id;
        ++size_;
        return true;
      }
    }
  }

 private:
  static constexpr std::uint32_t kEmpty = 0xFFFFFFFFu;  // never an id (ids < 2^32 - 1)
  static constexpr std::size_t kInitial = 1024;
  static std::size_t hash(std::uint32_t id) {
    return static_cast<std::size_t>((id * 0x9E3779B1u) >> 7);
  }
  void grow() {
    std::vector<std::uint32_t> old(slots_.size() * 2, kEmpty);
    old.swap(slots_);
    size_ = 0;
    for (std::uint32_t id : old)
      if (id != kEmpty) insert(id);
  }
  bool bitset_ = true;
  std::vector<std::uint64_t> bits_;
  std::vector<std::uint32_t> slots_;
  std::size_t size_ = 0;
};

// The rows a search walks on: row(id) = base + id * stride, `bytes` of them read per
// distance, `fn` the distance; `exact`: f32 rows (walk distances are the exact ones).
struct WalkView {
  const char* base = nullptr;
  std::size_t stride = 0, bytes = 0;
  kernels::PairDistanceFn fn = nullptr;
  bool exact = true;
  const char* row(std::uint32_t id) const { return base + static_cast<std::size_t>(id) * stride; }
};

// hnswlib 0.6's index header (saveIndex/loadIndex, LP64): 6 size_t (offsetLevel0,
// max_elements, cur_element_count, size_data_per_element, label_offset, offsetData), int
// maxlevel, uint32 enterpoint_node, 3 size_t (maxM, maxM0, M), double mult, size_t
// ef_construction; then cur_element_count records of size_data_per_element bytes
// ([uint32 count + maxM0 uint32 links][dim f32][uint64 label]); then per element a uint32
// byte count and its upper-layer link lists. hnswlib's loader trusts these fields (a bad
// offset makes it read out of bounds), so they are checked against rows and dim first.
void check_header(const std::string& bytes, std::int64_t rows, std::int64_t dim,
                  const std::string& what) {
  constexpr std::size_t kHeader = 6 * 8 + 4 + 4 + 3 * 8 + 8 + 8;
  auto bad = [&](const std::string& why) {
    throw_error(ErrorCode::kDataLoss, what + ": not a usable HNSW graph: " + why);
  };
  if (bytes.size() < kHeader) bad("shorter than its header");
  std::size_t f[6];
  std::memcpy(f, bytes.data(), sizeof f);
  std::int32_t maxlevel = 0;
  std::uint32_t entry = 0;
  std::size_t m[3];
  std::memcpy(&maxlevel, bytes.data() + 48, 4);
  std::memcpy(&entry, bytes.data() + 52, 4);
  std::memcpy(m, bytes.data() + 56, sizeof m);
  const std::size_t count = f[2], record = f[3], label_offset = f[4], data_offset = f[5];
  const std::size_t max_m = m[0], max_m0 = m[1];
  if (count != static_cast<std::size_t>(rows) || f[1] != count)
    bad("graph of " + std::to_string(count) + " points (capacity " + std::to_string(f[1]) +
        "), expected " + std::to_string(rows));
  if (max_m0 < 1 || max_m0 > 2048 || max_m < 1 || max_m > max_m0)
    bad("degree " + std::to_string(max_m0) + " out of range");
  const std::size_t links0 = 4 + 4 * max_m0, row = static_cast<std::size_t>(dim) * sizeof(float);
  if (f[0] != 0 || data_offset != links0 || label_offset != links0 + row ||
      record != links0 + row + 8)
    bad("records of " + std::to_string(record) + " bytes, expected " +
        std::to_string(links0 + row + 8) + " (dim " + std::to_string(dim) + ", degree " +
        std::to_string(max_m0) + ")");
  if (maxlevel < 0 || maxlevel > 64 || entry >= count) bad("bad entry point");
  if ((bytes.size() - kHeader) / record < count) bad("truncated");
}

}  // namespace

struct CentroidGraph::Impl {
  std::unique_ptr<Space> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index;  // the graph as built/persisted
  Metric metric = Metric::kL2;
  std::int64_t dim = 0;
  std::size_t ef = 1;
  std::size_t rerank = 1;
  std::size_t bitset_rows = 0;
  kernels::SimdLevel level = kernels::SimdLevel::kScalar;
  kernels::PairDistanceFn exact = nullptr;  // f32 x f32 rows
  // The search's own copy: layer-0 links (link_words = maxM0 ids per node, unused ones
  // kNoLink; 128 bytes for M = 16) and the rows it walks on (f16 rows holding centroid *
  // scale, a power of two; or f32), each padded to 64 bytes.
  static constexpr std::uint32_t kNoLink = 0xFFFFFFFFu;
  std::size_t link_words = 0;
  AlignedBytes links;
  AlignedBytes rows;
  float scale = 1.f;
  WalkView compact;  // over `rows`

  static std::unique_ptr<Impl> create(Metric metric, std::int64_t dim, const HnswParams& params);
  void prepare(bool compact_rows);
  void search(const float* x, std::int64_t n, std::int64_t* labels, float* distances,
              std::int64_t* distance_count) const;

  const float* exact_row(std::uint32_t id) const {
    return reinterpret_cast<const float*>(index->getDataByInternalId(id));
  }
  std::uint32_t* links0(std::uint32_t id) const {
    return reinterpret_cast<std::uint32_t*>(links.data()) +
           static_cast<std::size_t>(id) * link_words;
  }
  // Upper-layer links in hnswlib's layout (a 32-bit header whose low 16 bits are the count,
  // then the ids).
  const std::uint32_t* upper_links(std::uint32_t id, int layer) const {
    return reinterpret_cast<const std::uint32_t*>(index->get_linklist(id, layer));
  }
};

std::unique_ptr<CentroidGraph::Impl> CentroidGraph::Impl::create(Metric metric, std::int64_t dim,
                                                                 const HnswParams& params) {
  auto impl = std::make_unique<Impl>();
  impl->metric = metric;
  impl->dim = dim;
  impl->level = kernels::resolve_simd_level(params.simd);
  impl->exact = kernels::pair_distance_kernel(impl->level, metric, DType::kF32);
  impl->space = std::make_unique<Space>(dim, impl->exact);
  impl->rerank = static_cast<std::size_t>(std::max<std::int64_t>(1, params.rerank));
  impl->bitset_rows =
      static_cast<std::size_t>(std::max<std::int64_t>(0, params.visited_bitset_rows));
  return impl;
}

// Copies layer 0's links out of hnswlib's interleaved records, and the rows to walk on: f16
// when `compact_rows` and the centroids are finite -- scaled by the power of two that puts
// the largest magnitude in [2^13, 2^14) (no overflow, the same relative precision at any
// data scale; within 2^-64..2^64) -- else f32.
void CentroidGraph::Impl::prepare(bool compact_rows) {
  const auto& g = *index;
  const std::size_t n = g.cur_element_count;
  link_words = g.maxM0_;
  links.allocate(n * link_words * sizeof(std::uint32_t));
  for (std::size_t i = 0; i < n; ++i) {
    const auto* h =
        reinterpret_cast<const std::uint32_t*>(g.get_linklist0(static_cast<hnswlib::tableint>(i)));
    const std::size_t count = *reinterpret_cast<const std::uint16_t*>(h);
    std::uint32_t* out = links0(static_cast<std::uint32_t>(i));
    std::fill(out, out + link_words, kNoLink);
    std::copy(h + 1, h + 1 + count, out);
  }
  float max_abs = 0.f;
  bool finite = true;
  for (std::size_t i = 0; i < n && finite; ++i) {
    const float* r = exact_row(static_cast<std::uint32_t>(i));
    for (std::int64_t k = 0; k < dim; ++k) {
      finite = finite && std::isfinite(r[k]);
      max_abs = std::max(max_abs, std::fabs(r[k]));
    }
  }
  const bool f16 = compact_rows && finite;
  const auto d = static_cast<std::size_t>(dim);
  compact.exact = !f16;
  compact.bytes = d * (f16 ? sizeof(std::uint16_t) : sizeof(float));
  compact.stride = (compact.bytes + 63) / 64 * 64;
  rows.allocate(n * compact.stride);
  compact.base = rows.data();
  compact.fn = kernels::pair_distance_kernel(level, metric, f16 ? DType::kF16 : DType::kF32);
  scale = 1.f;
  if (f16 && max_abs > 0.f) {
    int e = 0;
    std::frexp(max_abs, &e);  // max_abs < 2^e
    scale = std::ldexp(1.f, std::clamp(14 - e, -64, 64));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const float* r = exact_row(static_cast<std::uint32_t>(i));
    char* out = rows.data() + i * compact.stride;
    if (!f16) {
      std::memcpy(out, r, compact.bytes);
    } else {
      auto* h = reinterpret_cast<std::uint16_t*>(out);
      for (std::size_t k = 0; k < d; ++k) h[k] = f32_to_f16(r[k] * scale);
    }
  }
}

namespace {

// Queries in flight per thread: while one waits for memory, the others work. Measured on a
// 2-vCPU Zen 4 (65,536 x 128 f16 rows): 1 -> 14.8 us/query, 2 -> 11.7, 4 -> 11.8, 8 -> 12.4
// (more slots, more cache pressure); at D = 1024 the walk is bandwidth-bound and the count
// does not matter.
constexpr std::int64_t kInFlight = 4;

// One query in flight. A search is a sequence of steps; each step ends by prefetching what
// the next step of the same query reads, and the slots are stepped round-robin, so that the
// memory latency of one query is spent on the work of the others. A query's steps, and so
// its result, do not depend on the other queries in flight.
struct Slot {
  enum class Step {
    kEntry,           // distance to the entry point
    kUpperLinks,      // read the links of `cur` on `layer` (> 0), prefetch their rows
    kUpperDistances,  // greedy move to the nearest of them
    kLinks,           // layer 0: take the nearest unexpanded candidate, prefetch its links
    kRows,            // read its links, keep the unvisited, prefetch their rows
    kDistances,       // evaluate them, offer them to the list
    kRerank,          // exact distances of the nearest candidates (rows prefetched)
    kIdle,
  };
  Step step = Step::kIdle;
  std::int64_t query = -1;         // index in the batch
  const float* x = nullptr;        // query as walked (scaled for f16 rows)
  const float* x_exact = nullptr;  // query as given
  std::vector<float> scaled;
  int layer = 0;
  std::uint32_t cur = 0;
  float cur_d = 0;
  std::uint32_t pending = 0;         // candidate being expanded (kRows)
  std::vector<std::uint32_t> fresh;  // ids to evaluate (at most maxM0)
  std::vector<float> dist;           // their distances
  std::size_t m = 0;
  CandidateList list;
  VisitedSet visited;
};

}  // namespace

// hnswlib's search, restated over the compact copy: greedy descent of the upper layers from
// the entry point, then a best-first search of layer 0 keeping the ef nearest candidates
// (same admission and stop rules), then the `rerank` nearest re-scored exactly unless the
// walk was exact. Queries run kInFlight at a time (see Slot).
void CentroidGraph::Impl::search(const float* x, std::int64_t n, std::int64_t* labels,
                                 float* distances, std::int64_t* distance_count) const {
  const auto& g = *index;
  thread_local std::vector<Slot> slots;
  const std::size_t in_flight = static_cast<std::size_t>(std::min<std::int64_t>(n, kInFlight));
  if (slots.size() < in_flight) slots.resize(in_flight);
  std::int64_t evaluated = 0;
  std::int64_t next_query = 0, done = 0;

  auto start = [&](Slot& s) {
    if (next_query >= n) {
      s.step = Slot::Step::kIdle;
      return;
    }
    s.query = next_query++;
    s.fresh.resize(link_words);
    s.dist.resize(link_words);
    s.x_exact = x + s.query * dim;
    s.x = s.x_exact;
    if (!compact.exact && scale != 1.f) {
      // (scale <= 2^64: a scaled value overflows only where the exact squared distance would.)
      s.scaled.resize(static_cast<std::size_t>(dim));
      for (std::int64_t k = 0; k < dim; ++k)
        s.scaled[static_cast<std::size_t>(k)] = s.x_exact[k] * scale;
      s.x = s.scaled.data();
    }
    s.cur = g.enterpoint_node_;
    s.layer = g.maxlevel_;
    prefetch_lines(compact.row(s.cur), compact.bytes);
    s.step = Slot::Step::kEntry;
  };
  auto enter_layer0 = [&](Slot& s) {
    s.list.reset(ef);
    s.visited.clear(g.cur_element_count, bitset_rows);
    s.visited.insert(s.cur);
    s.list.offer({s.cur_d, s.cur});
    prefetch_lines(links0(s.cur), link_words * sizeof(std::uint32_t));
    s.step = Slot::Step::kLinks;
  };
  auto to_upper = [&](Slot& s) {
    if (s.layer == 0) return enter_layer0(s);
    prefetch_lines(upper_links(s.cur, s.layer), g.size_links_per_element_);
    s.step = Slot::Step::kUpperLinks;
  };
  auto finish = [&](Slot& s) {
    Candidate top = s.list[0];
    if (!compact.exact) {
      const std::size_t r = std::min(rerank, s.list.size());
      top = {exact(s.x_exact, exact_row(s.list[0].id), dim), s.list[0].id};
      for (std::size_t j = 1; j < r; ++j) {
        const Candidate e = {exact(s.x_exact, exact_row(s.list[j].id), dim), s.list[j].id};
        if (nearer(e, top)) top = e;
      }
    }
    labels[s.query] = static_cast<std::int64_t>(g.getExternalLabel(top.id));
    distances[s.query] = metric == Metric::kL2 ? top.d : -top.d;
    ++done;
    start(s);
  };

  for (std::size_t i = 0; i < in_flight; ++i) start(slots[i]);
  while (done < n) {
    for (std::size_t i = 0; i < in_flight; ++i) {
      Slot& s = slots[i];
      switch (s.step) {
        case Slot::Step::kEntry:
          ++evaluated;
          s.cur_d = compact.fn(s.x, compact.row(s.cur), dim);
          to_upper(s);
          break;
        case Slot::Step::kUpperLinks: {
          const std::uint32_t* h = upper_links(s.cur, s.layer);
          s.m = *reinterpret_cast<const std::uint16_t*>(h);
          for (std::size_t j = 0; j < s.m; ++j) {
            s.fresh[j] = h[1 + j];
            prefetch_lines(compact.row(s.fresh[j]), compact.bytes);
          }
          s.step = Slot::Step::kUpperDistances;
          break;
        }
        case Slot::Step::kUpperDistances: {
          bool changed = false;
          evaluated += static_cast<std::int64_t>(s.m);
          for (std::size_t j = 0; j < s.m; ++j) {
            const float d = compact.fn(s.x, compact.row(s.fresh[j]), dim);
            if (d < s.cur_d) {
              s.cur_d = d;
              s.cur = s.fresh[j];
              changed = true;
            }
          }
          if (!changed) --s.layer;
          to_upper(s);
          break;
        }
        case Slot::Step::kLinks: {
          Candidate c;
          if (!s.list.pop_unexpanded(&c)) {
            const std::size_t r = compact.exact ? 0 : std::min(rerank, s.list.size());
            for (std::size_t j = 0; j < r; ++j)
              prefetch_lines(exact_row(s.list[j].id), static_cast<std::size_t>(dim) * 4);
            s.step = Slot::Step::kRerank;
            break;
          }
          s.pending = c.id;
          prefetch_lines(links0(c.id), link_words * sizeof(std::uint32_t));
          s.step = Slot::Step::kRows;
          break;
        }
        case Slot::Step::kRows: {
          const std::uint32_t* nb = links0(s.pending);
          s.m = 0;
          for (std::size_t j = 0; j < link_words && nb[j] != kNoLink; ++j) {
            const std::uint32_t id = nb[j];
            if (!s.visited.insert(id)) continue;
            s.fresh[s.m++] = id;
            prefetch_lines(compact.row(id), compact.bytes);
          }
          s.step = Slot::Step::kDistances;
          break;
        }
        case Slot::Step::kDistances:
          // All distances first, then the (branchy) list updates.
          for (std::size_t j = 0; j < s.m; ++j)
            s.dist[j] = compact.fn(s.x, compact.row(s.fresh[j]), dim);
          for (std::size_t j = 0; j < s.m; ++j) s.list.offer({s.dist[j], s.fresh[j]});
          evaluated += static_cast<std::int64_t>(s.m);
          s.step = Slot::Step::kLinks;
          break;
        case Slot::Step::kRerank: finish(s); break;
        case Slot::Step::kIdle: break;
      }
    }
  }
  if (distance_count != nullptr) *distance_count += evaluated;
}

CentroidGraph::CentroidGraph(std::unique_ptr<Impl> impl, std::int64_t rows)
    : impl_(std::move(impl)), rows_(rows) {}
CentroidGraph::~CentroidGraph() = default;

std::unique_ptr<CentroidGraph> CentroidGraph::build(const float* centroids, std::int64_t rows,
                                                    std::int64_t dim, Metric metric,
                                                    const HnswParams& params) {
  if (rows < 1 || dim < 1)
    throw_error(ErrorCode::kInvalidArgument, "hnsw: need at least one centroid");
  if (params.m < 2 || params.m > 1024)
    throw_error(ErrorCode::kInvalidArgument, "hnsw: m must be in [2, 1024]");
  auto impl = Impl::create(metric, dim, params);
  impl->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(
      impl->space.get(), static_cast<std::size_t>(rows), static_cast<std::size_t>(params.m),
      static_cast<std::size_t>(params.ef_construction), static_cast<std::size_t>(params.seed));
  // One thread, insertion in row order: the graph is a function of the centroids alone.
  for (std::int64_t i = 0; i < rows; ++i)
    impl->index->addPoint(centroids + i * dim, static_cast<hnswlib::labeltype>(i));
  impl->prepare(params.compact);
  auto g = std::unique_ptr<CentroidGraph>(new CentroidGraph(std::move(impl), rows));
  g->set_ef(params.ef);
  return g;
}

std::unique_ptr<CentroidGraph> CentroidGraph::load(const std::string& bytes, std::int64_t rows,
                                                   std::int64_t dim, Metric metric,
                                                   const HnswParams& params,
                                                   const std::string& what) {
  check_header(bytes, rows, dim, what);
  TempFile tmp;
  {
    std::ofstream out(tmp.path(), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw_error(ErrorCode::kInternal, what + ": cannot stage the graph in " + tmp.path());
  }
  auto impl = Impl::create(metric, dim, params);
  try {
    impl->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(impl->space.get(), tmp.path());
  } catch (const std::exception& e) {
    throw_error(ErrorCode::kDataLoss, what + ": not a readable HNSW graph (" + e.what() + ")");
  }
  // The search trusts the graph: check the rest once (layers, labels, links, entry point).
  const auto& g = *impl->index;
  auto bad = [&](const std::string& why) {
    throw_error(ErrorCode::kDataLoss, what + ": not a usable HNSW graph: " + why);
  };
  for (std::size_t i = 0; i < g.cur_element_count; ++i) {
    // (hnswlib's num_deleted_ is not initialised on load: read the marks.)
    if (g.isMarkedDeleted(static_cast<hnswlib::tableint>(i)))
      bad("node " + std::to_string(i) + " is marked deleted");
    const int top_layer = g.element_levels_[i];
    if (top_layer < 0 || top_layer > g.maxlevel_)
      bad("node " + std::to_string(i) + " has a bad layer");
    if (g.getExternalLabel(static_cast<hnswlib::tableint>(i)) >= g.cur_element_count)
      bad("node " + std::to_string(i) + " has a bad label");
    for (int layer = 0; layer <= top_layer; ++layer) {
      const auto* h = reinterpret_cast<const std::uint32_t*>(
          layer == 0 ? g.get_linklist0(static_cast<hnswlib::tableint>(i))
                     : g.get_linklist(static_cast<hnswlib::tableint>(i), layer));
      const std::size_t count = *reinterpret_cast<const std::uint16_t*>(h);
      if (count > (layer == 0 ? g.maxM0_ : g.maxM_))
        bad("node " + std::to_string(i) + " has too many links");
      for (std::size_t j = 0; j < count; ++j)
        if (h[1 + j] >= g.cur_element_count || g.element_levels_[h[1 + j]] < layer)
          bad("node " + std::to_string(i) + " has a bad link");
    }
  }
  if (g.element_levels_[g.enterpoint_node_] != g.maxlevel_) bad("bad entry point");
  impl->prepare(params.compact);
  auto out = std::unique_ptr<CentroidGraph>(new CentroidGraph(std::move(impl), rows));
  out->set_ef(params.ef);
  return out;
}

std::string CentroidGraph::serialize() const {
  TempFile tmp;
  impl_->index->saveIndex(tmp.path());
  std::ifstream in(tmp.path(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty())
    throw_error(ErrorCode::kInternal, "hnsw: cannot serialise the graph through " + tmp.path());
  return bytes;
}

void CentroidGraph::set_ef(std::int64_t ef) {
  impl_->ef = static_cast<std::size_t>(std::max<std::int64_t>(1, ef));
  impl_->index->setEf(impl_->ef);
}

void CentroidGraph::search(const float* x, std::int64_t* label, float* distance) const {
  impl_->search(x, 1, label, distance, nullptr);
}

void CentroidGraph::search(const float* x, std::int64_t n, std::int64_t* labels, float* distances,
                           std::int64_t* distance_count) const {
  if (n > 0) impl_->search(x, n, labels, distances, distance_count);
}

}  // namespace megatax::taxonomy
