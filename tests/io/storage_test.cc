// Storage contract tests, run against every implementation (POSIX and in-memory), plus
// POSIX-only failure paths (real OS errors), the fault-injection wrapper, glob matching
// and URI dispatch.
#include "megatax/storage.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/fault_injection_storage.h"
#include "io/mapped_files.h"
#include "io/io_test_util.h"
#include "io/memory_storage.h"
#include "io/posix_storage.h"
#include "io/streamed_write.h"

namespace megatax {
namespace {

using io::FaultInjectionStorage;
using io::MemoryStorage;
using io::PosixStorage;
using testing_io::expect_error;
using testing_io::ScratchDir;

// ---- The contract, for both implementations --------------------------------------------

// n bytes of `rng`'s output, as a string (file contents).
std::string random_string(std::mt19937_64& rng, std::size_t n) {
  std::string d(n, '\0');
  for (auto& c : d) c = static_cast<char>(rng());
  return d;
}

class StorageContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "posix") {
      storage_ = std::make_unique<PosixStorage>();
      root_ = scratch_.path();
    } else {
      storage_ = std::make_unique<MemoryStorage>();
      root_ = "/root";
    }
  }
  std::string p(const std::string& name) const { return root_ + "/" + name; }

  ScratchDir scratch_;
  std::unique_ptr<Storage> storage_;
  std::string root_;
};

