// SPDX-License-Identifier: Apache-2.0
// expect: zo: the objective must be callable
// An objective must return a loss convertible to double.
#include <string>
#include <vector>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
#ifdef ZO_COMPILE_FAIL_CONTROL
  auto loss = [] { return 1.0; };
#else
  auto loss = [] { return std::string("1.0"); };
#endif
  zo::mezo opt{zo::central_difference(), zo::sgd<>()};
  opt.step(store, loss);
}
