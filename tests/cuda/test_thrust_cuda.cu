// SPDX-License-Identifier: Apache-2.0
// tests/test_thrust.cpp built by nvcc for Thrust's CUDA device system. Without a CUDA device it
// exits 77, which CTest reports as skipped.
#define ZO_TEST_CUSTOM_MAIN
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <cuda_runtime.h>

#include <cstdio>

#include "../test_thrust.cpp"

bool init_unit_test() {
  boost::unit_test::framework::master_test_suite().p_name.value = "thrust_cuda";
  return true;
}

int main(int argc, char* argv[]) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
