// SPDX-License-Identifier: Apache-2.0
// expect: zo: the parameter store needs size
// A parameter store must say how many blocks it has.
#include <vector>
#include <zo/zo.hpp>

struct store_without_size {
  using value_type = double;
  using backend_type = zo::backends::cpu;
  zo::block_info info{0, "w", std::nullopt, 2, 1, true};
  double* values;
#ifdef ZO_COMPILE_FAIL_CONTROL
  std::size_t size() const {
    return 1;
  }
#endif
  zo::block_view<double> block(std::size_t) const {
    return {info, values};
  }
};

int main() {
  std::vector<double> v(2);
  store_without_size store{.values = v.data()};
  zo::mezo opt{zo::central_difference(), zo::sgd<>()};
  opt.step(store, [&] { return v[0]; });
}
