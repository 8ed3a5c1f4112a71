// bench_parquet_read: read throughput of a dataset (any format, any storage URI) through the
// engine's own path -- Dataset::open + BatchReader, converted to float32 -- one thread, as a
// worker reads a shard. Prints one line: uri, format, rows, dim, best seconds, GB/s of
// decoded float32 (rows x dim x 4 bytes / seconds).
//
//   bench_parquet_read URI [--column NAME] [--batch-rows N] [--repeat R]
//
// Driven by bench/parquet_read.sh, which compares Parquet with .npy, with pyarrow in Python,
// and S3 (a local moto server) with POSIX.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "megatax/dataset.h"
#include "megatax/error.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s URI [--column NAME] [--batch-rows N] [--repeat R]\n", argv[0]);
    return 2;
  }
  const std::string uri = argv[1];
  megatax::VectorReadOptions options;
  std::int64_t batch_rows = 65536;
  int repeat = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--column") {
      options.column = argv[i + 1];
    } else if (flag == "--batch-rows") {
      batch_rows = std::atoll(argv[i + 1]);
    } else if (flag == "--repeat") {
      repeat = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    double best = 1e300;
    std::int64_t rows = 0;
    std::int64_t dim = 0;
    std::string format;
    double checksum = 0;
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const megatax::Dataset ds = megatax::Dataset::open(uri, options);
      double sum = 0;
      for (std::size_t s = 0; s < ds.shards().size(); ++s) {
        megatax::BatchReader reader(ds, s, batch_rows);
        megatax::Batch b;
        while (reader.next(&b)) sum += b.data[0] + b.data[b.view.rows * b.view.dim - 1];
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, seconds);
      rows = ds.rows();
      dim = ds.dim();
      format = megatax::vector_format_name(ds.shards()[0].format);
      checksum = sum;
    }
    const double gb = static_cast<double>(rows) * static_cast<double>(dim) * 4.0 / 1e9;
    std::printf("{\"uri\": \"%s\", \"format\": \"%s\", \"rows\": %lld, \"dim\": %lld, "
                "\"seconds\": %.3f, \"gb_per_s\": %.3f, \"checksum\": %.6g}\n",
                uri.c_str(), format.c_str(), static_cast<long long>(rows),
                static_cast<long long>(dim), best, gb / best, checksum);
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_parquet_read: %s\n", e.what());
    return 1;
  }
  return 0;
}
