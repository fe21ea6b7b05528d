// SPDX-License-Identifier: Apache-2.0
// The hybrid optimizer (LoHO): first-order part against plain Adam and SGD steps, zeroth-order
// part against MeZO, first-order blocks untouched by perturbations, gradient clipping, layer
// selectors, the memory budget, and LoHO against MeZO at equal forward passes.
#define BOOST_TEST_MODULE loho
#include <Eigen/Dense>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using matrix = Eigen::MatrixXd;

using zo_test::chain;

// Freezes the blocks a deepest_layers(k) selector would make first-order.
struct freeze_deepest {
  std::size_t k;
  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<zo::block_role> roles) const {
    zo::deepest_layers(k).select(step, store, roles);
    for (auto& r : roles) {
      if (r == zo::block_role::first_order) r = zo::block_role::frozen;
    }
  }
};

std::vector<matrix> gradients_of(chain& model, const std::vector<std::size_t>& blocks) {
  std::vector<std::vector<double>> buffers;
  std::vector<double*> pointers;
  for (std::size_t b : blocks)
    buffers.emplace_back(model.store.block(b).size(), 0.0);
  for (auto& b : buffers)
    pointers.push_back(b.data());
  zo::gradient_view<double> view(blocks, pointers);
  model.loss_and_gradients(view);
  std::vector<matrix> out;
  for (std::size_t k = 0; k < blocks.size(); ++k) {
    const auto block = model.store.block(blocks[k]);
    out.push_back(
        Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            buffers[k].data(), block.rows(), block.cols()));
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_test_model_gradients_match_finite_differences) {
  chain model(4, 3, 8, 1);
  std::vector<std::size_t> all(model.store.size());
  std::iota(all.begin(), all.end(), std::size_t{0});
  const auto g = gradients_of(model, all);
  for (std::size_t b = 0; b < all.size(); ++b) {
    auto& m = model.store.matrix(b);
    for (Eigen::Index e = 0; e < m.size(); ++e) {
      const double saved = m.data()[e], h = 1e-6;
      m.data()[e] = saved + h;
      const double plus = model.loss();
      m.data()[e] = saved - h;
      const double minus = model.loss();
      m.data()[e] = saved;
      const double numeric = (plus - minus) / (2 * h);
      const double exact = g[b](e / m.cols(), e % m.cols());  // blocks are row-major
      BOOST_TEST(numeric == exact, boost::test_tools::tolerance(1e-6));
    }
  }
}

