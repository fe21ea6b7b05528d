// SPDX-License-Identifier: Apache-2.0
// The zo headers under nvcc, and the keyed generator inside a kernel. On a machine without a
// CUDA device this exits 77, which CTest reports as skipped.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdio>
#include <vector>
#include <zo/zo.hpp>

namespace {

__global__ void gaussian_directions(zo::direction_key key, float* out, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = zo::direction_element<zo::gaussian_distribution>(key, i);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  const std::size_t n = 1 << 16;
  const zo::direction_key key{7, 3, 1};
  float* device = nullptr;
  cudaMalloc(&device, n * sizeof(float));
  gaussian_directions<<<(n + 255) / 256, 256>>>(key, device, n);
  std::vector<float> on_device(n);
  cudaMemcpy(on_device.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(device);
  if (cudaGetLastError() != cudaSuccess) {
    std::printf("FAILED: kernel launch\n");
    return 1;
  }
  // The device's logf and sincospif may differ from the host's in the last bits.
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float host = zo::direction_element<zo::gaussian_distribution>(key, i);
    if (std::abs(host - on_device[i]) > 1e-5f * std::max(1.0f, std::abs(host))) ++mismatches;
  }
  std::printf("%zu of %zu device directions differ from the host beyond 1e-5\n", mismatches, n);
  return mismatches == 0 ? 0 : 1;
}
