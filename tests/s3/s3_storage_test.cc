// ArrowStorage against a real S3-protocol server: moto in server mode on 127.0.0.1, started
// and stopped by this test, with request signing enforced (tests/s3/moto_server.py). boto3
// (tests/s3/s3_tool.py) is the independent client: it reads what we write and writes what we
// read. Built with Arrow only.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/arrow_storage.h"
#include "io/arrow_test_util.h"
#include "io/io_test_util.h"
#include "io/parquet_writer.h"
#include "io/posix_storage.h"
#include "io/streamed_write.h"
#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"

extern char** environ;

namespace megatax {
namespace {

using testing_io::expect_error;
using testing_io::run_python_script;
using testing_io::ScratchDir;
using testing_io::split;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot find a free port: " << std::strerror(errno);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A Python script of tests/ run as a child process (output to `log`) that writes
// `ready_file` once it serves; stopped by signal (SIGKILL: at once, as a crash would).
class PythonChild {
 public:
  PythonChild(const std::string& what, std::vector<std::string> args, const std::string& log,
              const std::string& ready_file)
      : what_(what), log_(log) {
    args.insert(args.begin(), "python3");
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    const int rc = posix_spawnp(&pid_, "python3", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      ADD_FAILURE() << "cannot start python3 for the " << what_ << ": " << std::strerror(rc);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        ADD_FAILURE() << "the " << what_ << " exited (status " << code << ")"
                      << (code == 97 ? " -- a Python package is missing" : "") << ":\n"
                      << testing_io::read_file(log_);
        return;
      }
      if (std::filesystem::exists(ready_file)) {
        ready_ = testing_io::read_file(ready_file);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "the " << what_ << " did not come up in 60 s:\n" << testing_io::read_file(log_);
    stop(SIGKILL);
  }
  ~PythonChild() { stop(SIGTERM); }
  PythonChild(const PythonChild&) = delete;
  PythonChild& operator=(const PythonChild&) = delete;

  bool up() const { return pid_ > 0; }
  const std::string& ready_text() const { return ready_; }
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::string what_;
  std::string log_;
  pid_t pid_ = -1;
  std::string ready_;
};

// A moto S3 server process of our own (127.0.0.1, a free port), with authentication on.
class MotoServer {
 public:
  MotoServer(const std::string& dir, const std::vector<std::string>& buckets)
      : port_(free_port()),
        endpoint_("http://127.0.0.1:" + std::to_string(port_)),
        child_("moto S3 server", moto_args(dir, buckets),
               dir + "/moto-" + std::to_string(port_) + ".log", ready_file(dir)) {
    if (child_.up()) {
      const std::vector<std::string> lines = split(child_.ready_text(), '\n');
      key_id_ = lines.at(0);
      secret_ = lines.at(1);
    }
  }

  bool up() const { return child_.up() && !key_id_.empty(); }
  int port() const { return port_; }
  // Ends the server (SIGKILL: at once, as a crash would).
  void stop(int sig) { child_.stop(sig); }
  // Points the AWS_* variables (read by ArrowStorage and by s3_tool.py) at this server, or
  // at `endpoint` (a proxy in front of it).
  void export_env(const std::string& secret_override = "", const std::string& endpoint = "") const {
    ::setenv("AWS_ENDPOINT_URL", (endpoint.empty() ? endpoint_ : endpoint).c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", key_id_.c_str(), 1);
    ::setenv("AWS_SECRET_ACCESS_KEY",
             (secret_override.empty() ? secret_ : secret_override).c_str(), 1);
    ::setenv("AWS_REGION", "us-east-1", 1);
    ::unsetenv("AWS_SESSION_TOKEN");
    ::unsetenv("AWS_ENDPOINT_URL_S3");
    ::unsetenv("AWS_PROFILE");
    ::unsetenv("AWS_MAX_ATTEMPTS");
  }

 private:
  std::string ready_file(const std::string& dir) const {
    return dir + "/moto-" + std::to_string(port_) + ".ready";
  }
  std::vector<std::string> moto_args(const std::string& dir,
                                     const std::vector<std::string>& buckets) const {
    std::vector<std::string> args = {testing_io::tests_dir() + "/s3/moto_server.py",
                                     std::to_string(port_), ready_file(dir)};
    args.insert(args.end(), buckets.begin(), buckets.end());
    return args;
  }

  int port_ = 0;
  std::string endpoint_;
  PythonChild child_;
  std::string key_id_;
  std::string secret_;
};

// A TCP proxy in front of a server (tests/s3/tcp_proxy.py): killing it takes the server off
// the network without losing its objects.
std::unique_ptr<PythonChild> start_proxy(const std::string& dir, int listen_port, int target_port) {
  const std::string ready = dir + "/proxy-" + std::to_string(listen_port) + "-" +
                            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  return std::make_unique<PythonChild>(
      "TCP proxy",
      std::vector<std::string>{testing_io::tests_dir() + "/s3/tcp_proxy.py",
                               std::to_string(listen_port), std::to_string(target_port), ready},
      ready + ".log", ready);
}

class S3StorageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    server_ = new MotoServer(dir_->path(), {"bkt"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->up()) << "no S3 server (see above)";
    server_->export_env();
  }
  static bool boto3(const std::vector<std::string>& args) {
    return run_python_script("s3/s3_tool.py", args, dir_->path() + "/s3_tool.log");
  }
  static std::string bytes(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  }

