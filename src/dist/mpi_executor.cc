// The MPI executor: one process per worker (mpirun / srun), rank 0 the driver.
// Shards are claimed through a one-sided fetch-and-add counter on rank 0 (MPI_Fetch_and_op
// under a passive-target lock), so a slow rank simply claims fewer shards.
// The C API only: keep the deprecated C++ bindings out (they need libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "dist/executor.h"
#include "megatax/error.h"

namespace megatax::dist {
namespace {

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw_error(ErrorCode::kUnavailable, std::string("MPI ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
  }
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int to_int(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw_error(ErrorCode::kResourceExhausted, std::string("MPI message too large in ") + what);
  return static_cast<int>(n);
}

class MpiExecutor final : public Executor {
 public:
  MpiExecutor() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
      std::atexit(finalize_at_exit);
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    const MPI_Aint bytes = rank_ == 0 ? sizeof(std::int64_t) : 0;
    check(MPI_Win_allocate(bytes, sizeof(std::int64_t), MPI_INFO_NULL, comm_, &counter_base_, &counter_),
          "win_allocate");
    if (const char* slow = std::getenv("MEGATAX_TEST_SLOW_RANK")) slow_rank_ = std::atoi(slow);
  }
  ~MpiExecutor() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Win_free(&counter_);
      MPI_Comm_free(&comm_);
    }
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int workers() const override { return size_; }

 protected:
  void begin_round(std::int64_t) override {
    barrier();  // nobody still claims from the previous pass
    if (rank_ == 0) {
      MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, counter_);
      *static_cast<std::int64_t*>(counter_base_) = 0;
      MPI_Win_unlock(0, counter_);
    }
    barrier();
  }
  std::int64_t claim(std::int64_t n_shards) override {
    const std::int64_t one = 1;
    std::int64_t claimed = 0;
    MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, counter_);
    MPI_Fetch_and_op(&one, &claimed, MPI_INT64_T, 0, 0, MPI_SUM, counter_);
    MPI_Win_unlock(0, counter_);
    if (claimed >= n_shards) return -1;
    if (rank_ == slow_rank_) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return claimed;
  }

 public:
  void barrier() override { check(MPI_Barrier(comm_), "barrier"); }

  void allreduce_sum(std::span<std::int64_t> v) override {
    check(MPI_Allreduce(MPI_IN_PLACE, v.data(), to_int(v.size(), "allreduce"), MPI_INT64_T, MPI_SUM, comm_),
          "allreduce");
  }
  void allreduce_sum(std::span<double> v) override {
    check(MPI_Allreduce(MPI_IN_PLACE, v.data(), to_int(v.size(), "allreduce"), MPI_DOUBLE, MPI_SUM, comm_),
          "allreduce");
  }

  std::vector<std::string> alltoall(const std::vector<std::string>& send) override {
    std::vector<int> send_counts(static_cast<std::size_t>(size_)), recv_counts(static_cast<std::size_t>(size_));
    std::vector<int> send_displs(static_cast<std::size_t>(size_)), recv_displs(static_cast<std::size_t>(size_));
    std::string send_buf;
    for (int w = 0; w < size_; ++w) {
      send_displs[static_cast<std::size_t>(w)] = to_int(send_buf.size(), "alltoall");
      send_counts[static_cast<std::size_t>(w)] = to_int(send[static_cast<std::size_t>(w)].size(), "alltoall");
      send_buf += send[static_cast<std::size_t>(w)];
    }
    check(MPI_Alltoall(send_counts.data(), 1, MPI_INT, recv_counts.data(), 1, MPI_INT, comm_), "alltoall");
    std::size_t total = 0;
    for (int w = 0; w < size_; ++w) {
      recv_displs[static_cast<std::size_t>(w)] = to_int(total, "alltoall");
      total += static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(w)]);
    }
    std::string recv_buf(total, '\0');
    check(MPI_Alltoallv(send_buf.data(), send_counts.data(), send_displs.data(), MPI_BYTE, recv_buf.data(),
                        recv_counts.data(), recv_displs.data(), MPI_BYTE, comm_),
          "alltoallv");
    std::vector<std::string> out(static_cast<std::size_t>(size_));
    for (int w = 0; w < size_; ++w)
      out[static_cast<std::size_t>(w)] =
          recv_buf.substr(static_cast<std::size_t>(recv_displs[static_cast<std::size_t>(w)]),
                          static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(w)]));
    return out;
  }

  std::vector<std::string> allgather(const std::string& mine) override {
    const int n = to_int(mine.size(), "allgather");
    std::vector<int> counts(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_), "allgather");
    std::size_t total = 0;
    for (int w = 0; w < size_; ++w) {
      displs[static_cast<std::size_t>(w)] = to_int(total, "allgather");
      total += static_cast<std::size_t>(counts[static_cast<std::size_t>(w)]);
    }
    std::string buf(total, '\0');
    check(MPI_Allgatherv(mine.data(), n, MPI_BYTE, buf.data(), counts.data(), displs.data(), MPI_BYTE, comm_),
          "allgatherv");
    std::vector<std::string> out(static_cast<std::size_t>(size_));
    for (int w = 0; w < size_; ++w)
      out[static_cast<std::size_t>(w)] = buf.substr(static_cast<std::size_t>(displs[static_cast<std::size_t>(w)]),
                                                    static_cast<std::size_t>(counts[static_cast<std::size_t>(w)]));
    return out;
  }

  void broadcast(std::string* message) override {
    std::int64_t n = static_cast<std::int64_t>(message->size());
    check(MPI_Bcast(&n, 1, MPI_INT64_T, 0, comm_), "bcast");
    message->resize(static_cast<std::size_t>(n));
    check(MPI_Bcast(message->data(), to_int(message->size(), "bcast"), MPI_BYTE, 0, comm_), "bcast");
  }

  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "megatax: rank %d/%d failed: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  MPI_Win counter_ = MPI_WIN_NULL;
  void* counter_base_ = nullptr;
  int slow_rank_ = -1;  // test hook: MEGATAX_TEST_SLOW_RANK=r sleeps 300 ms per shard on rank r
};

}  // namespace

std::unique_ptr<Executor> make_mpi_executor() { return std::make_unique<MpiExecutor>(); }

}  // namespace megatax::dist