TEST_P(StorageContractTest, WriteCreatesParentsAndReadsBackRanges) {
  Storage& s = *storage_;
  const std::string path = p("a/b/c.bin");
  std::string data(10000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  s.write_atomic(path, data);
  EXPECT_TRUE(s.exists(path));
  EXPECT_TRUE(s.exists(p("a/b")));
  EXPECT_FALSE(s.exists(p("a/x")));
  EXPECT_EQ(s.size(path), data.size());
  std::string part(100, '\0');
  s.read_range(path, 1234, 100, part.data());
  EXPECT_EQ(part, data.substr(1234, 100));
  s.read_range(path, data.size(), 0, nullptr);  // empty read at the end is fine
  EXPECT_EQ(read_all(s, path), data);

  // Replace with a gather of pieces.
  const std::string x = "hello ", y = "world";
  const ByteSpan pieces[] = {{x.data(), x.size()}, {nullptr, 0}, {y.data(), y.size()}};
  s.write_atomic_gather(path, pieces);
  EXPECT_EQ(read_all(s, path), "hello world");
}

TEST_P(StorageContractTest, ShortReadIsDataLossNamingPathAndOffset) {
  Storage& s = *storage_;
  const std::string path = p("short.bin");
  s.write_atomic(path, std::string(50, 'x'));
  char buf[64];
  expect_error([&] { s.read_range(path, 40, 20, buf); }, ErrorCode::kDataLoss,
               {"short read", path, "offset 40", "wanted 20", "got 10", "file is 50 bytes"});
  expect_error([&] { s.read_range(path, 60, 1, buf); }, ErrorCode::kDataLoss,
               {"short read", path, "offset 60"});
}

// read_ranges = the same bytes and errors as one read_range per request (in order), on
// scattered ranges of random sizes; through the fault-injection wrapper every request counts.
TEST_P(StorageContractTest, ReadRangesEqualsOneReadRangeEach) {
  Storage& s = *storage_;
  const std::string path = p("scatter.bin");
  std::mt19937_64 rng(std::random_device{}());
  std::string data(50000, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  s.write_atomic(path, data);
  std::vector<Storage::ReadRequest> reqs;
  std::vector<std::string> got(200);
  for (std::size_t t = 0; t < got.size(); ++t) {
    const std::uint64_t off = rng() % data.size(), len = rng() % std::min<std::uint64_t>(300, data.size() - off + 1);
    got[t].resize(len);
    reqs.push_back({off, len, got[t].data()});
  }
  s.read_ranges(path, reqs);
  for (std::size_t t = 0; t < got.size(); ++t) EXPECT_EQ(got[t], data.substr(reqs[t].offset, reqs[t].length)) << t;
  s.read_ranges(path, {});  // nothing to read: fine
  char buf[16];
  const Storage::ReadRequest past[] = {{0, 4, buf}, {data.size() - 2, 8, buf}};
  expect_error([&] { s.read_ranges(path, past); }, ErrorCode::kDataLoss, {"short read", path});
  const Storage::ReadRequest one[] = {{0, 4, buf}};
  expect_error([&] { s.read_ranges(p("nope.bin"), one); }, ErrorCode::kNotFound, {p("nope.bin")});
  FaultInjectionStorage faulty(s);
  faulty.read_ranges(path, std::span<const Storage::ReadRequest>(reqs.data(), 3));
  EXPECT_EQ(faulty.reads(), 3);
}

// A file replaced between two read_ranges calls of many rows (POSIX: copies out of a kept
// mapping) is read as the new file, of the same size or another.
TEST_P(StorageContractTest, ReadRangesSeesAReplacedFile) {
  Storage& s = *storage_;
  const std::string path = p("replaced.bin");
  std::mt19937_64 rng(std::random_device{}());
  auto read_rows = [&](std::size_t rows, std::size_t row_bytes) {
    std::string got(rows * row_bytes, '\0');
    std::vector<Storage::ReadRequest> reqs;
    for (std::size_t r = 0; r < rows; ++r) reqs.push_back({r * row_bytes, row_bytes, got.data() + r * row_bytes});
    s.read_ranges(path, reqs);
    return got;
  };
  for (const std::size_t size : {4096u * 3, 4096u * 3, 1000u, 70000u}) {
    const std::string data = random_string(rng, size);
    s.write_atomic(path, data);
    EXPECT_EQ(read_rows(size / 100, 100), data.substr(0, size / 100 * 100)) << size;
  }
}

// map_read_only: POSIX shows the file's bytes in place (the same as read_range gives), kept
// valid while held, also after the file is replaced (a later call maps the new bytes); the
// in-memory storage shows none; both report a missing path as read_range does.
TEST_P(StorageContractTest, MapReadOnlyShowsTheBytesOrNothing) {
  Storage& s = *storage_;
  const std::string path = p("mapped.bin");
  std::mt19937_64 rng(std::random_device{}());
  expect_error([&] { s.map_read_only(p("nope.bin")); }, ErrorCode::kNotFound, {p("nope.bin")});
  const std::string first = random_string(rng, 4096 * 5 + 123);
  s.write_atomic(path, first);
  const auto mapped = s.map_read_only(path);
  if (GetParam() != "posix") {
    EXPECT_EQ(mapped, nullptr);
    return;
  }
  ASSERT_NE(mapped, nullptr);
  ASSERT_EQ(mapped->size, first.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped->data), mapped->size), first);
  EXPECT_EQ(s.map_read_only(path)->data, mapped->data);  // the kept mapping, not another
  // Replaced (another size, then the same size): the held bytes stay the old file's.
  for (const std::size_t size : {std::size_t{70000}, std::size_t{70000}}) {
    const std::string next = random_string(rng, size);
    s.write_atomic(path, next);
    const auto again = s.map_read_only(path);
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(again->data), again->size), next) << size;
  }
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped->data), mapped->size), first);
  s.write_atomic(path, std::string());  // empty: nothing to map
  EXPECT_EQ(s.map_read_only(path), nullptr);
  s.make_dirs(p("adir"));
  expect_error([&] { s.map_read_only(p("adir")); }, ErrorCode::kInvalidArgument, {p("adir")});
}

TEST_P(StorageContractTest, MissingPathsAreNotFound) {
  Storage& s = *storage_;
  char buf[4];
  expect_error([&] { s.read_range(p("nope.bin"), 0, 4, buf); }, ErrorCode::kNotFound,
               {p("nope.bin")});
  expect_error([&] { s.size(p("nope.bin")); }, ErrorCode::kNotFound, {p("nope.bin")});
  expect_error([&] { s.list(p("nodir")); }, ErrorCode::kNotFound, {p("nodir")});
  EXPECT_FALSE(s.exists(p("nope.bin")));
  EXPECT_FALSE(s.remove(p("nope.bin")));
}

TEST_P(StorageContractTest, ListIsSortedAndShowsFilesAndDirs) {
  Storage& s = *storage_;
  for (const char* name : {"b", "a", "c10", "c2", ".hidden"})
    s.write_atomic(p(std::string("d/") + name), "x");
  s.make_dirs(p("d/sub"));
  const std::vector<std::string> want = {".hidden", "a", "b", "c10", "c2", "sub"};
  EXPECT_EQ(s.list(p("d")), want);
  EXPECT_EQ(s.list(p("d/sub")), std::vector<std::string>{});
  expect_error([&] { s.list(p("d/a")); }, ErrorCode::kInvalidArgument, {"not a directory"});
}