  static ScratchDir* dir_;
  static MotoServer* server_;
};
ScratchDir* S3StorageTest::dir_ = nullptr;
MotoServer* S3StorageTest::server_ = nullptr;

TEST_F(S3StorageTest, OurObjectsReadByBoto3AndTheirsReadByUs) {
  std::string path;
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/round/ours.bin", &path);
  EXPECT_EQ(s->name(), "arrow(s3)");
  EXPECT_EQ(path, "bkt/round/ours.bin");
  // Ours -> boto3: a gathered write of three pieces (one larger than a multipart part).
  const std::string a = bytes(6 << 20, 1);
  const std::string b = bytes(1000, 2);
  const std::string c = bytes(3, 3);
  const ByteSpan pieces[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  s->write_atomic_gather(path, pieces);
  ASSERT_TRUE(boto3({"get", "bkt", "round/ours.bin", dir_->path() + "/ours.bin"}));
  EXPECT_TRUE(testing_io::read_file(dir_->path() + "/ours.bin") == a + b + c);
  // Replacing it is atomic from a reader's view: the new whole object.
  s->write_atomic(path, std::string_view("v2"));
  EXPECT_EQ(read_all(*s, path), "v2");
  // boto3 -> ours: ranged reads.
  const std::string theirs = bytes(3 << 20, 4);
  testing_io::write_file(dir_->path() + "/theirs.bin", theirs);
  ASSERT_TRUE(boto3({"put", "bkt", "round/theirs.bin", dir_->path() + "/theirs.bin"}));
  EXPECT_EQ(s->size("bkt/round/theirs.bin"), theirs.size());
  EXPECT_TRUE(s->exists("bkt/round/theirs.bin"));
  EXPECT_TRUE(s->exists("bkt/round"));
  for (const auto& [offset, length] : std::vector<std::pair<std::size_t, std::size_t>>{
           {0, 1}, {12345, 100000}, {theirs.size() - 7, 7}, {0, theirs.size()}}) {
    std::string got(length, '\0');
    s->read_range("bkt/round/theirs.bin", offset, length, got.data());
    EXPECT_TRUE(got == theirs.substr(offset, length)) << offset << " +" << length;
  }
  EXPECT_EQ(s->list("bkt/round"), (std::vector<std::string>{"ours.bin", "theirs.bin"}));
  // Errors name the object.
  std::string buf(16, '\0');
  expect_error([&] { s->read_range("bkt/round/theirs.bin", theirs.size() - 8, 16, buf.data()); },
               ErrorCode::kDataLoss, {"s3://bkt/round/theirs.bin", "short read"});
  expect_error([&] { s->read_range("bkt/round/missing.bin", 0, 4, buf.data()); },
               ErrorCode::kNotFound, {"s3://bkt/round/missing.bin"});
  expect_error([&] { s->size("bkt/round/missing.bin"); }, ErrorCode::kNotFound,
               {"s3://bkt/round/missing.bin", "no such object"});
  expect_error([&] { s->size("bkt/round"); }, ErrorCode::kInvalidArgument,
               {"s3://bkt/round", "directory"});
  expect_error([&] { s->list("bkt/nothing-here"); }, ErrorCode::kNotFound,
               {"s3://bkt/nothing-here"});
  expect_error([&] { s->read_range("no-such-bucket/x.bin", 0, 4, buf.data()); },
               ErrorCode::kNotFound, {"s3://no-such-bucket/x.bin"});
  // remove and make_dirs.
  EXPECT_TRUE(s->remove("bkt/round/ours.bin"));
  EXPECT_FALSE(s->remove("bkt/round/ours.bin"));
  EXPECT_FALSE(s->exists("bkt/round/ours.bin"));
  expect_error([&] { s->remove("bkt/round"); }, ErrorCode::kIoError, {"not empty"});
  s->make_dirs("bkt/made/deep");
  EXPECT_TRUE(s->exists("bkt/made/deep"));
  expect_error([&] { s->make_dirs("bkt/round/theirs.bin"); }, ErrorCode::kInvalidArgument,
               {"in the way"});
}

// A streamed write (io::StreamedWrite over write_atomic_stream): pieces uploaded as they come
// (past a multipart part), the object replaced at finish() and not before; dropped unfinished
// or fed by a failing source, the old object stays.
TEST_F(S3StorageTest, StreamedWriteReplacesTheObjectAtFinishOnly) {
  std::string path;
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/stream/c.npy", &path);
  s->write_atomic(path, std::string_view("old"));
  const std::string a = bytes(7 << 20, 11), b = bytes(1234, 12), c = bytes(4 << 20, 13);
  {
    io::StreamedWrite w(*s, path);
    w.append(a.data(), a.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a part goes up meanwhile
    EXPECT_EQ(read_all(*s, path), "old");
    w.append(b.data(), b.size());
    w.append(c.data(), c.size());
    w.finish();
  }
  EXPECT_TRUE(read_all(*s, path) == a + b + c);
  {
    io::StreamedWrite w(*s, path);
    w.append(a.data(), a.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }  // abandoned
  EXPECT_TRUE(read_all(*s, path) == a + b + c);
  int calls = 0;
  expect_error(
      [&] {
        s->write_atomic_stream(path, [&](ByteSpan* piece) {
          if (++calls == 3) throw Error(ErrorCode::kDataLoss, "the producer failed");
          *piece = ByteSpan{c.data(), c.size()};
          return true;
        });
      },
      ErrorCode::kDataLoss, {"the producer failed"});
  EXPECT_TRUE(read_all(*s, path) == a + b + c);
  EXPECT_EQ(s->list("bkt/stream"), std::vector<std::string>{"c.npy"});
}

TEST_F(S3StorageTest, WrongSecretIsRejectedWithAClearError) {
  std::unique_ptr<Storage> good = open_storage_for_uri("s3://bkt/auth/x.bin");
  good->write_atomic("bkt/auth/x.bin", std::string_view("secret data"));
  // The server checks signatures (so this test proves something).
  ASSERT_TRUE(boto3({"expect_denied", "bkt", "auth/x.bin"}));
  server_->export_env("wrong-secret");
  std::unique_ptr<Storage> bad = open_storage_for_uri("s3://bkt/auth/x.bin");
  std::string buf(11, '\0');
  expect_error([&] { bad->read_range("bkt/auth/x.bin", 0, 11, buf.data()); },
               ErrorCode::kIoError, {"read s3://bkt/auth/x.bin", "bucket 'bkt'"});
  expect_error([&] { bad->write_atomic("bkt/auth/y.bin", std::string_view("no")); },
               ErrorCode::kIoError, {"s3://bkt/auth/y.bin"});
  try {
    bad->read_range("bkt/auth/x.bin", 0, 11, buf.data());
  } catch (const Error& e) {
    std::printf("wrong secret -> %s\n", e.what());
    const std::string m = e.what();
    EXPECT_TRUE(m.find("SignatureDoesNotMatch") != std::string::npos ||
                m.find("ACCESS_DENIED") != std::string::npos || m.find("403") != std::string::npos)
        << m;
  }
  server_->export_env();
  EXPECT_FALSE(good->exists("bkt/auth/y.bin"));
}

TEST_F(S3StorageTest, GlobListsPastOneThousandKeys) {
  ASSERT_TRUE(boto3({"put_many", "bkt", "many/k", "1100"}));
  ASSERT_TRUE(boto3({"list", "bkt", "many/", dir_->path() + "/keys.txt"}));
  std::vector<std::string> want;
  for (const std::string& k : split(testing_io::read_file(dir_->path() + "/keys.txt"), '\n')) {
    if (!k.empty()) want.push_back("bkt/" + k);
  }
  ASSERT_EQ(want.size(), 1100u);
  std::string pattern;
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/many/k*.bin", &pattern);
  EXPECT_EQ(pattern, "bkt/many/k*.bin");
  const std::vector<std::string> got = s->glob(pattern);
  EXPECT_EQ(got, want);  // both sorted by key
  EXPECT_EQ(s->glob("bkt/many/k0000[0-4].bin").size(), 5u);
  EXPECT_EQ(s->glob("bkt/many/k01099.bin"), std::vector<std::string>{"bkt/many/k01099.bin"});
  EXPECT_TRUE(s->glob("bkt/many/none-*.bin").empty());
  EXPECT_TRUE(s->glob("bkt/no-dir/*.bin").empty());
  EXPECT_EQ(s->list("bkt/many").size(), 1100u);
  expect_error([&] { s->glob("bkt/ma*/k1.bin"); }, ErrorCode::kInvalidArgument,
               {"last path component"});
  expect_error([&] { open_storage_for_uri("s3://b*t/x"); }, ErrorCode::kInvalidArgument,
               {"s3://bucket/key"});
}

TEST_F(S3StorageTest, DatasetsOfNpyAndParquetShards) {
  io::PosixStorage posix;
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/ds/x");
  std::vector<float> x(50 * 4);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f - 7.0f;
  write_npy(*s, "bkt/ds/a.npy", std::span<const float>(x), std::vector<std::int64_t>{50, 4});
  write_npy(*s, "bkt/ds/b.npy", std::span<const float>(x).subspan(0, 40),
            std::vector<std::int64_t>{10, 4});
  const Dataset ds = Dataset::open("s3://bkt/ds/*.npy");
  ASSERT_EQ(ds.shards().size(), 2u);
  EXPECT_EQ(ds.rows(), 60);
  std::vector<float> got(40);
  ds.reader(1).read_f32(0, 10, got.data());
  EXPECT_EQ(got, std::vector<float>(x.begin(), x.begin() + 40));
  // Parquet on S3: written by pyarrow, uploaded by boto3, read by us.
  write_npy(posix, dir_->path() + "/pq.npy", std::span<const float>(x),
            std::vector<std::int64_t>{50, 4});
  ASSERT_TRUE(run_python_script("io/npy_to_parquet.py",
                                {"16", dir_->path() + "/pq.npy", dir_->path() + "/pq.parquet"},
                                dir_->path() + "/convert.log"));
  ASSERT_TRUE(boto3({"put", "bkt", "ds/pq/p.parquet", dir_->path() + "/pq.parquet"}));
  VectorReadOptions options;
  options.id_column = "id";
  const Dataset pq = Dataset::open("s3://bkt/ds/pq/*.parquet", options);
  EXPECT_EQ(pq.rows(), 50);
  std::vector<float> all(200);
  pq.reader(0).read_f32(0, 50, all.data());
  EXPECT_EQ(all, x);
  std::vector<std::int64_t> ids(50);
  pq.reader(0).read_ids(0, 50, ids.data());
  EXPECT_EQ(ids[49], 49);
  // Our Parquet output on S3, read by boto3 + pyarrow/duckdb is covered in parquet_test;
  // here: it lands as one object.
  const std::vector<std::int64_t> oid = {5, 6};
  const std::vector<std::int32_t> opath = {1, 2, 3, 4};
  const std::vector<float> odist = {0.5f, 0.25f};
  io::write_paths_parquet(*s, "bkt/ds/out/part.parquet", oid, opath, 2, odist);
  EXPECT_TRUE(s->exists("bkt/ds/out/part.parquet"));
  EXPECT_EQ(s->list("bkt/ds/out"), std::vector<std::string>{"part.parquet"});
}

// Two shards of clustered vectors at <s3_root>/in (through `s3`) and <local_root>/in.
void write_fit_inputs(Storage& s3, const std::string& s3_root, const std::string& local_root) {
  io::PosixStorage posix;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::int64_t dim = 8;
  for (const char* shard : {"s0", "s1"}) {
    std::vector<float> x(static_cast<std::size_t>(800 * dim));
    for (std::size_t i = 0; i < x.size(); ++i) {
      x[i] = normal(rng) + static_cast<float>((i / dim) % 4) * 3.0f;
    }
    write_npy(s3, s3_root + "/in/" + shard + ".npy", std::span<const float>(x),
              std::vector<std::int64_t>{800, dim});
    write_npy(posix, local_root + "/in/" + shard + ".npy", std::span<const float>(x),
              std::vector<std::int64_t>{800, dim});
  }
}

// Fits <root>/in/*.npy into <root>/model and <root>/out (a URI or a local path).
void fit_at(const std::string& root, int levels, const FitOptions& extra = {}) {
  TaxonomyConfig config;
  config.n_levels = levels;
  config.branching = {3};
  config.seed = 3;
  config.threads = 2;
  config.storage_uri = root + "/model";
  TaxonomyEngine engine(config);
  FitOptions options = extra;
  options.progress = false;
  engine.fit(root + "/in/*.npy", root + "/out", options);
}

// Every file of the local fit under <local_root>/{model,out} (except the manifest, which
// names its URIs) is in `s3` under <s3_key_root>/..., byte for byte. Returns the count.
int expect_same_files(const Storage& s3, const std::string& s3_key_root,
                      const std::string& local_root) {
  int compared = 0;
  for (const char* sub : {"/model", "/out"}) {
    const std::string local = local_root + sub;
    for (const auto& e : std::filesystem::recursive_directory_iterator(local)) {
      if (!e.is_regular_file()) continue;
      const std::string rel = e.path().lexically_relative(local).string();
      if (rel.find("taxonomy.json") != std::string::npos) continue;
      std::string key = s3_key_root;
      key += sub;
      key += "/";
      key += rel;
      const bool present = s3.exists(key);
      EXPECT_TRUE(present) << key;
      if (!present) continue;
      EXPECT_TRUE(read_all(s3, key) == testing_io::read_file(e.path().string())) << key;
      ++compared;
    }
  }
  return compared;
}

// Input, model and outputs all on s3://, through the public API; the result equals the same
// fit on local files, file for file.
TEST_F(S3StorageTest, FitEndToEndOnS3EqualsLocalFit) {
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/fit/x");
  write_fit_inputs(*s, "bkt/fit", dir_->path() + "/fit");
  ASSERT_NO_THROW(fit_at("s3://bkt/fit", 2));
  ASSERT_NO_THROW(fit_at(dir_->path() + "/fit", 2));
  EXPECT_GT(expect_same_files(*s, "bkt/fit", dir_->path() + "/fit"), 4);
  EXPECT_TRUE(s->exists("bkt/fit/model/taxonomy.json"));
  // A second fit does not overwrite the finished model.
  expect_error([&] { fit_at("s3://bkt/fit", 2); }, ErrorCode::kAlreadyExists, {});
}

// A fit on S3 interrupted after level 1 resumes from what it committed there and ends with
// the same tree and outputs as an uninterrupted fit.
TEST_F(S3StorageTest, InterruptedFitOnS3ResumesToTheSameResult) {
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt/resume/x");
  write_fit_inputs(*s, "bkt/resume", dir_->path() + "/resume");
  FitOptions stop;
  stop.stop_after_level = 1;
  expect_error([&] { fit_at("s3://bkt/resume", 3, stop); }, ErrorCode::kCancelled, {});
  FitOptions resume;
  resume.resume = true;
  ASSERT_NO_THROW(fit_at("s3://bkt/resume", 3, resume));
  ASSERT_NO_THROW(fit_at(dir_->path() + "/resume", 3));
  EXPECT_GT(expect_same_files(*s, "bkt/resume", dir_->path() + "/resume"), 6);
}

// The server dies in the middle of a sequence of reads: the reads retry with backoff, then
// fail with kUnavailable naming the object; writes too. Never a hang or a crash.
TEST(S3ServerDownTest, RetriesThenAClearError) {
  ScratchDir dir;
  MotoServer server(dir.path(), {"bkt2"});
  ASSERT_TRUE(server.up());
  server.export_env();
  io::ObjectStoreOptions options;
  options.max_retries = 3;
  options.initial_backoff_ms = 50;
  options.max_backoff_ms = 200;
  options.connect_timeout_s = 2;
  options.request_timeout_s = 5;
  std::string path;
  std::unique_ptr<io::ArrowStorage> s = io::ArrowStorage::open("s3://bkt2/obj.bin", &path, options);
  const std::string data(4 << 20, 'x');
  s->write_atomic(path, data);
  std::atomic<int> reads_done{0};
  std::atomic<bool> failed{false};
  std::string message;
  ErrorCode code = ErrorCode::kOk;
  std::thread reader([&] {
    std::string buf(64 << 10, '\0');
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (std::uint64_t i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
      try {
        s->read_range(path, (i * buf.size()) % (data.size() - buf.size()), buf.size(), buf.data());
        ++reads_done;
      } catch (const Error& e) {
        message = e.what();
        code = e.code();
        failed = true;
        return;
      }
    }
  });
  while (reads_done < 20 && !failed) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const std::int64_t retries_before = s->retries();
  const auto t0 = std::chrono::steady_clock::now();
  server.stop(SIGKILL);
  reader.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("server killed after %d reads; error after %.2f s, %lld retries: %s\n",
              reads_done.load(), seconds, static_cast<long long>(s->retries() - retries_before),
              message.c_str());
  ASSERT_TRUE(failed.load()) << "reads went on after the server died";
  EXPECT_EQ(code, ErrorCode::kUnavailable) << message;
  EXPECT_NE(message.find("s3://bkt2/obj.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("gave up after 3 retries"), std::string::npos) << message;
  EXPECT_GE(s->retries() - retries_before, 3);
  EXPECT_LT(seconds, 20.0);
  expect_error([&] { s->write_atomic("bkt2/other.bin", std::string_view("x")); },
               ErrorCode::kUnavailable, {"s3://bkt2/other.bin"});
  expect_error([&] { s->glob("bkt2/*.bin"); }, ErrorCode::kUnavailable, {"s3://bkt2/*.bin"});
}

// The S3 server goes off the network in the middle of a fit (its proxy is killed): the fit
// retries, then fails with kUnavailable; with the server back, --resume completes it, with
// the same tree and outputs as an uninterrupted fit.
TEST(S3ServerDownTest, FitThroughAnOutageResumesToTheSameResult) {
  ScratchDir dir;
  MotoServer server(dir.path(), {"bkt3"});
  ASSERT_TRUE(server.up());
  const int proxy_port = free_port();
  std::unique_ptr<PythonChild> proxy = start_proxy(dir.path(), proxy_port, server.port());
  ASSERT_TRUE(proxy->up());
  server.export_env("", "http://127.0.0.1:" + std::to_string(proxy_port));
  ::setenv("AWS_MAX_ATTEMPTS", "3", 1);  // 2 retries per request: a quick failure
  std::unique_ptr<Storage> s = open_storage_for_uri("s3://bkt3/x");
  write_fit_inputs(*s, "bkt3/run", dir.path() + "/run");
  // The uninterrupted reference, and how many log lines a fit says.
  int lines = 0;
  FitOptions count;
  count.log = [&](const std::string&) { ++lines; };
  ASSERT_NO_THROW(fit_at(dir.path() + "/run", 3, count));
  ASSERT_GT(lines, 2);
  // Halfway through, the server disappears.
  int seen = 0;
  FitOptions outage;
  outage.log = [&](const std::string&) {
    if (++seen == lines / 2) proxy->stop(SIGKILL);
  };
  try {
    fit_at("s3://bkt3/run", 3, outage);
    ADD_FAILURE() << "the fit went on without its storage";
  } catch (const Error& e) {
    std::printf("fit during the outage -> %s: %s\n", error_code_name(e.code()), e.what());
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("s3://bkt3/"), std::string::npos) << e.what();
  }
  // The server comes back (same objects, same address): resume.
  proxy = start_proxy(dir.path(), proxy_port, server.port());
  ASSERT_TRUE(proxy->up());
  FitOptions resume;
  resume.resume = true;
  ASSERT_NO_THROW(fit_at("s3://bkt3/run", 3, resume));
  EXPECT_GT(expect_same_files(*s, "bkt3/run", dir.path() + "/run"), 6);
  ::unsetenv("AWS_MAX_ATTEMPTS");
}

}  // namespace
}  // namespace megatax
