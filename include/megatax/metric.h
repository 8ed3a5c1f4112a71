// megatax/metric.h -- how two vectors are compared.
//
// kL2: squared Euclidean distance ||q - x||^2, smaller is nearer. Computed as
//      ||q||^2 + ||x||^2 - 2 <q, x> and clamped at 0 (the expansion can round below 0).
// kInnerProduct: similarity <q, x>, larger is nearer.
// (Cosine = inner product on L2-normalised vectors; the taxonomy normalises before use.)
#pragma once

#include <string_view>

namespace megatax {

enum class Metric : int { kL2 = 0, kInnerProduct = 1 };

const char* metric_name(Metric m) noexcept;  // "l2", "ip"

}  // namespace megatax