TEST_P(StorageContractTest, GlobSortsByNameAndMatchesFilesOnly) {
  Storage& s = *storage_;
  const std::vector<std::string> names = {"part-10.npy", "part-2.npy",  "part-1.npy",
                                          "part-3.fbin", ".part-9.npy", "other.npy",
                                          "part-a.npy",  "part-[x].npy"};
  for (const auto& n : names) s.write_atomic(p("shards/" + n), "x");
  s.make_dirs(p("shards/part-dir.npy"));  // a directory that matches: not returned

  EXPECT_EQ(s.glob(p("shards/part-*.npy")),
            (std::vector<std::string>{p("shards/part-1.npy"), p("shards/part-10.npy"),
                                      p("shards/part-2.npy"), p("shards/part-[x].npy"),
                                      p("shards/part-a.npy")}));
  EXPECT_EQ(s.glob(p("shards/part-?.npy")),
            (std::vector<std::string>{p("shards/part-1.npy"), p("shards/part-2.npy"),
                                      p("shards/part-a.npy")}));
  EXPECT_EQ(s.glob(p("shards/part-[0-9]*.npy")),
            (std::vector<std::string>{p("shards/part-1.npy"), p("shards/part-10.npy"),
                                      p("shards/part-2.npy")}));
  EXPECT_EQ(s.glob(p("shards/part-[!0-9].npy")),
            (std::vector<std::string>{p("shards/part-a.npy")}));
  EXPECT_EQ(s.glob(p("shards/part-\\[x].npy")),
            (std::vector<std::string>{p("shards/part-[x].npy")}));
  EXPECT_EQ(s.glob(p("shards/.part-*")), (std::vector<std::string>{p("shards/.part-9.npy")}));
  EXPECT_EQ(s.glob(p("shards/*")).size(), 7u);  // all files but the hidden one and the dir
  // Literal patterns: the file if it exists.
  EXPECT_EQ(s.glob(p("shards/other.npy")), (std::vector<std::string>{p("shards/other.npy")}));
  EXPECT_TRUE(s.glob(p("shards/missing.npy")).empty());
  EXPECT_TRUE(s.glob(p("shards/part-dir.npy")).empty());
  // No match / missing directory: empty, not an error.
  EXPECT_TRUE(s.glob(p("shards/*.parquet")).empty());
  EXPECT_TRUE(s.glob(p("nodir/*.npy")).empty());
  // Wildcards before the last component are refused.
  expect_error([&] { s.glob(p("sh*/part-1.npy")); }, ErrorCode::kInvalidArgument,
               {"last path component"});
}

TEST_P(StorageContractTest, RemoveAndMakeDirs) {
  Storage& s = *storage_;
  s.make_dirs(p("x/y/z"));
  s.make_dirs(p("x/y/z"));  // idempotent
  EXPECT_TRUE(s.exists(p("x/y/z")));
  s.write_atomic(p("x/f"), "1");
  expect_error([&] { s.make_dirs(p("x/f/g")); }, ErrorCode::kInvalidArgument, {p("x/f")});
  expect_error([&] { s.write_atomic(p("x/f/g"), "2"); }, ErrorCode::kInvalidArgument, {});
  expect_error([&] { s.remove(p("x/y")); }, ErrorCode::kIoError, {"not empty"});
  EXPECT_TRUE(s.remove(p("x/f")));
  EXPECT_FALSE(s.exists(p("x/f")));
  EXPECT_TRUE(s.remove(p("x/y/z")));
  EXPECT_FALSE(s.exists(p("x/y/z")));
  expect_error([&] { s.size(p("x/y")); }, ErrorCode::kInvalidArgument, {"directory"});
  expect_error([&] { s.write_atomic(p("x/y"), "z"); }, ErrorCode::kInvalidArgument, {});
}

