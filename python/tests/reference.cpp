// SPDX-License-Identifier: Apache-2.0
// The C++ side of the Python package's reproducibility test: a two-layer network's parameters
// made from torch's generator, trained by a zo optimizer over a view_store built by hand (not
// through the adapter), with a trajectory log and the final parameters written out. The Python
// test makes the same parameters and data from the same seeds and must produce the same bytes.
//
//   zo-torch-reference METHOD STEPS OUT     METHOD: mezo, lozo, lozo_m or loho
//   writes OUT.zotraj (trajectory log) and OUT.params (the parameters, float32, in order)
// Hyperparameters are those of python/tests/test_zo_torch.py's HYPERPARAMETERS.
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>
#include <zo/io/trajectory.hpp>
#include <zo/zo.hpp>

namespace {

constexpr double lr = 1e-2, eps = 1e-3, weight_decay = 0.01, fo_lr = 1e-2;
constexpr std::uint64_t seed = 11;

struct problem {
  std::vector<std::string> names = {"layers.0.weight", "layers.0.bias", "layers.1.weight",
                                    "layers.1.bias"};
  std::vector<torch::Tensor> params;
  torch::Tensor x, y;

  problem() {
    torch::manual_seed(0);
    for (auto shape : {std::vector<std::int64_t>{8, 4}, {8}, {1, 8}, {1}})
      params.push_back(torch::randn(shape) * 0.5);
    torch::manual_seed(1);
    x = torch::randn({32, 4});
    y = torch::randn({32, 1});
  }
  torch::Tensor loss_tensor() const {
    namespace F = torch::nn::functional;
    const auto hidden = torch::tanh(F::linear(x, params[0], params[1]));
    return F::mse_loss(F::linear(hidden, params[2], params[3]), y);
  }
  // The hybrid's objective, gradients copied from .grad by hand.
  double loss_and_gradients(zo::gradient_view<float>& g) {
    for (auto& p : params)
      p.set_requires_grad(true).mutable_grad() = torch::Tensor();
    const auto value = loss_tensor();
    value.backward();
    for (std::size_t k = 0; k < g.blocks().size(); ++k) {
      const auto grad = params[g.blocks()[k]].grad();
      std::memcpy(g[k], grad.data_ptr<float>(), grad.numel() * sizeof(float));
    }
    for (auto& p : params)
      p.set_requires_grad(false);
    return value.item<double>();
  }
  double loss() {
    torch::NoGradGuard no_grad;
    return loss_tensor().item<double>();
  }
};

// The options of every optimizer here (the seed; the default generator, as the package's).
zo::zo_options with_seed() {
  zo::zo_options options;
  options.seed = seed;
  return options;
}

template <class Optimizer>
void run(Optimizer optimizer, int steps, const std::string& out) {
  problem p;
  zo::view_store<float> store;
  for (std::size_t i = 0; i < p.params.size(); ++i) {
    zo::block_options options;
    options.layer = p.names[i][7] - '0';
    options.decay = !p.names[i].ends_with("bias");
    const auto n = static_cast<std::size_t>(p.params[i].numel());
    const std::size_t rows = p.params[i].dim() == 2 ? p.params[i].size(0) : n;
    store.add(p.names[i], std::span<float>(p.params[i].data_ptr<float>(), n), rows, n / rows,
              options);
  }
  zo::io::trajectory_writer log(out + ".zotraj",
                                zo::io::run_header(store, with_seed(), "reference"));
  for (int s = 0; s < steps; ++s) {
    if constexpr (requires { optimizer.first_order_blocks(); }) {
      optimizer.step(store, p, log);
    } else {
      optimizer.step(
          store, [&] { return p.loss(); }, log);
    }
  }
  log.finish();
  std::ofstream params(out + ".params", std::ios::binary);
  for (const auto& t : p.params)
    params.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: zo-torch-reference mezo|lozo|lozo_m|loho STEPS OUT\n";
    return 2;
  }
  torch::set_num_threads(1);
  const std::string method = argv[1], out = argv[3];
  const int steps = std::atoi(argv[2]);
  const zo::central_difference estimator(eps);
  if (method == "mezo") {
    run(zo::mezo(estimator, zo::sgd<>(lr, weight_decay), with_seed()), steps, out);
  } else if (method == "lozo") {
    run(zo::lozo(zo::low_rank_perturbation(2, 3), estimator, zo::sgd<>(lr, weight_decay), {},
                 with_seed()),
        steps, out);
  } else if (method == "lozo_m") {
    run(zo::lozo_m(zo::low_rank_perturbation(2, 3), estimator,
                   zo::low_rank_momentum<>(lr, 0.9, weight_decay), {}, with_seed()),
        steps, out);
  } else if (method == "loho") {
    run(zo::loho(zo::mezo(estimator, zo::sgd<>(lr, weight_decay), with_seed()), zo::adam<>(fo_lr),
                 zo::deepest_layers(1)),
        steps, out);
  } else {
    std::cerr << "zo-torch-reference: unknown method " << method << "\n";
    return 2;
  }
  return 0;
}
