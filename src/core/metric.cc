#include "megatax/metric.h"

namespace megatax {

const char* metric_name(Metric m) noexcept {
  switch (m) {
    case Metric::kL2: return "l2";
    case Metric::kInnerProduct: return "ip";
  }
  return "unknown";
}

}  // namespace megatax