// The fault-injection wrapper makes the write fail: the old file stays, no temp is left.
TEST_P(StorageContractTest, FailedAtomicWriteKeepsOldFileAndLeavesNoTemp) {
  FaultInjectionStorage faulty(*storage_);
  const std::string path = p("out/centroids.npy");
  faulty.write_atomic(path, "old contents");
  faulty.fail_write(2);
  faulty.write_atomic(p("out/other"), "1");  // write #1 from arming: passes
  expect_error([&] { faulty.write_atomic(path, "new contents that never land"); },
               ErrorCode::kIoError, {"injected fault", path});
  EXPECT_EQ(read_all(*storage_, path), "old contents");
  EXPECT_EQ(storage_->list(p("out")), (std::vector<std::string>{"centroids.npy", "other"}));
  // The fault fired once; the next write goes through.
  faulty.write_atomic(path, "new");
  EXPECT_EQ(read_all(*storage_, path), "new");
  // kAfterWrite: the call fails although the object was replaced (ambiguous outcome).
  faulty.fail_write(1, io::WriteFault::kAfterWrite, ErrorCode::kUnavailable);
  expect_error([&] { faulty.write_atomic(path, "newer"); }, ErrorCode::kUnavailable,
               {"after the write completed"});
  EXPECT_EQ(read_all(*storage_, path), "newer");
  EXPECT_EQ(faulty.writes(), 5);
}

TEST_P(StorageContractTest, FaultInjectionFailsTheNthRead) {
  FaultInjectionStorage faulty(*storage_);
  const std::string path = p("r.bin");
  faulty.write_atomic(path, std::string(100, 'r'));
  char buf[100];
  faulty.fail_read(2, io::ReadFault::kError, ErrorCode::kUnavailable);
  faulty.read_range(path, 0, 10, buf);
  expect_error([&] { faulty.read_range(path, 10, 10, buf); }, ErrorCode::kUnavailable,
               {"injected fault", "read #2", path, "offset 10"});
  faulty.read_range(path, 10, 10, buf);  // disarmed after firing
  faulty.fail_read(1, io::ReadFault::kShortRead);
  expect_error([&] { faulty.read_range(path, 0, 100, buf); }, ErrorCode::kDataLoss,
               {"short read", path});
  EXPECT_EQ(faulty.reads(), 4);
}

// Readers racing a writer see a whole old or a whole new object, never a mix.
TEST_P(StorageContractTest, ConcurrentReadersSeeWholeObjects) {
  Storage& s = *storage_;
  const std::string path = p("race.bin");
  constexpr std::size_t kSize = 1 << 16;
  s.write_atomic(path, std::string(kSize, 'a'));
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::vector<std::thread> readers;
  readers.reserve(3);
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      std::string buf(kSize, '\0');
      while (!stop) {
        s.read_range(path, 0, kSize, buf.data());
        if (buf.find_first_not_of(buf[0]) != std::string::npos) ++torn;
      }
    });
  }
  for (int i = 0; i < 60; ++i)
    s.write_atomic(path, std::string(kSize, static_cast<char>('a' + i % 26)));
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(torn.load(), 0);
}

// A streamed write (io::StreamedWrite over write_atomic_stream) lands the concatenation of
// its pieces, appended over time from another thread than the write's, at finish() and not
// before; pieces from bytes to past the POSIX write-back chunk (8 MiB).
TEST_P(StorageContractTest, StreamedWriteLandsItsPiecesAtFinish) {
  Storage& s = *storage_;
  const std::string path = p("level-3/centroids.npy");
  s.write_atomic(path, "old");
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::string> pieces;
  for (const std::size_t size : {std::size_t{1}, std::size_t{5000}, std::size_t{1} << 20, (std::size_t{9} << 20) + 7,
                                 std::size_t{300}, std::size_t{0}, (std::size_t{2} << 20) + 1, std::size_t{64}}) {
    std::string piece(size, '\0');
    for (auto& c : piece) c = static_cast<char>(rng());
    pieces.push_back(std::move(piece));
  }
  std::string expected;
  {
    io::StreamedWrite w(s, path);
    for (const auto& piece : pieces) {
      w.append(piece.data(), piece.size());
      expected += piece;
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 3));
      EXPECT_EQ(read_all(s, path), "old");  // nothing replaced before finish()
    }
    EXPECT_EQ(w.appended(), expected.size());
    w.finish();
  }
  EXPECT_EQ(read_all(s, path), expected);
  EXPECT_EQ(s.list(p("level-3")), std::vector<std::string>{"centroids.npy"});  // no temporary left
}

