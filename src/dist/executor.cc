#include "dist/executor.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "megatax/error.h"

namespace megatax::dist {

#if defined(MEGATAX_HAVE_MPI)
std::unique_ptr<Executor> make_mpi_executor();  // mpi_executor.cc
bool have_mpi() noexcept { return true; }
#else
bool have_mpi() noexcept { return false; }
#endif

std::vector<std::int64_t> Executor::run_shards(std::int64_t n_shards, const std::function<void(std::int64_t)>& task) {
  return run_shards_ahead(n_shards, [&task](std::int64_t shard, const ClaimNext&) { task(shard); });
}

std::vector<std::int64_t> Executor::run_shards_ahead(std::int64_t n_shards,
                                                     const std::function<void(std::int64_t, const ClaimNext&)>& task) {
  begin_round(n_shards);
  std::vector<std::int64_t> ran;
  std::int64_t shard = claim(n_shards);
  while (shard >= 0) {
    std::optional<std::int64_t> next;  // claimed by the task
    const ClaimNext claim_next = [&] {
      if (!next) next = claim(n_shards);
      return *next;
    };
    task(shard, claim_next);
    ran.push_back(shard);
    shard = next ? *next : claim(n_shards);
  }
  return ran;
}

void LocalExecutor::abort(const std::string& message) {
  std::fprintf(stderr, "megatax: %s\n", message.c_str());
  std::exit(1);
}

namespace {
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') {
      if (std::string(var) == "PMIX_RANK") return true;
      if (std::atoi(v) > 1) return true;
    }
  }
  return false;
}
}  // namespace

std::unique_ptr<Executor> make_executor(const std::string& kind) {
  if (kind == "local") return std::make_unique<LocalExecutor>();
  if (kind == "mpi" || (kind == "auto" && launched_by_mpi())) {
#if defined(MEGATAX_HAVE_MPI)
    return make_mpi_executor();
#else
    if (kind == "mpi")
      throw_error(ErrorCode::kUnimplemented,
                  "executor 'mpi': this build has no MPI (install Open MPI and rebuild)");
    return std::make_unique<LocalExecutor>();
#endif
  }
  if (kind == "auto") return std::make_unique<LocalExecutor>();
  throw_error(ErrorCode::kInvalidArgument,
              "executor: unknown value '" + kind + "': expected auto, local or mpi");
}

}  // namespace megatax::dist
