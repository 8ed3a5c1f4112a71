// bench_sample_gather: the cost of gathering a training sample's rows from shard files, as
// the fit does when X is not kept on the GPU: sorted random rows of each shard, read by
// PosixStorage::read_ranges in runs of `--run` rows (a node's rows in one shard), through
// the kept mappings (io::MappedFiles, what read_ranges uses for >= 8 ranges) against one
// pread per row (the path before; runs of fewer than 8 rows still take it), same files,
// same run, rounds in turns (each round with mappings of its own, made and first touched
// in it, as in a fit). Prints microseconds per row per thread and GB/s.
//
//   bench_sample_gather [--dir DIR] [--shards S] [--rows-per-shard N] [--row-bytes B]
//                       [--fraction F] [--run R] [--threads T] [--rounds K]
// The files are written first and read once (page cache warm), then removed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "io/posix_storage.h"

namespace {

using megatax::Storage;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir = "/tmp/megatax_sample_gather";
  int shards = 16;
  std::int64_t rows_per_shard = 125000;
  std::int64_t row_bytes = 2048;  // 1024 x f16
  double fraction = 0.5;          // of the rows gathered
  std::int64_t run = 12;          // rows a read_ranges call (a node's rows of one shard)
  int threads = 0;
  int rounds = 3;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") a.dir = v;
    else if (k == "--shards") a.shards = std::stoi(v);
    else if (k == "--rows-per-shard") a.rows_per_shard = std::stoll(v);
    else if (k == "--row-bytes") a.row_bytes = std::stoll(v);
    else if (k == "--fraction") a.fraction = std::stod(v);
    else if (k == "--run") a.run = std::stoll(v);
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--rounds") a.rounds = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  std::filesystem::create_directories(a.dir);
  megatax::io::PosixStorage storage;
  std::vector<std::string> paths;
  std::mt19937_64 rng(42);
  {
    std::vector<unsigned char> data(static_cast<std::size_t>(a.rows_per_shard * a.row_bytes));
    for (int s = 0; s < a.shards; ++s) {
      for (auto& b : data) b = static_cast<unsigned char>(rng());
      paths.push_back(a.dir + "/shard-" + std::to_string(s) + ".bin");
      storage.write_atomic(paths.back(), std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
      storage.read_range(paths.back(), 0, data.size(), data.data());  // in the page cache
    }
  }
  // Calls of `run` sorted rows of one shard each, the wanted rows spread over every shard.
  struct Call {
    int shard;
    std::vector<std::int64_t> rows;
  };
  std::vector<Call> calls;
  std::int64_t total_rows = 0;
  for (int s = 0; s < a.shards; ++s) {
    std::vector<std::int64_t> rows;
    for (std::int64_t r = 0; r < a.rows_per_shard; ++r)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < a.fraction) rows.push_back(r);
    std::shuffle(rows.begin(), rows.end(), rng);
    for (std::size_t i = 0; i < rows.size(); i += static_cast<std::size_t>(a.run)) {
      Call c{s, std::vector<std::int64_t>(rows.begin() + static_cast<std::ptrdiff_t>(i),
                                          rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), i + static_cast<std::size_t>(a.run))))};
      std::sort(c.rows.begin(), c.rows.end());
      total_rows += static_cast<std::int64_t>(c.rows.size());
      calls.push_back(std::move(c));
    }
  }
  std::shuffle(calls.begin(), calls.end(), rng);  // node problems visit the shards in any order
  const int T = megatax::resolve_threads(a.threads, static_cast<std::int64_t>(calls.size()));
  std::vector<std::vector<unsigned char>> out(static_cast<std::size_t>(T),
                                              std::vector<unsigned char>(static_cast<std::size_t>(a.run * a.row_bytes)));
  auto gather = [&](bool mapped) {
    // A fresh storage a round: its mappings are made and their pages first touched in the
    // round, as in a fit's gather (each sample row read once).
    megatax::io::PosixStorage fresh;
    const auto t0 = Clock::now();
    megatax::parallel_for(T, static_cast<std::int64_t>(calls.size()), [&](std::int64_t c, int worker) {
      const Call& call = calls[static_cast<std::size_t>(c)];
      unsigned char* dst = out[static_cast<std::size_t>(worker)].data();
      std::vector<Storage::ReadRequest> req(call.rows.size());
      for (std::size_t i = 0; i < req.size(); ++i)
        req[i] = {static_cast<std::uint64_t>(call.rows[i] * a.row_bytes), static_cast<std::uint64_t>(a.row_bytes),
                  dst + static_cast<std::int64_t>(i) * a.row_bytes};
      if (mapped) {
        fresh.read_ranges(paths[static_cast<std::size_t>(call.shard)], req);
      } else {  // one pread per row, as read_ranges did before the mappings
        const int fd = ::open(paths[static_cast<std::size_t>(call.shard)].c_str(), O_RDONLY | O_CLOEXEC);
        for (const auto& r : req)
          if (::pread(fd, r.dst, r.length, static_cast<off_t>(r.offset)) != static_cast<ssize_t>(r.length)) std::abort();
        ::close(fd);
      }
    });
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  const double gb = static_cast<double>(total_rows * a.row_bytes) / 1e9;
  std::printf("bench_sample_gather: %d shards x %lld rows of %lld bytes, %lld rows gathered (%.2f GB) in calls of %lld, %d threads\n",
              a.shards, static_cast<long long>(a.rows_per_shard), static_cast<long long>(a.row_bytes),
              static_cast<long long>(total_rows), gb, static_cast<long long>(a.run), T);
  std::printf("%-6s %-22s %10s %12s %8s\n", "round", "path", "s", "us/row/thr", "GB/s");
  for (int round = 1; round <= a.rounds; ++round) {
    for (const bool mapped : {round % 2 == 0, round % 2 != 0}) {  // the order alternates
      const double s = gather(mapped);
      std::printf("%-6d %-22s %10.3f %12.3f %8.2f\n", round, mapped ? "kept mappings" : "pread per row", s,
                  s * T / static_cast<double>(total_rows) * 1e6, gb / s);
    }
  }
  std::filesystem::remove_all(a.dir);
  return 0;
}