// Dropped unfinished, or fed by a source that throws: the old object stays, no temporary.
TEST_P(StorageContractTest, AbandonedOrFailedStreamedWriteKeepsTheOldObject) {
  Storage& s = *storage_;
  const std::string path = p("d/out.bin");
  s.write_atomic(path, "old");
  const std::string big(3 << 20, 'x');
  {
    io::StreamedWrite w(s, path);
    w.append(big.data(), big.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the piece is being written
  }
  EXPECT_EQ(read_all(s, path), "old");
  EXPECT_EQ(s.list(p("d")), std::vector<std::string>{"out.bin"});
  int calls = 0;
  expect_error(
      [&] {
        s.write_atomic_stream(path, [&](ByteSpan* piece) {
          if (++calls == 3) throw Error(ErrorCode::kDataLoss, "the producer failed");
          *piece = ByteSpan{big.data(), big.size()};
          return true;
        });
      },
      ErrorCode::kDataLoss, {"the producer failed"});
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(read_all(s, path), "old");
  EXPECT_EQ(s.list(p("d")), std::vector<std::string>{"out.bin"});
}

INSTANTIATE_TEST_SUITE_P(AllStorages, StorageContractTest, ::testing::Values("posix", "memory"),
                         [](const auto& info) { return info.param; });

// ---- POSIX: real OS failures --------------------------------------------------------

std::vector<std::string> temp_files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) out.push_back(name);
  }
  return out;
}

