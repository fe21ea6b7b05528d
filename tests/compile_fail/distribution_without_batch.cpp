// SPDX-License-Identifier: Apache-2.0
// expect: zo: a direction distribution needs static batch
// A dense perturbation's distribution gives a Philox group's entries and, for the CPU backend's
// vectorised passes, a whole batch of groups.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct ones {
  template <class T>
  static void group(const zo::direction_key&, std::uint64_t, T (&out)[zo::group_width]) {
    for (auto& v : out)
      v = T(1);
  }
#ifdef ZO_COMPILE_FAIL_CONTROL
  template <class T>
  static void batch(const zo::direction_key&, std::uint64_t, T (&out)[zo::batch_width]) {
    for (auto& v : out)
      v = T(1);
  }
#endif
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<zo::dense_perturbation<ones>, zo::central_difference, zo::sgd<>> opt{
      zo::central_difference(), zo::sgd<>()};
  opt.step(store, [] { return 1.0; });
}
