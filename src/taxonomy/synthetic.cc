#include "taxonomy/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <vector>

#include "core/parallel.h"
#include "core/random.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::taxonomy {
namespace {

// Standard normal by Box-Muller on our portable generator.
double normal(Rng& rng) {
  double u1 = rng.uniform();
  while (u1 <= 0) u1 = rng.uniform();
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

std::string shard_name(const char* prefix, std::int64_t s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%05lld.npy", prefix, static_cast<long long>(s));
  return buf;
}

}  // namespace

void generate_dataset(const SyntheticSpec& spec, const std::string& dir_uri,
                      const std::function<void(std::int64_t)>& on_shard) {
  auto bad = [](const std::string& m) { throw_error(ErrorCode::kInvalidArgument, "gen: " + m); };
  if (spec.n < 1) bad("--n must be >= 1");
  if (spec.dim < 1) bad("--dim must be >= 1");
  if (spec.levels < 1 || spec.levels > 8) bad("--levels must be in [1, 8]");
  if (spec.branching < 2) bad("--branching must be >= 2");
  if (spec.shards < 1 || spec.shards > spec.n) bad("--shards must be in [1, n]");
  if (spec.dtype != DType::kF32 && spec.dtype != DType::kF16) bad("--dtype must be f32 or f16");
  double leaves_d = std::pow(static_cast<double>(spec.branching), spec.levels);
  if (leaves_d > 5e6) bad("branching^levels must be at most 5,000,000 leaves");
  const std::int64_t d = spec.dim, L = spec.levels, b = spec.branching;
  const auto leaves = static_cast<std::int64_t>(std::llround(leaves_d));

  // Centres of every level, level by level: node j of level l has parent j / b.
  Rng crng(hash64(spec.seed, 0xC3E7, 0));
  std::vector<std::vector<float>> centres(static_cast<std::size_t>(L));
  std::int64_t count = 1;
  for (std::int64_t l = 0; l < L; ++l) {
    count *= b;
    const double spread = std::pow(spec.separation, -static_cast<double>(l));
    auto& c = centres[static_cast<std::size_t>(l)];
    c.resize(static_cast<std::size_t>(count * d));
    for (std::int64_t j = 0; j < count; ++j)
      for (std::int64_t t = 0; t < d; ++t) {
        const float base = l == 0 ? 0.f : centres[static_cast<std::size_t>(l - 1)][static_cast<std::size_t>((j / b) * d + t)];
        c[static_cast<std::size_t>(j * d + t)] = base + static_cast<float>(spread * normal(crng));
      }
  }
  // Leaf popularity (cumulative), uniform or Zipf.
  std::vector<double> cdf(static_cast<std::size_t>(leaves));
  double acc = 0;
  for (std::int64_t j = 0; j < leaves; ++j) {
    acc += spec.zipf > 0 ? 1.0 / std::pow(static_cast<double>(j + 1), spec.zipf) : 1.0;
    cdf[static_cast<std::size_t>(j)] = acc;
  }
  const double noise = std::pow(spec.separation, -static_cast<double>(L));

  std::string root;
  auto storage = open_storage_for_uri(dir_uri, &root);
  storage->make_dirs(root);
  const std::string prefix = root.empty() || root.back() == '/' ? root : root + "/";
  const std::int64_t per = spec.n / spec.shards, extra = spec.n % spec.shards;
  std::mutex progress;
  // Each shard draws from its own generator: the same bits whatever the thread count.
  parallel_for(resolve_threads(spec.threads, spec.shards), spec.shards, [&](std::int64_t s, int) {
    const std::int64_t n = per + (s < extra ? 1 : 0);
    Rng rng(hash64(spec.seed, 0x5EED, static_cast<std::uint64_t>(s)));
    std::vector<float> x(static_cast<std::size_t>(n * d));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n * L));
    for (std::int64_t i = 0; i < n; ++i) {
      const double u = rng.uniform() * acc;
      std::int64_t leaf = std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
      if (leaf >= leaves) leaf = leaves - 1;
      std::int64_t node = leaf;
      for (std::int64_t l = L - 1; l >= 0; --l) {
        labels[static_cast<std::size_t>(i * L + l)] = static_cast<std::int32_t>(node % b);
        node /= b;
      }
      const float* c = centres[static_cast<std::size_t>(L - 1)].data() + leaf * d;
      for (std::int64_t t = 0; t < d; ++t)
        x[static_cast<std::size_t>(i * d + t)] = c[t] + static_cast<float>(noise * normal(rng));
    }
    const std::int64_t xshape[2] = {n, d};
    const std::int64_t lshape[2] = {n, L};
    if (spec.dtype == DType::kF32) {
      write_npy(*storage, prefix + shard_name("part", s), std::span<const float>(x), xshape);
    } else {
      write_npy(*storage, prefix + shard_name("part", s), MatrixView(x.data(), n, d, DType::kF32),
                NpyType::kF16);
    }
    write_npy(*storage, prefix + shard_name("labels", s), std::span<const std::int32_t>(labels), lshape);
    if (on_shard) {
      std::lock_guard<std::mutex> lock(progress);
      on_shard(s);
    }
  });
}

}  // namespace megatax::taxonomy