// A write that fails half-way (file-size limit -> EFBIG) leaves the old file and no temp.
// A file changed in place (truncated, grown, rewritten) between read_ranges calls: the
// reads see its bytes now, and a range past its new end is a short read, as with pread.
TEST(PosixStorageTest, ReadRangesFollowsAFileChangedInPlace) {
  ScratchDir dir;
  PosixStorage s;
  const std::string path = dir.path() + "/inplace.bin";
  std::mt19937_64 rng(std::random_device{}());
  std::string data(64 * 1024, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  s.write_atomic(path, data);
  auto read_rows = [&](std::size_t first, std::size_t rows) {
    std::string got(rows * 64, '\0');
    std::vector<Storage::ReadRequest> reqs;
    for (std::size_t r = 0; r < rows; ++r) reqs.push_back({(first + r) * 64, 64, got.data() + r * 64});
    s.read_ranges(path, reqs);
    return got;
  };
  EXPECT_EQ(read_rows(500, 20), data.substr(500 * 64, 20 * 64));
  std::filesystem::resize_file(path, 32 * 1024);  // shrunk: rows 500.. are gone
  expect_error([&] { read_rows(500, 20); }, ErrorCode::kDataLoss, {"short read", path});
  EXPECT_EQ(read_rows(100, 20), data.substr(100 * 64, 20 * 64));
  {  // rewritten in place, then grown
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    for (std::size_t i = 0; i < 4096; ++i) data[100 * 64 + i] = static_cast<char>(rng());
    ASSERT_EQ(std::fseek(f, 100 * 64, SEEK_SET), 0);
    ASSERT_EQ(std::fwrite(data.data() + 100 * 64, 1, 4096, f), 4096u);
    std::fclose(f);
  }
  std::filesystem::resize_file(path, 64 * 1024);
  std::fill(data.begin() + 32 * 1024, data.end(), '\0');
  EXPECT_EQ(read_rows(100, 20), data.substr(100 * 64, 20 * 64));
  EXPECT_EQ(read_rows(490, 20), data.substr(490 * 64, 20 * 64));
}

// The mappings' cache under its limits, from several threads at once: every copy is the
// file's bytes while mappings are made and dropped around it.
TEST(MappedFilesTest, ConcurrentCopiesWithEvictionsAreExact) {
  ScratchDir dir;
  PosixStorage writer;
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::string> paths, contents;
  for (int f = 0; f < 6; ++f) {
    std::string d(8192 + 4096 * f + 100, '\0');
    for (auto& c : d) c = static_cast<char>(rng());
    paths.push_back(dir.path() + "/f" + std::to_string(f) + ".bin");
    writer.write_atomic(paths.back(), d);
    contents.push_back(std::move(d));
  }
  io::MappedFiles cache(2, 3 * 16384);  // at most two files, 48 KiB
  std::atomic<int> wrong{0}, unread{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 r(static_cast<std::uint64_t>(t) * 7919 + rng());
      for (int it = 0; it < 400; ++it) {
        const std::size_t f = r() % paths.size();
        const std::string& d = contents[f];
        const int fd = ::open(paths[f].c_str(), O_RDONLY | O_CLOEXEC);
        struct stat st {};
        if (fd < 0 || ::fstat(fd, &st) != 0) {
          ++unread;
          continue;
        }
        std::vector<std::string> got(9);
        std::vector<Storage::ReadRequest> reqs;
        for (auto& g : got) {
          const std::uint64_t off = r() % d.size(), len = r() % std::min<std::uint64_t>(200, d.size() - off + 1);
          g.resize(len);
          reqs.push_back({off, len, g.data()});
        }
        if (!cache.copy(paths[f], fd, st, reqs)) ++unread;
        ::close(fd);
        for (std::size_t u = 0; u < got.size(); ++u)
          if (got[u] != d.substr(reqs[u].offset, reqs[u].length)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(unread.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  // A range past the end: nothing copied, the caller reads (and reports the short read).
  const int fd = ::open(paths[0].c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  char buf[8];
  const Storage::ReadRequest past[] = {{static_cast<std::uint64_t>(st.st_size) - 4, 8, buf}};
  EXPECT_FALSE(cache.copy(paths[0], fd, st, past));
  ::close(fd);
}

TEST(PosixStorageTest, WriteFailingMidwayKeepsOldFileAndRemovesTemp) {
  ScratchDir dir;
  PosixStorage s;
  const std::string path = dir / "level-1/centroids.npy";
  s.write_atomic(path, "old");
  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct sigaction ignore {
  }, old_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action), 0);
  struct rlimit small = old_limit;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string big(4 << 20, 'n');  // 4 MiB: the write stops at 64 KiB
  bool threw = false;
  try {
    s.write_atomic(path, big);
  } catch (const Error& e) {
    threw = true;
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot write"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("File too large"), std::string::npos) << e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::sigaction(SIGXFSZ, &old_action, nullptr);
  EXPECT_TRUE(threw);
  EXPECT_EQ(read_all(s, path), "old");
  EXPECT_EQ(temp_files_in(dir / "level-1"), std::vector<std::string>{});
}

// A streamed write that cannot even start (a file where its directory should be) fails at
// finish() with the storage's error; the appends before it neither block nor crash.
TEST(PosixStorageTest, StreamedWriteThatCannotStartFailsAtFinish) {
  ScratchDir dir;
  PosixStorage s;
  s.write_atomic(dir / "blocker", "a file");
  io::StreamedWrite w(s, dir / "blocker/sub/out.bin");
  const std::string piece(1000, 'p');
  for (int i = 0; i < 5; ++i) w.append(piece.data(), piece.size());
  bool threw = false;
  try {
    w.finish();
  } catch (const Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("blocker"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(read_all(s, dir / "blocker"), "a file");
}

// rename() onto a non-empty directory fails: the directory is intact, no temp is left.
TEST(PosixStorageTest, FailedRenameRemovesTemp) {
  ScratchDir dir;
  PosixStorage s;
  s.write_atomic(dir / "target/inner", "keep");
  // Linux: EISDIR (a file cannot replace a directory).
  expect_error([&] { s.write_atomic(dir / "target", "x"); }, ErrorCode::kInvalidArgument,
               {"cannot rename", dir / "target", "Is a directory"});
  EXPECT_EQ(read_all(s, dir / "target/inner"), "keep");
  EXPECT_EQ(temp_files_in(dir.path()), std::vector<std::string>{});
}

TEST(PosixStorageTest, ErrnoBecomesErrorWithStrerrorAndPath) {
  ScratchDir dir;
  PosixStorage s;
  expect_error([&] { s.size(dir / "missing.npy"); }, ErrorCode::kNotFound,
               {"cannot stat", dir / "missing.npy", "No such file or directory", "errno 2"});
  s.write_atomic(dir / "f", "1");
  ASSERT_EQ(::chmod((dir / "f").c_str(), 0), 0);
  if (::geteuid() != 0) {  // root reads anything
    char c;
    expect_error([&] { s.read_range(dir / "f", 0, 1, &c); }, ErrorCode::kIoError,
                 {"cannot open", dir / "f", "Permission denied"});
  }
}

TEST(PosixStorageTest, WritesRelativePathsAndKeepsPatternText) {
  ScratchDir dir;
  PosixStorage s;
  s.write_atomic(dir / "sub/./x1.npy", "1");
  s.write_atomic(dir / "sub/x2.npy", "2");
  EXPECT_EQ(s.glob(dir / "sub/./x*.npy"),
            (std::vector<std::string>{dir / "sub/./x1.npy", dir / "sub/./x2.npy"}));
  EXPECT_EQ(s.glob(dir / "sub//x?.npy"),
            (std::vector<std::string>{dir / "sub//x1.npy", dir / "sub//x2.npy"}));
}

// ---- glob_match ----------------------------------------------------------------------

TEST(GlobMatchTest, Table) {
  struct Case {
    const char* pattern;
    const char* name;
    bool match;
  };
  const Case cases[] = {
      {"*", "abc", true},
      {"*", "", true},
      {"*", ".abc", false},
      {".*", ".abc", true},
      {"\\.*", ".abc", true},
      {"a*c", "abbbc", true},
      {"a*c", "abbbd", false},
      {"a*b*c", "axbyc", true},
      {"a*b*c", "axbyb", false},
      {"?", "a", true},
      {"?", "", false},
      {"?", "ab", false},
      {"part-??.npy", "part-01.npy", true},
      {"part-??.npy", "part-1.npy", false},
      {"[abc]", "b", true},
      {"[abc]", "d", false},
      {"[a-c]x", "bx", true},
      {"[!a-c]x", "bx", false},
      {"[^a-c]x", "dx", true},
      {"[]]", "]", true},
      {"[!]]", "a", true},
      {"[!]]", "]", false},
      {"[a-]", "-", true},
      {"[", "[", true},
      {"a[", "a[", true},
      {"[x", "[x", true},
      {"\\*", "*", true},
      {"\\*", "a", false},
      {"a\\", "a\\", true},
      {"*.npy", "x.npy.tmp", false},
      {"*.npy", ".x.npy", false},
      {"**", "abc", true},
      {"*a", "aaaa", true},
      {"*?", "", false},
      {"a*", "a/b", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(glob_match(c.pattern, c.name), c.match)
        << "pattern '" << c.pattern << "' name '" << c.name << "'";
  }
  EXPECT_TRUE(has_glob_wildcard("a*"));
  EXPECT_TRUE(has_glob_wildcard("[a]"));
  EXPECT_FALSE(has_glob_wildcard("a\\*"));
  EXPECT_FALSE(has_glob_wildcard("/plain/path.npy"));
}

// ---- URI dispatch --------------------------------------------------------------------

TEST(OpenStorageForUriTest, ChoosesByScheme) {
  std::string path;
  auto s = open_storage_for_uri("/data/x.npy", &path);
  EXPECT_EQ(s->name(), "posix");
  EXPECT_EQ(path, "/data/x.npy");
  s = open_storage_for_uri("relative/x.npy", &path);
  EXPECT_EQ(s->name(), "posix");
  EXPECT_EQ(path, "relative/x.npy");
  s = open_storage_for_uri("file:///data/my%20shards/x.npy", &path);
  EXPECT_EQ(s->name(), "posix");
  EXPECT_EQ(path, "/data/my shards/x.npy");
  s = open_storage_for_uri("FILE://localhost/data/x.npy", &path);
  EXPECT_EQ(path, "/data/x.npy");
  s = open_storage_for_uri("mem://bucket/x.npy", &path);
  EXPECT_EQ(s->name(), "memory");
  EXPECT_EQ(path, "bucket/x.npy");

#ifndef MEGATAX_HAVE_ARROW  // with Arrow: tests/s3/s3_storage_test.cc
  for (const char* uri : {"s3://bucket/emb/*.npy", "gs://b/x", "hdfs://nn/x", "abfs://c/x"}) {
    expect_error([&] { open_storage_for_uri(uri); }, ErrorCode::kUnimplemented,
                 {uri, "needs the Arrow filesystem backend (not built)"});
  }
#endif
  expect_error([&] { open_storage_for_uri("ftp://host/x"); }, ErrorCode::kInvalidArgument,
               {"unknown scheme 'ftp'"});
  expect_error([&] { open_storage_for_uri("file://otherhost/x"); }, ErrorCode::kInvalidArgument,
               {"otherhost", "file:///absolute/path"});
  expect_error([&] { open_storage_for_uri("file:///bad%zzescape"); }, ErrorCode::kInvalidArgument,
               {"percent escape"});
  expect_error([&] { open_storage_for_uri(""); }, ErrorCode::kInvalidArgument, {"empty"});
}

TEST(OpenStorageForUriTest, FileUriRoundTrip) {
  ScratchDir dir;
  std::string path;
  auto s = open_storage_for_uri("file://" + (dir / "u/v.bin"), &path);
  s->write_atomic(path, "payload");
  EXPECT_EQ(testing_io::read_file(dir / "u/v.bin"), "payload");
}

}  // namespace
}  // namespace megatax
