// dist/executor.h -- how the work of a pass is spread over workers.
//
// The taxonomy driver describes a pass as "run this task for every shard" and never knows
// where the tasks run. An executor only moves work (and, for distributed executors, the
// driver/worker messages); it never changes results: tasks must write their outputs to
// per-shard places and the driver reduces them in shard order.
//
// Thread-safety: an Executor is used by one driver thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace megatax::dist {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::string name() const = 0;
  // Number of workers tasks are spread over (>= 1).
  virtual int workers() const = 0;
  // Calls task(shard, worker) once for every shard in [0, n_shards). The first exception
  // stops the pass and is rethrown after running tasks have finished.
  virtual void run_shards(std::int64_t n_shards,
                          const std::function<void(std::int64_t shard, int worker)>& task) = 0;
};

// One process, one worker: shards run in order on the calling thread (the kernels use the
// process's threads inside each task).
class LocalExecutor final : public Executor {
 public:
  std::string name() const override { return "local"; }
  int workers() const override { return 1; }
  void run_shards(std::int64_t n_shards,
                  const std::function<void(std::int64_t shard, int worker)>& task) override {
    for (std::int64_t s = 0; s < n_shards; ++s) task(s, 0);
  }
};

}  // namespace megatax::dist
