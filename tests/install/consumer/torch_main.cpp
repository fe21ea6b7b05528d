// SPDX-License-Identifier: Apache-2.0
// Built and run against the installed zo::torch target: one MeZO step on a Linear's parameters.
#include <zo/adapters/torch.hpp>
#include <zo/zo.hpp>

int main() {
  torch::nn::Linear linear(3, 2);
  const auto before = linear->weight.detach().clone();
  zo::torch_optimizer optimizer(zo::torch_store(*linear),
                                zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2)));
  const auto x = torch::ones({4, 3});
  optimizer.step([&] { return linear->forward(x).square().mean(); });
  return torch::equal(before, linear->weight) ? 1 : 0;
}
