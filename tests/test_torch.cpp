// SPDX-License-Identifier: Apache-2.0
// The libtorch adapter (zo/adapters/torch.hpp): the store over named_parameters() (names, layers,
// decay, frozen parameters, refusals), runs through it equal to hand-built view_store runs bit for
// bit, the hybrid's gradients from autograd equal torch's own, and checkpoints resume exactly.
#define BOOST_TEST_MODULE torch
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>
#include <zo/adapters/torch.hpp>
#include <zo/zo.hpp>

namespace {

// Two hidden layers under "layers.N.", a norm and a head without a layer, and a frozen scale.
struct net : torch::nn::Module {
  torch::nn::ModuleList layers;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
  torch::Tensor scale;

  net() {
    layers = register_module(
        "layers", torch::nn::ModuleList(torch::nn::Linear(4, 8), torch::nn::Linear(8, 8)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})));
    head = register_module("head", torch::nn::Linear(8, 1));
    scale = register_parameter("scale", torch::ones({1}), /*requires_grad=*/false);
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& layer : *layers)
      x = torch::tanh(layer->as<torch::nn::Linear>()->forward(x));
    return head->forward(norm->forward(x)) * scale;
  }
};

std::shared_ptr<net> make_net(std::uint64_t seed) {
  torch::manual_seed(seed);
  return std::make_shared<net>();
}

struct batch {
  torch::Tensor x, y;
};
batch make_batch() {
  torch::manual_seed(99);
  return {torch::randn({16, 4}), torch::randn({16, 1})};
}

