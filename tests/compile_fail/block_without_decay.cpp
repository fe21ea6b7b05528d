// SPDX-License-Identifier: Apache-2.0
// expect: zo: a block needs decay
// A block must say whether weight decay applies to it.
#include <vector>
#include <zo/zo.hpp>

struct block_without_decay {
  using value_type = double;
  double* p;
  std::size_t id() const { return 0; }
  std::string_view name() const { return "w"; }
  std::optional<int> layer() const { return std::nullopt; }
  std::size_t rows() const { return 2; }
  std::size_t cols() const { return 1; }
  std::size_t size() const { return 2; }
#ifdef ZO_COMPILE_FAIL_CONTROL
  bool decay() const {
    return true;
  }
#endif
  double* data() const {
    return p;
  }
};

struct store {
  using value_type = double;
  using backend_type = zo::backends::cpu;
  double* p;
  std::size_t size() const { return 1; }
  block_without_decay block(std::size_t) const { return {p}; }
};

int main() {
  std::vector<double> v(2);
  store s{v.data()};
  zo::mezo opt{zo::central_difference(), zo::sgd<>()};
  opt.step(s, [&] { return v[0]; });
}
