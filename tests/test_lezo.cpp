// SPDX-License-Identifier: Apache-2.0
// LeZO (zo/optimizers/lezo.hpp): the layers a step leaves out get no pass and keep their values
// bit for bit, the subset changes from step to step, the passes cover fewer elements than
// MeZO's, and the loss falls.
#define BOOST_TEST_MODULE lezo
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <map>
#include <memory>
#include <set>
#include <vector>
#include <zo/optimizers/lezo.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

// MeZO's Gaussian perturbation, counting the passes it runs and the elements they cover per block.
struct counting_perturbation {
  template <class T>
  using pass_type = zo::pass_type_t<zo::gaussian_perturbation, T>;

  std::shared_ptr<std::map<std::size_t, std::size_t>> passes =
      std::make_shared<std::map<std::size_t, std::size_t>>();
  std::shared_ptr<std::size_t> elements = std::make_shared<std::size_t>(0);

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& sweep,
             Scratch& scratch) const {
    ++(*passes)[block.id()];
    *elements += block.size();
    zo::gaussian_perturbation{}.apply(backend, block, sweep, scratch);
  }
};

using counted_lezo = zo::zo_optimizer<counting_perturbation, zo::central_difference, zo::sgd<>,
                                      zo::random_layer_subset>;
using counted_mezo = zo::zo_optimizer<counting_perturbation, zo::central_difference, zo::sgd<>>;

std::vector<double> block_values(const zo::eigen_store<double>& store, std::size_t i) {
  const auto b = store.block(i);
  return {b.data(), b.data() + b.size()};
}

}  // namespace

BOOST_AUTO_TEST_CASE(layers_left_out_get_no_pass_and_keep_their_values_bit_for_bit) {
  zo_test::chain model(4, 6, 16, 3);
  const zo::random_layer_subset selector(1, 7);
  counting_perturbation counter;
  counted_lezo optimizer(counter, zo::central_difference(1e-3), zo::sgd<>(1e-3), selector,
                         {.seed = 7});
  auto loss = [&] { return model.loss(); };
  std::set<std::vector<bool>> subsets;
  for (std::uint64_t step = 0; step < 12; ++step) {
    std::vector<zo::block_role> roles(model.store.size(), zo::block_role::zeroth_order);
    selector.select(step, model.store, roles);
    std::vector<std::vector<double>> before;
    for (std::size_t i = 0; i < model.store.size(); ++i)
      before.push_back(block_values(model.store, i));
    counter.passes->clear();
    const auto calls = model.loss_calls;
    BOOST_REQUIRE(!optimizer.step(model.store, loss).skipped());
    BOOST_TEST(model.loss_calls - calls == 2u);
    std::vector<bool> trained;
    for (std::size_t i = 0; i < model.store.size(); ++i) {
      const bool frozen = roles[i] == zo::block_role::frozen;
      trained.push_back(!frozen);
      BOOST_TEST_CONTEXT("step " << step << ", block " << model.store.block(i).name()) {
        // Central differences: out to +ε, over to −ε, back with the update.
        BOOST_TEST((*counter.passes)[i] == (frozen ? 0u : 3u));
        BOOST_TEST((block_values(model.store, i) == before[i]) == frozen);
      }
    }
    // One layer's weight and bias, and the head (no layer), are trained at each step.
    BOOST_TEST(std::count(trained.begin(), trained.end(), true) == 3);
    subsets.insert(trained);
  }
  BOOST_TEST(subsets.size() > 1u);
}

BOOST_AUTO_TEST_CASE(a_step_passes_over_fewer_elements_than_a_mezo_step) {
  zo_test::chain lezo_model(4, 6, 16, 3), mezo_model(4, 6, 16, 3);
  counting_perturbation lezo_counter, mezo_counter;
  counted_lezo lezo(lezo_counter, zo::central_difference(1e-3), zo::sgd<>(1e-3),
                    zo::random_layer_subset(1, 7), {.seed = 7});
  counted_mezo mezo(mezo_counter, zo::central_difference(1e-3), zo::sgd<>(1e-3), {}, {.seed = 7});
  lezo.optimize(
      lezo_model.store, [&] { return lezo_model.loss(); }, 10);
  mezo.optimize(
      mezo_model.store, [&] { return mezo_model.loss(); }, 10);
  // Per layer 6·6 + 6 elements, the head 6: one of four layers is 48 of 174 elements.
  BOOST_TEST(*mezo_counter.elements == 3 * 10 * 174u);
  BOOST_TEST(*lezo_counter.elements == 3 * 10 * 48u);
}

BOOST_AUTO_TEST_CASE(lezo_lowers_the_loss_of_a_layered_model) {
  zo_test::chain model(4, 6, 32, 5);
  auto loss = [&] { return model.loss(); };
  const double start = model.loss();
  auto optimizer = zo::make_lezo(2, zo::central_difference(1e-3), zo::sgd<>(2e-3), {.seed = 3});
  optimizer.optimize(model.store, loss, 1500);
  BOOST_TEST(model.loss() < 0.5 * start);
}

BOOST_AUTO_TEST_CASE(more_layers_per_step_than_the_model_has_are_refused) {
  zo_test::chain model(4, 6, 16, 3);
  auto optimizer = zo::make_lezo(5, zo::central_difference(1e-3), zo::sgd<>(1e-3));
  const auto before = zo_test::snapshot(model.store);
  BOOST_CHECK_THROW(optimizer.step(model.store, [&] { return model.loss(); }),
                    zo::invalid_argument);
  BOOST_TEST(zo_test::snapshot(model.store) == before);
}