std::vector<float> values_of(const torch::nn::Module& module) {
  std::vector<float> out;
  for (const auto& p : module.parameters()) {
    const auto t = p.contiguous();
    out.insert(out.end(), t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Every parameter's bytes, whatever its dtype.
std::vector<char> bytes_of(const torch::nn::Module& module) {
  std::vector<char> out;
  for (const auto& p : module.parameters()) {
    const auto t = p.contiguous();
    const auto* first = static_cast<const char*>(t.data_ptr());
    out.insert(out.end(), first, first + t.nbytes());
  }
  return out;
}

// The way in before the adapter: a view_store over the same tensors, added by hand (a bf16
// tensor's memory as zo::bfloat16, its bits).
template <class T = float>
zo::view_store<T> hand_built_store(const torch::nn::Module& module) {
  zo::view_store<T> store;
  for (const auto& p : module.named_parameters()) {
    if (!p.value().requires_grad()) continue;
    at::Tensor t = p.value();
    const std::size_t n = t.numel(), rows = t.dim() >= 2 ? t.size(0) : n;
    zo::block_options options;
    options.layer = zo::layer_from_name(p.key(), {"layers"});
    options.decay = !(p.key().ends_with("bias") || p.key().starts_with("norm."));
    store.add(p.key(), std::span<T>(static_cast<T*>(t.data_ptr()), n), rows, n / rows, options);
  }
  return store;
}

// The batch's loss; a 16-bit model is scored on its parameters widened to float instead (the
// CPU kernels of Debian's torch 1.13 have no fp16 matrix product and no bf16 mse_loss).
at::Tensor loss_of(net& model, const batch& data) {
  if (model.head->weight.scalar_type() == torch::kFloat32) {
    return torch::mse_loss(model.forward(data.x), data.y);
  }
  at::Tensor loss = torch::zeros({}, torch::kFloat32);
  for (const auto& p : model.parameters())
    loss = loss + (p.to(torch::kFloat32) - 0.1).pow(2).sum();
  return loss;
}

// The model in `dtype`, trained through zo::basic_torch_store<T>.
template <class Optimizer, class T = float>
void check_same_as_hand_built(Optimizer make(), at::ScalarType dtype = torch::kFloat32) {
  const auto data = make_batch();
  auto adapted = make_net(1), by_hand = make_net(1), start = make_net(1);
  for (const auto& model : {adapted, by_hand, start})
    model->to(dtype);
  zo::torch_optimizer opt(zo::basic_torch_store<T>(*adapted), make());
  auto hand_store = hand_built_store<T>(*by_hand);
  auto hand_opt = make();
  auto hand_objective = [&] {
    torch::NoGradGuard no_grad;
    return loss_of(*by_hand, data).item<double>();
  };
  for (int step = 0; step < 12; ++step) {
    opt.step([&] { return loss_of(*adapted, data); });
    hand_opt.step(hand_store, hand_objective);
  }
  BOOST_TEST((bytes_of(*adapted) == bytes_of(*by_hand)));
  BOOST_TEST((bytes_of(*adapted) != bytes_of(*start)));  // it moved
}

template <class Fn>
void check_refused(Fn&& fn, const std::string& needle) {
  try {
    fn();
    BOOST_ERROR("not refused; expected a message containing '" + needle + "'");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos, e.what());
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_store_wraps_named_parameters_without_copying) {
  auto model = make_net(0);
  zo::torch_store store(*model);
  const std::vector<std::string> names = {"layers.0.weight", "layers.0.bias", "layers.1.weight",
                                          "layers.1.bias",   "norm.weight",   "norm.bias",
                                          "head.weight",     "head.bias"};
  BOOST_TEST_REQUIRE(store.size() == names.size());
  const auto params = model->named_parameters();
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto b = store.block(i);
    BOOST_TEST(std::string(b.name()) == names[i]);
    BOOST_TEST(b.data() == params[names[i]].data_ptr<float>());
    BOOST_TEST(b.size() == static_cast<std::size_t>(params[names[i]].numel()));
  }
  BOOST_TEST(store.block(2).rows() == 8u);  // [out, in] row-major: out × in
  BOOST_TEST(store.block(2).cols() == 8u);
  BOOST_TEST(store.block(0).cols() == 4u);
  BOOST_TEST(store.block(1).cols() == 1u);
  BOOST_TEST(store.left_out() == std::vector<std::string>{"scale"});
  BOOST_TEST(*store.block(0).layer() == 0);
  BOOST_TEST(*store.block(3).layer() == 1);
  BOOST_TEST(!store.block(4).layer().has_value());
  BOOST_TEST(!store.block(6).layer().has_value());
}

BOOST_AUTO_TEST_CASE(layers_come_from_the_name) {
  const std::vector<std::string> prefixes = {"layers", "layer", "h"};
  BOOST_TEST(*zo::layer_from_name("model.decoder.layers.3.fc1.weight", prefixes) == 3);
  BOOST_TEST(*zo::layer_from_name("bert.encoder.layer.11.output.dense.bias", prefixes) == 11);
  BOOST_TEST(*zo::layer_from_name("transformer.h.7.attn.c_attn.weight", prefixes) == 7);
  BOOST_TEST(!zo::layer_from_name("transformer.wh.7.weight", prefixes).has_value());
  BOOST_TEST(!zo::layer_from_name("layers.x.weight", prefixes).has_value());
  BOOST_TEST(!zo::layer_from_name("head.weight", prefixes).has_value());
  BOOST_TEST(*zo::layer_from_name("blocks.2.mlp.weight", {"blocks"}) == 2);

  auto model = make_net(0);
  zo::torch_store_options options;
  options.layer_of = [](std::string_view name) -> std::optional<int> {
    return name.starts_with("head") ? std::optional<int>(5) : std::nullopt;
  };
  zo::torch_store store(*model, options);
  BOOST_TEST(!store.block(0).layer().has_value());
  BOOST_TEST(*store.block(6).layer() == 5);
}

BOOST_AUTO_TEST_CASE(biases_and_norms_are_exempt_from_weight_decay) {
  BOOST_TEST(zo::decays_by_name("layers.0.weight"));
  BOOST_TEST(zo::decays_by_name("model.embed_tokens.weight"));
  BOOST_TEST(!zo::decays_by_name("layers.0.bias"));
  BOOST_TEST(!zo::decays_by_name("model.decoder.final_layer_norm.weight"));
  BOOST_TEST(!zo::decays_by_name("encoder.layer.0.output.LayerNorm.weight"));
  BOOST_TEST(!zo::decays_by_name("transformer.ln_f.weight"));
  BOOST_TEST(!zo::decays_by_name("model.layers.0.input_layernorm.weight"));

  auto model = make_net(0);
  zo::torch_store store(*model);
  const std::vector<bool> decay = {true, false, true, false, false, false, true, false};
  for (std::size_t i = 0; i < store.size(); ++i)
    BOOST_TEST(store.block(i).decay() == decay[i], store.block(i).name());
}

BOOST_AUTO_TEST_CASE(unsupported_tensors_are_refused_clearly) {
  using named = zo::torch_store::named_tensors;
  const auto trained = [](at::Tensor t) { return t.set_requires_grad(true); };
  check_refused(
      [&] {
        zo::torch_store(named{{"w", trained(torch::zeros({2, 2}, torch::kDouble))}});
      },
      "holds Float parameters only");
  check_refused(
      [&] {
        zo::torch_store(named{{"w", trained(torch::zeros({2, 2}, torch::kBFloat16))}});
      },
      "has dtype BFloat16");
  check_refused(
      [&] {
        zo::torch_store_bf16(named{{"w", trained(torch::zeros({2, 2}, torch::kHalf))}});
      },
      "holds BFloat16 parameters only");
  check_refused(
      [&] {
        zo::torch_store(named{{"w", trained(torch::zeros({3, 2}).t())}});
      },
      "'w' is not contiguous");
  const auto meta = torch::TensorOptions().device(torch::kMeta);
  check_refused(
      [&] {
        zo::torch_store(
            named{{"a", trained(torch::zeros({2}))}, {"b", trained(torch::zeros({2}, meta))}});
      },
      "are on different devices");
  check_refused(
      [&] {
        zo::torch_store(named{{"a", trained(torch::zeros({2}, meta))}});
      },
      "serves CPU tensors only");
  const auto shared = trained(torch::zeros({4}));
  check_refused([&] { zo::torch_store(named{{"a", shared}, {"b", shared}}); }, "share memory");
  // A frozen tensor is left out, whatever it is.
  BOOST_TEST(zo::torch_store(named{{"f", torch::zeros({2}, torch::kDouble)}}).size() == 0u);
}

BOOST_AUTO_TEST_CASE(mezo_through_the_adapter_equals_a_hand_built_view_store_run) {
  check_same_as_hand_built<zo::mezo>(
      [] { return zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2, 0.1), {.seed = 7}); });
}