// Done-when 1 and 2: FO part = plain Adam / SGD on the deepest layers with the gradient at the
// unperturbed point; ZO part = a MeZO step on the other blocks with the same seed; FO blocks
// hold their exact values during both zeroth-order evaluations.
BOOST_AUTO_TEST_CASE(hybrid_step_is_adam_on_fo_blocks_and_mezo_on_the_rest) {
  const std::size_t k = 2;
  const double zo_lr = 1e-2, fo_lr = 1e-2, eps = 1e-3, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-4,
               decay = 0.05;
  chain model(4, 3, 8, 2);
  chain mezo_model(4, 3, 8, 2);
  const auto before = zo_test::snapshot(model.store);
  const std::vector<std::size_t> fo_blocks{4, 5, 6, 7};  // layers 2 and 3
  const auto g = gradients_of(model, fo_blocks);

  // FO blocks must be bit-identical to `before` at every zeroth-order evaluation.
  struct watching {
    chain& m;
    std::vector<std::size_t> fo;
    std::vector<double> reference;
    std::size_t evaluations = 0;
    bool fo_untouched = true;
    double loss() {
      ++evaluations;
      std::size_t offset = 0;
      for (std::size_t b = 0; b < m.store.size(); ++b) {
        const auto block = m.store.block(b);
        if (std::find(fo.begin(), fo.end(), b) != fo.end()) {
          fo_untouched &= std::memcmp(block.data(), reference.data() + offset,
                                      block.size() * sizeof(double)) == 0;
        }
        offset += block.size();
      }
      return m.loss();
    }
    double loss_and_gradients(zo::gradient_view<double>& v) { return m.loss_and_gradients(v); }
  } objective{model, fo_blocks, before};

  zo::loho opt(zo::mezo(zo::central_difference(eps), zo::sgd<>(zo_lr), {.seed = 17}),
               zo::adam<>(fo_lr, beta1, beta2, adam_eps, decay), zo::deepest_layers(k),
               {.clip_norm = 0});
  const auto report = opt.step(model.store, objective);
  BOOST_TEST(!report.skipped());
  BOOST_TEST(objective.evaluations == 2u);
  BOOST_TEST(objective.fo_untouched);
  BOOST_TEST(model.gradient_calls == 2u);  // one here in the test, one in the step

  // ZO part: MeZO with the FO layers frozen, same seed, same loss.
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<>, freeze_deepest>
      mezo(zo::gaussian_perturbation{}, zo::central_difference(eps), zo::sgd<>(zo_lr),
           freeze_deepest{k}, {.seed = 17});
  mezo.step(mezo_model.store, [&] { return mezo_model.loss(); });
  for (std::size_t b : {0u, 1u, 2u, 3u, 8u}) {
    const auto a = model.store.block(b), m = mezo_model.store.block(b);
    BOOST_TEST(std::memcmp(a.data(), m.data(), a.size() * sizeof(double)) == 0);
  }
  // FO part: one AdamW step from zero moments with the gradient at the unperturbed point.
  for (std::size_t i = 0; i < fo_blocks.size(); ++i) {
    const auto block = model.store.block(fo_blocks[i]);
    const matrix start = mezo_model.store.matrix(fo_blocks[i]);  // untouched by the MeZO step
    const double keep = block.decay() ? 1 - fo_lr * decay : 1.0;
    const matrix m = (1 - beta1) * g[i];
    const matrix v = (1 - beta2) * g[i].cwiseProduct(g[i]);
    const matrix denominator = (v.array().sqrt() / std::sqrt(1 - beta2) + adam_eps).matrix();
    const matrix expected = keep * start - (fo_lr / (1 - beta1)) * m.cwiseQuotient(denominator);
    BOOST_TEST((model.store.matrix(fo_blocks[i]) - expected).norm() <= 1e-12 * expected.norm());
    BOOST_TEST((expected - start).norm() > 1e-4);
  }
}

BOOST_AUTO_TEST_CASE(fo_sgd_with_momentum_matches_torch_semantics_and_clipping_scales) {
  const double lr = 0.05, momentum = 0.9, decay = 0.1, clip = 0.01;
  chain model(3, 3, 6, 3);
  const std::vector<std::size_t> fo_blocks{4, 5};  // layer 2
  auto step_once = [&](double clip_norm) {
    chain m(3, 3, 6, 3);
    zo::hybrid<zo::mezo, zo::fo_sgd<>, zo::deepest_layers> opt(
        zo::mezo(zo::central_difference(), zo::sgd<>(0.0)), zo::fo_sgd<>(lr, momentum, decay),
        zo::deepest_layers(1), {.clip_norm = clip_norm});
    opt.step(m.store, m);
    const auto g = gradients_of(model, fo_blocks);  // at the unperturbed start
    double norm = 0;
    for (const auto& gi : g)
      norm += gi.squaredNorm();
    norm = std::sqrt(norm);
    BOOST_TEST(opt.gradient_norm() == norm, boost::test_tools::tolerance(1e-12));
    const double scale = clip_norm > 0 && norm > clip_norm ? clip_norm / (norm + 1e-6) : 1.0;
    for (std::size_t i = 0; i < fo_blocks.size(); ++i) {
      const matrix start = model.store.matrix(fo_blocks[i]);
      const double d = m.store.block(fo_blocks[i]).decay() ? decay : 0.0;
      const matrix expected = start - lr * (scale * g[i] + d * start);  // first step: b = g + λθ
      BOOST_TEST((m.store.matrix(fo_blocks[i]) - expected).norm() <= 1e-12 * expected.norm());
    }
    return norm;
  };
  step_once(0.0);
  const double norm = step_once(clip);
  BOOST_TEST(norm > clip);  // clipping really happened
}

