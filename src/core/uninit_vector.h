// core/uninit_vector.h -- a std::vector whose resize() leaves new elements uninitialised.
//
// std::vector<T>::resize(n) value-initialises (zero-fills) every new element: for a buffer
// that is written in full right after (a wide level's centroids, gigabytes, filled by the
// training batches or a file read), that fill is a single-threaded pass over the whole
// buffer for nothing (~0.3 s for 3 GB). UninitVector<T> default-initialises instead: for
// trivial T the elements are left as they are (indeterminate until written; read none before).
// Constructors and resize() given a value still copy it.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace megatax {

template <class T, class Base = std::allocator<T>>
class DefaultInitAllocator : public Base {
  using Traits = std::allocator_traits<Base>;

 public:
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U, typename Traits::template rebind_alloc<U>>;
  };
  using Base::Base;
  DefaultInitAllocator() = default;
  template <class U, class B>
  DefaultInitAllocator(const DefaultInitAllocator<U, B>& other) noexcept : Base(other) {}

  // No arguments: default-initialisation (nothing written for trivial U).
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    Traits::construct(static_cast<Base&>(*this), p, std::forward<Args>(args)...);
  }
};

template <class T>
using UninitVector = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace megatax