// bf16 and fp16 modules are trained in their own memory (at::BFloat16 and at::Half are the bits
// of zo::bfloat16 and zo::float16), updates rounded stochastically, as a hand-built store is.
BOOST_AUTO_TEST_CASE(sixteen_bit_modules_through_the_adapter_equal_hand_built_runs) {
  const auto mezo = [] {
    return zo::mezo(zo::central_difference(1e-2), zo::sgd<>(1e-2, 0.1), {.seed = 7});
  };
  check_same_as_hand_built<zo::mezo, zo::bfloat16>(mezo, torch::kBFloat16);
  check_same_as_hand_built<zo::mezo, zo::float16>(mezo, torch::kHalf);
  check_same_as_hand_built<zo::lozo_m, zo::bfloat16>(
      [] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-2),
                          zo::low_rank_momentum<>(1e-2, 0.9, 0.1), {}, {.seed = 3});
      },
      torch::kBFloat16);
}

BOOST_AUTO_TEST_CASE(lozo_m_through_the_adapter_equals_a_hand_built_view_store_run) {
  check_same_as_hand_built<zo::lozo_m>([] {
    return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                      zo::low_rank_momentum<>(1e-2, 0.9, 0.1), {}, {.seed = 3});
  });
}

BOOST_AUTO_TEST_CASE(hybrid_gradients_from_autograd_equal_torchs_own) {
  const auto data = make_batch();
  auto model = make_net(2);
  auto loss_of = [&] { return torch::mse_loss(model->forward(data.x), data.y); };

  model->zero_grad();
  loss_of().backward();
  zo::torch_store store(*model);
  std::vector<at::Tensor> expected;
  for (std::size_t i = 0; i < store.size(); ++i)
    expected.push_back(store.tensor(i).grad().clone());
  model->zero_grad(/*set_to_none=*/true);

  const std::vector<std::size_t> requested = {2, 3, 6};  // layers.1 and the head's weight
  std::vector<std::vector<float>> buffers;
  std::vector<float*> pointers;
  for (std::size_t i : requested)
    buffers.emplace_back(store.block(i).size(), 0.0f);
  for (auto& b : buffers)
    pointers.push_back(b.data());
  zo::gradient_view<float> view(requested, pointers);
  zo::torch_objective objective(store, loss_of);
  const double loss = objective.loss_and_gradients(view);

  BOOST_TEST(loss == loss_of().item<double>());
  for (std::size_t k = 0; k < requested.size(); ++k) {
    const auto& want = expected[requested[k]];
    BOOST_TEST(std::equal(buffers[k].begin(), buffers[k].end(), want.data_ptr<float>()),
               store.block(requested[k]).name());
  }
  // Everything is put back: no .grad left pointing at zo's buffers, every parameter trainable.
  for (std::size_t i = 0; i < store.size(); ++i) {
    BOOST_TEST(!store.tensor(i).grad().defined());
    BOOST_TEST(store.tensor(i).requires_grad());
  }
}