// Done-when 3: the largest k that fits, for several budgets and cost models.
BOOST_AUTO_TEST_CASE(memory_budget_picks_the_largest_fitting_k) {
  const zo::layer_cost uniform{1000, 400, 400, 800};  // per layer, batch 2: 2000 + 1200
  const zo::memory_cost_model four{100, 2, {uniform, uniform, uniform, uniform}};
  // Deepest layers cost more activations: the last layer is the most expensive.
  const zo::memory_cost_model uneven{
      0, 1, {{100, 10, 10, 20}, {200, 10, 10, 20}, {400, 10, 10, 20}}};
  struct row {
    const zo::memory_cost_model* model;
    std::size_t budget, k, predicted;
  };
  const row table[] = {
      {&four, 1700, 0, 1700},  // parameters 1600 + fixed 100
      {&four, 4899, 0, 1700},  // one layer needs 3200 more
      {&four, 4900, 1, 4900},
      {&four, 11299, 2, 8100},
      {&four, 11300, 3, 11300},
      {&four, 1u << 30, 4, 14500},  // never more layers than the model has
      {&uneven, 30, 0, 30},
      {&uneven, 459, 0, 30},
      {&uneven, 460, 1, 460},  // the deepest layer: 400 + 10 + 20
      {&uneven, 690, 2, 690},
      {&uneven, 820, 3, 820},
  };
  for (const auto& r : table) {
    const zo::memory_budget selector(r.budget, *r.model);
    BOOST_TEST_CONTEXT("budget " << r.budget) {
      BOOST_TEST(selector.k() == r.k);
      BOOST_TEST(selector.predicted_bytes() == r.predicted);
      BOOST_TEST(selector.predicted_bytes() <= r.budget);
    }
  }
  try {
    zo::memory_budget(1699, four);
    BOOST_ERROR("a budget below k = 0 was accepted");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("even k = 0 needs 1700 bytes") != std::string::npos);
  }
  // The chosen k drives the roles: deepest 2 of 4 layers first-order.
  chain model(4, 2, 4, 5);
  std::vector<zo::block_role> roles(model.store.size());
  zo::memory_budget(8100, four).select(0, model.store, roles);
  for (std::size_t b = 0; b < roles.size(); ++b) {
    const bool fo = b >= 4 && b < 8;
    BOOST_TEST((roles[b] == (fo ? zo::block_role::first_order : zo::block_role::zeroth_order)));
  }
}

BOOST_AUTO_TEST_CASE(round_robin_and_random_subsets_cover_the_layers) {
  chain model(4, 2, 4, 6);
  std::vector<zo::block_role> roles(model.store.size());
  std::vector<int> chosen_count(4, 0);
  const zo::round_robin_layers rr(1);
  for (std::uint64_t s = 0; s < 8; ++s) {
    rr.select(s, model.store, roles);
    int active = 0;
    for (std::size_t l = 0; l < 4; ++l) {
      if (roles[2 * l] == zo::block_role::zeroth_order) {
        ++active;
        ++chosen_count[l];
        BOOST_TEST(l == s % 4);
      }
    }
    BOOST_TEST(active == 1);
    BOOST_TEST((roles[8] == zo::block_role::zeroth_order));  // the head has no layer
  }
  const zo::random_layer_subset subset(2, 99);
  std::vector<int> seen(4, 0);
  for (std::uint64_t s = 0; s < 200; ++s) {
    subset.select(s, model.store, roles);
    int active = 0;
    for (std::size_t l = 0; l < 4; ++l) {
      if (roles[2 * l] == zo::block_role::zeroth_order) ++active, ++seen[l];
      BOOST_TEST((roles[2 * l] == roles[2 * l + 1]));
    }
    BOOST_TEST(active == 2);
  }
  for (int count : seen)
    BOOST_TEST(std::abs(count - 100) < 30);  // each layer about half the time
}

namespace {
struct nothing_trainable {
  template <class Store>
  void select(std::uint64_t, const Store&, std::span<zo::block_role> roles) const {
    for (auto& r : roles)
      r = zo::block_role::frozen;
  }
};
}  // namespace

