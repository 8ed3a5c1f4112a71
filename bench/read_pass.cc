// bench_read_pass: the floor of a fit's pass that reads X (level 1, or every level when the
// GPU keeps nothing: MEGATAX_CUDA_RESIDENT=0): every shard read once through the engine's own
// path -- Dataset::open + BatchReader, rows as stored (f32, f16, bf16) in parallel ranges on
// all cores, checked for non-finite values while they land -- into one buffer reused shard
// after shard, as a pass's reads do, with no descent, no copy to a device and no bookkeeping.
// `cat` of the files is no such floor: it reads on one thread (6.6-7.9 GB/s on the H200 hosts
// of session 52, where a pass reads at ~23 GB/s).
//
//   bench_read_pass INPUT [--batch-rows N] [--repeat R]
//
// INPUT: what `megatax fit --input` takes (a file, a folder, a glob, a URI). Prints one line a
// round and a last line "best S s = G GB/s (B bytes as stored, rows x dim)" (GB/s of stored
// bytes). Exit status 1 with the error on a bad input (a non-finite value names its row).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "megatax/dataset.h"
#include "megatax/error.h"

int main(int argc, char** argv) {
  if (argc < 2 || (argc % 2) != 0) {
    std::fprintf(stderr, "usage: %s INPUT [--batch-rows N] [--repeat R]\n", argv[0]);
    return 2;
  }
  const std::string input = argv[1];
  std::int64_t batch_rows = 1 << 20;  // the fit's default batch
  int repeat = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--batch-rows") {
      batch_rows = std::atoll(argv[i + 1]);
    } else if (flag == "--repeat") {
      repeat = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (batch_rows < 1 || repeat < 1) {
    std::fprintf(stderr, "--batch-rows and --repeat must be >= 1\n");
    return 2;
  }
  try {
    const megatax::Dataset ds = megatax::Dataset::open(input);
    const std::size_t row_bytes = static_cast<std::size_t>(ds.dim()) * megatax::dtype_size(ds.dtype());
    std::vector<unsigned char> buffer;
    double best = 1e300;
    std::int64_t rows = 0;
    std::uint64_t touched = 0;  // read back from every batch, so that no read is optimised away
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      rows = 0;
      for (std::size_t s = 0; s < ds.shards().size(); ++s) {
        megatax::BatchReader reader(ds, s, batch_rows);
        const std::size_t need = static_cast<std::size_t>(std::min<std::int64_t>(batch_rows, ds.shards()[s].rows)) * row_bytes;
        if (buffer.size() < need) buffer.resize(need);
        reader.keep_stored_dtype(buffer.data(), buffer.size());
        megatax::Batch b;
        while (reader.next(&b)) {
          if (!b.checked) megatax::check_finite(b, ds);
          rows += b.view.rows;
          touched += buffer[0] + buffer[static_cast<std::size_t>(b.view.rows) * row_bytes - 1];
        }
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, seconds);
      std::printf("round %d: %.3f s = %.2f GB/s\n", r + 1, seconds,
                  static_cast<double>(rows) * static_cast<double>(row_bytes) / seconds / 1e9);
    }
    const double bytes = static_cast<double>(rows) * static_cast<double>(row_bytes);
    std::printf("best %.3f s = %.2f GB/s (%.0f bytes as stored, %lld x %lld %s; check %llu)\n", best,
                bytes / best / 1e9, bytes, static_cast<long long>(rows), static_cast<long long>(ds.dim()),
                megatax::dtype_name(ds.dtype()), static_cast<unsigned long long>(touched % 1000));
    return 0;
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_read_pass: %s\n", e.what());
    return 1;
  }
}
