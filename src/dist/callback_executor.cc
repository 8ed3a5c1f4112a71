#include "dist/callback_executor.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "dist/message.h"
#include "megatax/error.h"

namespace megatax::dist {
namespace {

// The values of every worker, decoded from allgather's parts (each: the raw array).
template <typename T>
void sum_in_rank_order(const std::vector<std::string>& parts, std::span<T> values) {
  const std::size_t bytes = values.size() * sizeof(T);
  for (std::size_t w = 0; w < parts.size(); ++w) {
    if (parts[w].size() != bytes)
      throw_error(ErrorCode::kInternal, "callback executor: allreduce part of worker " +
                                            std::to_string(w) + " has " +
                                            std::to_string(parts[w].size()) + " bytes, expected " +
                                            std::to_string(bytes));
  }
  // Rank 0's values first, then + rank 1's, + rank 2's ...: one order on every worker.
  std::vector<T> part(values.size());
  for (std::size_t w = 0; w < parts.size(); ++w) {
    if (bytes > 0) std::memcpy(part.data(), parts[w].data(), bytes);
    for (std::size_t i = 0; i < values.size(); ++i)
      values[i] = w == 0 ? part[i] : values[i] + part[i];
  }
}

}  // namespace

CallbackExecutor::CallbackExecutor(int rank, int workers, NextShard next_shard, Allgather allgather)
    : rank_(rank),
      workers_(workers),
      next_shard_(std::move(next_shard)),
      allgather_(std::move(allgather)) {
  if (workers < 1 || rank < 0 || rank >= workers)
    throw_error(ErrorCode::kInvalidArgument, "callback executor: rank " + std::to_string(rank) +
                                                 " of " + std::to_string(workers) +
                                                 " workers (need 0 <= rank < workers)");
  if (!next_shard_ || !allgather_)
    throw_error(ErrorCode::kInvalidArgument,
                "callback executor: next_shard and allgather are required");
  if (const char* slow = std::getenv("MEGATAX_TEST_SLOW_RANK")) slow_rank_ = std::atoi(slow);
}

std::int64_t CallbackExecutor::claim(std::int64_t n_shards) {
  const std::int64_t shard = next_shard_(round_, n_shards);
  if (shard == -1) return -1;
  if (shard < 0 || shard >= n_shards)
    throw_error(ErrorCode::kInternal, "callback executor: next_shard returned " + std::to_string(shard) +
                                          " for a round of " + std::to_string(n_shards) + " shards");
  if (rank_ == slow_rank_) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return shard;
}

std::vector<std::string> CallbackExecutor::allgather(const std::string& mine) {
  std::vector<std::string> parts = allgather_(mine);
  if (parts.size() != static_cast<std::size_t>(workers_))
    throw_error(ErrorCode::kInternal, "callback executor: allgather returned " +
                                          std::to_string(parts.size()) + " parts for " +
                                          std::to_string(workers_) + " workers");
  if (parts[static_cast<std::size_t>(rank_)] != mine)
    throw_error(ErrorCode::kInternal,
                "callback executor: allgather returned other bytes for worker " +
                    std::to_string(rank_) + " than it sent (collectives out of step?)");
  return parts;
}

void CallbackExecutor::barrier() { allgather(std::string()); }

void CallbackExecutor::allreduce_sum(std::span<std::int64_t> values) {
  const std::string mine(reinterpret_cast<const char*>(values.data()),
                         values.size() * sizeof(std::int64_t));
  sum_in_rank_order(allgather(mine), values);
}

void CallbackExecutor::allreduce_sum(std::span<double> values) {
  const std::string mine(reinterpret_cast<const char*>(values.data()),
                         values.size() * sizeof(double));
  sum_in_rank_order(allgather(mine), values);
}

std::vector<std::string> CallbackExecutor::alltoall(const std::vector<std::string>& send) {
  if (send.size() != static_cast<std::size_t>(workers_))
    throw_error(ErrorCode::kInvalidArgument, "callback executor: alltoall got " +
                                                 std::to_string(send.size()) + " messages for " +
                                                 std::to_string(workers_) + " workers");
  MessageWriter m;
  for (const std::string& s : send) m.put_array<char>(std::span<const char>(s.data(), s.size()));
  const std::vector<std::string> parts = allgather(m.take());
  std::vector<std::string> received(static_cast<std::size_t>(workers_));
  for (std::size_t w = 0; w < parts.size(); ++w) {
    MessageReader r(parts[w], "alltoall message of worker " + std::to_string(w));
    for (int to = 0; to < workers_; ++to) {
      std::vector<char> bytes = r.get_array<char>();
      if (to == rank_) received[w].assign(bytes.begin(), bytes.end());
    }
    if (!r.done())
      throw_error(ErrorCode::kInternal, "callback executor: alltoall message of worker " +
                                            std::to_string(w) + " has trailing bytes");
  }
  return received;
}

void CallbackExecutor::broadcast(std::string* message) {
  std::vector<std::string> parts = allgather(rank_ == 0 ? *message : std::string());
  *message = std::move(parts[0]);
}

void CallbackExecutor::abort(const std::string& message) {
  throw_error(ErrorCode::kCancelled, "worker " + std::to_string(rank_) + "/" +
                                         std::to_string(workers_) + " failed: " + message);
}

}  // namespace megatax::dist
