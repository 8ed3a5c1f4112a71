#include "io/npy_array.h"

#include <cstring>
#include <type_traits>

#include "core/uninit_vector.h"
#include "io/npy.h"
#include "megatax/error.h"

namespace megatax::io {
namespace {

template <typename T>
const char* descr_of() {
  if constexpr (std::is_same_v<T, std::int32_t>) return "<i4";
  if constexpr (std::is_same_v<T, std::int64_t>) return "<i8";
  if constexpr (std::is_same_v<T, float>) return "<f4";
  if constexpr (std::is_same_v<T, double>) return "<f8";
}

}  // namespace

template <typename T, typename Alloc>
std::vector<T, Alloc> read_npy_array(const Storage& storage, const std::string& path,
                                     std::vector<std::int64_t>* shape) {
  const std::uint64_t size = storage.size(path);
  const NpyHeader h = read_npy_header(storage, path, size);
  if (h.descr != descr_of<T>())
    throw_error(ErrorCode::kDataLoss, path + ": dtype '" + h.descr + "', expected '" +
                                          descr_of<T>() + "'");
  if (h.fortran_order) throw_error(ErrorCode::kDataLoss, path + ": Fortran order, expected C order");
  if (h.shape.empty() || h.shape.size() > 2)
    throw_error(ErrorCode::kDataLoss, path + ": expected a 1-D or 2-D array");
  std::uint64_t n = 1;
  for (std::int64_t s : h.shape) {
    // The file must hold every element: bound the product by the file size as we go.
    if (s != 0 && n > (size / sizeof(T)) / static_cast<std::uint64_t>(s))
      throw_error(ErrorCode::kDataLoss, path + ": shape larger than the file (" +
                                            std::to_string(size) + " bytes)");
    n *= static_cast<std::uint64_t>(s);
  }
  if (size != h.data_offset + n * sizeof(T))
    throw_error(ErrorCode::kDataLoss, path + ": expected " +
                                          std::to_string(h.data_offset + n * sizeof(T)) +
                                          " bytes, found " + std::to_string(size));
  std::vector<T, Alloc> out(n);
  storage.read_range(path, h.data_offset, n * sizeof(T), out.data());
  if (shape != nullptr) *shape = h.shape;
  return out;
}

template std::vector<std::int32_t> read_npy_array(const Storage&, const std::string&,
                                                  std::vector<std::int64_t>*);
template std::vector<std::int64_t> read_npy_array(const Storage&, const std::string&,
                                                  std::vector<std::int64_t>*);
template std::vector<float> read_npy_array(const Storage&, const std::string&,
                                           std::vector<std::int64_t>*);
template std::vector<double> read_npy_array(const Storage&, const std::string&,
                                            std::vector<std::int64_t>*);
template UninitVector<float> read_npy_array(const Storage&, const std::string&,
                                            std::vector<std::int64_t>*);
template UninitVector<std::int32_t> read_npy_array(const Storage&, const std::string&,
                                                   std::vector<std::int64_t>*);

void write_npy_f64(Storage& storage, const std::string& path, const std::vector<double>& data,
                   const std::vector<std::int64_t>& shape) {
  const std::string header = make_npy_header("<f8", shape);
  ByteSpan pieces[2] = {{header.data(), header.size()},
                        {data.data(), data.size() * sizeof(double)}};
  storage.write_atomic_gather(path, pieces);
}

}  // namespace megatax::io
