// SPDX-License-Identifier: Apache-2.0
// One object whose type only a later call names: the engine an optimizer keeps for the store type
// it is stepped on, a workspace per backend and element type, a step rule's per-block state. It
// is made at the first call for its type and kept, so that later steps allocate nothing.
#pragma once

#include <any>
#include <utility>

namespace zo {

class typed_slot {
 public:
  // The held T, or one made by make() (replacing an object of another type).
  template <class T, class Make>
  T& get_or(Make&& make) {
    if (auto* held = find<T>()) return *held;
    value_ = std::forward<Make>(make)();
    return *find<T>();
  }
  template <class T>
  T* find() {
    return std::any_cast<T>(&value_);
  }
  template <class T>
  const T* find() const {
    return std::any_cast<T>(&value_);
  }
  void reset() { value_.reset(); }

 private:
  std::any value_;
};

}  // namespace zo
