// SPDX-License-Identifier: Apache-2.0
// expect: zo: the perturbation policy's pass does not accept low-rank terms
// A step rule's contributions reach a block only through a pass that carries them: a dense
// perturbation's pass has no low-rank factors, so a rule adding some does not compile.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct low_rank_rule {
  double learning_rate(std::uint64_t) const { return 1e-3; }
  template <class Update>
  void update(Update& u) const {
    static const typename Update::value_type left[2] = {1, 1}, right[2] = {1, 1};
    u.for_each_block([&](const auto&, auto& change) {
#ifdef ZO_COMPILE_FAIL_CONTROL
      change.add_dense(left, -1e-3);
      (void)right;
#else
      change.add_low_rank(left, right, 1, -1e-3);
#endif
    });
  }
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, low_rank_rule> opt{
      zo::central_difference(), low_rank_rule{}};
  opt.step(store, [] { return 1.0; });
}