// Done-when 6: bad input, rejected before anything changes.
BOOST_AUTO_TEST_CASE(bad_hybrid_input_is_rejected_before_any_change) {
  chain model(3, 2, 4, 7);
  const auto before = zo_test::snapshot(model.store);
  zo::loho too_deep(zo::mezo(zo::central_difference(), zo::sgd<>(0.1)), zo::adam<>(0.1),
                    zo::deepest_layers(4));
  BOOST_CHECK_THROW(too_deep.step(model.store, model), zo::invalid_argument);
  zo::hybrid<zo::mezo, zo::adam<>, nothing_trainable> idle(
      zo::mezo(zo::central_difference(), zo::sgd<>(0.1)), zo::adam<>(0.1), nothing_trainable{});
  try {
    idle.step(model.store, model);
    BOOST_ERROR("a selector leaving nothing to train was accepted");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("left no block to train") != std::string::npos);
  }
  BOOST_TEST(model.loss_calls == 0u);
  BOOST_TEST(model.gradient_calls == 0u);
  BOOST_TEST(zo_test::snapshot(model.store) == before, boost::test_tools::per_element());
  // A mixed role needs a hybrid and a perturbation that honours element masks.
  using masked = zo::intra_layer_mask<zo::deepest_layers>;
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<>, masked> zo_only(
      zo::gaussian_perturbation{}, zo::central_difference(), zo::sgd<>(0.1),
      masked(zo::deepest_layers(1), 0.5));
  BOOST_CHECK_THROW(zo_only.step(model.store, [&] { return model.loss(); }), zo::invalid_argument);
  zo::hybrid<zo::lozo, zo::adam<>, masked> low_rank(
      zo::lozo(zo::central_difference(), zo::sgd<>(0.1)), zo::adam<>(0.1),
      masked(zo::deepest_layers(1), 0.5));
  try {
    low_rank.step(model.store, model);
    BOOST_ERROR("a low-rank perturbation was given mixed blocks");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("does not support intra-layer masks") !=
               std::string::npos);
  }
  BOOST_TEST(model.loss_calls == 0u);
  BOOST_TEST(zo_test::snapshot(model.store) == before, boost::test_tools::per_element());
  BOOST_CHECK_THROW(zo::adam<>(1e-3, 1.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::adam<>(1e-3, 0.9, 0.999, 0.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::fo_sgd<>(1e-3, 1.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::round_robin_layers(5).select(0, model.store, std::span<zo::block_role>()),
                    zo::invalid_argument);
}

// Done-when 5: at the same number of forward passes LoHO (k = 2 of 4, Adam) ends lower than MeZO
// at MeZO's best learning rate from a grid. A LoHO step costs three forwards (two ZO, one FO with
// its backward), a MeZO step two. Measured (600 forwards, initial loss 0.063): MeZO's best
// 7.4e-6 (lr 5e-2), LoHO 3.5e-10; the test asks for a tenth of MeZO's best.
BOOST_AUTO_TEST_CASE(loho_beats_mezo_at_equal_forward_passes) {
  const std::uint64_t forwards = 600;
  chain loho_model(4, 4, 16, 8);
  const double initial = loho_model.loss();
  zo::loho loho(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(5e-3), {.seed = 1}),
                zo::adam<>(1e-2, 0.9, 0.999, 1e-4), zo::deepest_layers(2));
  loho.optimize(loho_model.store, loho_model, forwards / 3);
  double best_mezo = initial;
  for (double lr : {1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2}) {
    chain mezo_model(4, 4, 16, 8);
    zo::mezo mezo(zo::central_difference(1e-3), zo::sgd<>(lr), {.seed = 1});
    mezo.optimize(
        mezo_model.store, [&] { return mezo_model.loss(); }, forwards / 2);
    best_mezo = std::min(best_mezo, mezo_model.loss());
  }
  const double loho_loss = loho_model.loss();
  BOOST_TEST_MESSAGE("initial " << initial << ", LoHO " << loho_loss << ", best MeZO "
                                << best_mezo);
  BOOST_TEST(best_mezo < initial);
  BOOST_TEST(loho_loss < 0.1 * best_mezo);
}

// Done-when 4: in a mixed block a fraction 1 − p of the entries is trained first-order (within
// 1%), and the other entries really change by zeroth-order updates.
BOOST_AUTO_TEST_CASE(intra_layer_mask_trains_both_parts) {
  const double p = 0.7;
  using selector = zo::intra_layer_mask<zo::deepest_layers>;
  const selector mask(zo::deepest_layers(1), p, 5);
  using optimizer = zo::hybrid<zo::mezo, zo::fo_sgd<>, selector>;
  const std::size_t mixed = 2;  // layers.1.weight, 128 × 128
  auto changed_entries = [&](double zo_lr, double fo_lr) {
    chain model(2, 128, 8, 9);
    const zo::eigen_store<double>::matrix_type before = model.store.matrix(mixed);
    optimizer opt(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(zo_lr)), zo::fo_sgd<>(fo_lr),
                  mask, {.clip_norm = 0});
    opt.step(model.store, model);
    BOOST_TEST((opt.roles()[mixed] == zo::block_role::mixed));
    BOOST_TEST((opt.roles()[mixed + 1] == zo::block_role::first_order));  // the bias: a vector
    BOOST_TEST((opt.roles()[0] == zo::block_role::zeroth_order));
    std::vector<bool> changed(static_cast<std::size_t>(before.size()));
    for (Eigen::Index e = 0; e < before.size(); ++e) {
      changed[static_cast<std::size_t>(e)] =
          model.store.matrix(mixed).data()[e] != before.data()[e];
    }
    return changed;
  };
  const auto id = static_cast<std::uint32_t>(mixed);
  // First-order part alone: exactly the mask's first-order entries move.
  const auto by_fo = changed_entries(0.0, 0.1);
  std::size_t fo_count = 0, agree = 0;
  for (std::size_t e = 0; e < by_fo.size(); ++e) {
    const bool fo = mask.mask().is_first_order(id, e);
    fo_count += fo;
    agree += by_fo[e] == fo;
  }
  const double fraction = double(fo_count) / double(by_fo.size());
  BOOST_TEST(std::abs(fraction - (1 - p)) < 0.01);
  BOOST_TEST(agree == by_fo.size());
  // Zeroth-order part alone: exactly the other entries move.
  const auto by_zo = changed_entries(0.1, 0.0);
  std::size_t zo_agree = 0;
  for (std::size_t e = 0; e < by_zo.size(); ++e) {
    zo_agree += by_zo[e] == !mask.mask().is_first_order(id, e);
  }
  BOOST_TEST(zo_agree == by_zo.size());
  BOOST_CHECK_THROW(selector(zo::deepest_layers(1), 1.0), zo::invalid_argument);
  BOOST_CHECK_THROW(selector(zo::deepest_layers(1), -0.1), zo::invalid_argument);
}

