#include "megatax/matrix.h"

#include <string>

#include "megatax/error.h"

namespace megatax {

void validate_view(const MatrixView& view, const char* what) {
  const std::string name(what);
  if (view.rows < 0) throw_error(ErrorCode::kInvalidArgument, name + ": negative row count");
  if (view.dim <= 0)
    throw_error(ErrorCode::kInvalidArgument,
                name + ": dim must be >= 1, got " + std::to_string(view.dim));
  if (view.stride < view.dim)
    throw_error(ErrorCode::kInvalidArgument,
                name + ": stride " + std::to_string(view.stride) + " is smaller than dim " +
                    std::to_string(view.dim));
  if (view.rows > 0 && view.data == nullptr)
    throw_error(ErrorCode::kInvalidArgument, name + ": null data pointer");
}

}  // namespace megatax
