// The Arrow-backed entry points when built without Arrow (MEGATAX_ARROW=OFF, or AUTO without
// an importable pyarrow, or a cross build): each reports that the feature is not built.
#include <string>

#include "io/arrow_storage.h"
#include "io/parquet_reader.h"
#include "io/parquet_writer.h"
#include "megatax/error.h"

namespace megatax::io {

namespace {
constexpr const char* kHowToBuild =
    " (not built): install pyarrow (requirements.txt) and configure with -DMEGATAX_ARROW=ON";
}  // namespace

std::unique_ptr<Storage> open_arrow_storage(std::string_view uri, std::string* /*path*/) {
  const std::size_t sep = uri.find("://");
  const std::string scheme(uri.substr(0, sep));
  throw_error(ErrorCode::kUnimplemented, "URI '" + std::string(uri) + "': scheme " + scheme +
                                             ":// needs the Arrow filesystem backend" +
                                             kHowToBuild);
}

bool arrow_backend_available() noexcept { return false; }

std::unique_ptr<VectorReader> open_parquet(const Storage& /*storage*/, const std::string& path,
                                           const VectorReadOptions& /*options*/) {
  throw_error(ErrorCode::kUnimplemented,
              "file " + path + ": reading Parquet needs the Arrow backend" + kHowToBuild);
}

void write_paths_parquet(Storage& /*storage*/, const std::string& path,
                         std::span<const std::int64_t> /*ids*/,
                         std::span<const std::int32_t> /*paths*/, std::int64_t /*levels*/,
                         std::span<const float> /*dist*/, const ParquetWriteOptions& /*options*/) {
  throw_error(ErrorCode::kUnimplemented,
              "file " + path + ": writing Parquet needs the Arrow backend" + kHowToBuild);
}

}  // namespace megatax::io