// The hybrid takes zo_optimizer's forms: an objective whose entry points take the step index (to
// pick that step's mini-batch), temporaries in optimize(), and callbacks that run once the whole
// step, its first-order update included, is applied.
BOOST_AUTO_TEST_CASE(the_hybrid_takes_the_step_index_and_reports_after_the_whole_step) {
  chain model(3, 4, 8, 5);
  struct stepped_objective {
    chain* model;
    std::vector<std::uint64_t> loss_steps, gradient_steps;
    double loss(std::uint64_t step) {
      loss_steps.push_back(step);
      return model->loss();
    }
    double loss_and_gradients(zo::gradient_view<double>& g, std::uint64_t step) {
      gradient_steps.push_back(step);
      return model->loss_and_gradients(g);
    }
  } f{&model, {}, {}};
  struct head_watcher {
    chain* model;
    std::vector<double>* seen;
    void after_step(const zo::step_report&) { seen->push_back(model->store.matrix(6)(0, 0)); }
  };
  std::vector<double> seen;
  zo::loho optimizer(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-3), {.seed = 2}),
                     zo::adam<>(1e-2), zo::deepest_layers(1));
  const auto summary = optimizer.optimize(model.store, f, 3, head_watcher{&model, &seen});
  BOOST_TEST(summary.steps == 3u);
  BOOST_TEST((f.loss_steps == std::vector<std::uint64_t>{0, 0, 1, 1, 2, 2}));
  BOOST_TEST((f.gradient_steps == std::vector<std::uint64_t>{0, 1, 2}));
  // The head (block 6, no layer) is zeroth-order; layer 2's weight (block 4) first-order: what
  // the callback saw of the head after the last step is what the step left.
  BOOST_REQUIRE(seen.size() == 3u);
  BOOST_TEST(seen.back() == model.store.matrix(6)(0, 0));
  std::vector<double> weights_seen;
  struct weight_watcher {
    chain* model;
    std::vector<double>* seen;
    void after_step(const zo::step_report&) { seen->push_back(model->store.matrix(4)(0, 0)); }
  } watcher{&model, &weights_seen};
  const double before = model.store.matrix(4)(0, 0);
  optimizer.step(model.store, f, watcher);
  BOOST_TEST(weights_seen.front() != before);  // the first-order update had been applied
  BOOST_TEST(weights_seen.front() == model.store.matrix(4)(0, 0));
}
