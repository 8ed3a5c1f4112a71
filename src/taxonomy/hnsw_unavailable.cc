// CentroidGraph in a build without hnswlib (libhnswlib-dev not found): every use is a clear
// error. Fits with the default hnsw_threshold never build graphs for 8192 children or fewer.
#include <string>

#include "megatax/error.h"
#include "taxonomy/hnsw_index.h"

namespace megatax::taxonomy {
namespace {
[[noreturn]] void unavailable() {
  throw_error(ErrorCode::kUnimplemented,
              "HNSW centroid search: this build has no hnswlib (install libhnswlib-dev and "
              "rebuild, or set hnsw_threshold 0 to scan every level)");
}
}  // namespace

struct CentroidGraph::Impl {};
CentroidGraph::CentroidGraph(std::unique_ptr<Impl> impl, std::int64_t rows)
    : impl_(std::move(impl)), rows_(rows) {}
CentroidGraph::~CentroidGraph() = default;
std::unique_ptr<CentroidGraph> CentroidGraph::build(const float*, std::int64_t, std::int64_t, Metric,
                                                    const HnswParams&) {
  unavailable();
}
std::unique_ptr<CentroidGraph> CentroidGraph::load(const std::string&, std::int64_t, std::int64_t, Metric,
                                                   const HnswParams&, const std::string&) {
  unavailable();
}
std::string CentroidGraph::serialize() const { unavailable(); }
void CentroidGraph::search(const float*, std::int64_t*, float*) const { unavailable(); }
void CentroidGraph::search(const float*, std::int64_t, std::int64_t*, float*, std::int64_t*) const { unavailable(); }
void CentroidGraph::set_ef(std::int64_t) { unavailable(); }

}  // namespace megatax::taxonomy