BOOST_AUTO_TEST_CASE(loho_through_the_adapter_equals_gradients_copied_by_hand) {
  const auto data = make_batch();
  auto make = [] {
    return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 5}),
                    zo::adam<>(1e-2), zo::deepest_layers(1));
  };
  auto adapted = make_net(4), by_hand = make_net(4);
  zo::torch_optimizer opt(zo::torch_store(*adapted), make());
  auto hand_store = hand_built_store(*by_hand);
  auto hand_opt = make();
  struct hand_objective {
    std::shared_ptr<net> model;
    const batch* data;
    double loss() {
      torch::NoGradGuard no_grad;
      return torch::mse_loss(model->forward(data->x), data->y).item<double>();
    }
    double loss_and_gradients(zo::gradient_view<float>& g) {
      model->zero_grad(true);
      const auto loss = torch::mse_loss(model->forward(data->x), data->y);
      loss.backward();
      const auto params = model->named_parameters();
      for (std::size_t k = 0; k < g.blocks().size(); ++k) {
        const auto grad = params[k == 0 ? "layers.1.weight" : "layers.1.bias"].grad();
        std::memcpy(g[k], grad.data_ptr<float>(), grad.numel() * sizeof(float));
      }
      return loss.item<double>();
    }
  } objective{by_hand, &data};
  for (int step = 0; step < 8; ++step) {
    opt.step([&] { return torch::mse_loss(adapted->forward(data.x), data.y); });
    hand_opt.step(hand_store, objective);
    BOOST_TEST(opt.optimizer().first_order_blocks() == std::vector<std::size_t>({2, 3}));
  }
  BOOST_TEST(same_bits(values_of(*adapted), values_of(*by_hand)));
}

BOOST_AUTO_TEST_CASE(step_with_a_closure_lowers_the_loss_and_logs_the_trajectory) {
  const auto data = make_batch();
  auto model = make_net(6);
  zo::torch_optimizer opt(zo::torch_store(*model),
                          zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 1}));
  const auto path = std::filesystem::temp_directory_path() / "zo_test_torch.zotraj";
  opt.log_trajectory(path, "test");
  auto closure = [&](std::uint64_t) { return torch::mse_loss(model->forward(data.x), data.y); };
  const double first = opt.step(closure).item<double>();
  for (int step = 1; step < 200; ++step)
    opt.step(closure);
  opt.finish_trajectory();
  BOOST_TEST(closure(0).item<double>() < 0.7 * first);
  const auto log = zo::io::read_trajectory(path);
  BOOST_TEST(log.records.size() == 200u);
  BOOST_TEST(log.finished);
  std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(a_checkpoint_resumes_the_run_bit_for_bit) {
  const auto data = make_batch();
  auto make = [] {
    return zo::lozo_m(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
                      zo::low_rank_momentum<>(1e-2), {}, {.seed = 9});
  };
  auto run = [&](auto& model, auto& opt, int steps) {
    for (int s = 0; s < steps; ++s)
      opt.step([&] { return torch::mse_loss(model->forward(data.x), data.y); });
  };
  auto straight = make_net(8);
  zo::torch_optimizer straight_opt(zo::torch_store(*straight), make());
  run(straight, straight_opt, 10);

  auto first = make_net(8);
  zo::torch_optimizer first_opt(zo::torch_store(*first), make());
  run(first, first_opt, 4);
  const auto path = std::filesystem::temp_directory_path() / "zo_test_torch.pt";
  zo::save_checkpoint(path, *first, first_opt);

  auto second = make_net(123);  // other values, overwritten by the checkpoint
  zo::torch_optimizer second_opt(zo::torch_store(*second), make());
  const float* before = second_opt.store().block(0).data();
  zo::load_checkpoint(path, *second, second_opt);
  BOOST_TEST(second_opt.store().block(0).data() == before);  // copied in place
  run(second, second_opt, 6);
  BOOST_TEST(same_bits(values_of(*second), values_of(*straight)));

  auto other = std::make_shared<torch::nn::LinearImpl>(3, 3);
  check_refused([&] { zo::load_checkpoint(path, *other, second_opt); }, "the checkpoint holds");
  std::filesystem::remove(path);
}
