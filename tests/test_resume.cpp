// SPDX-License-Identifier: Apache-2.0
// Save and resume: a run saved at step s and continued by a freshly built optimizer that loads
// the state (and the parameters) equals the uninterrupted run bit for bit, for every optimizer.
#define BOOST_TEST_MODULE resume
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <sstream>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using zo_test::chain;

constexpr std::uint64_t total_steps = 40, saved_at = 17;

template <class Store>
std::vector<typename Store::value_type> values_of(const Store& store) {
  return zo_test::snapshot(store);
}

template <class Store>
void restore_values(Store& store, const std::vector<typename Store::value_type>& values) {
  std::size_t offset = 0;
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    std::memcpy(b.data(), values.data() + offset, b.size() * sizeof(values[0]));
    offset += b.size();
  }
}

// Runs `make()` uninterrupted, and again as two processes would: s steps, save the state and
// the parameters, then a new optimizer and a new model that load them and run the rest.
template <class Make, class Step>
void check_resume(Make&& make, Step&& step) {
  chain straight(3, 5, 16, 7), first(3, 5, 16, 7), second(3, 5, 16, 7);
  auto uninterrupted = make();
  for (std::uint64_t k = 0; k < total_steps; ++k)
    step(uninterrupted, straight);

  auto before = make();
  for (std::uint64_t k = 0; k < saved_at; ++k)
    step(before, first);
  std::stringstream state;
  before.save(state);
  restore_values(second.store, values_of(first.store));

  auto after = make();  // a new optimizer: nothing carried over but the saved bytes
  after.load(state);
  BOOST_TEST(after.step_count() == saved_at);
  for (std::uint64_t k = saved_at; k < total_steps; ++k)
    step(after, second);
  BOOST_TEST(values_of(second.store) == values_of(straight.store));
  // The run must have moved, or equality proves nothing.
  BOOST_TEST(values_of(straight.store) != values_of(chain(3, 5, 16, 7).store));
}

const auto zo_step = [](auto& optimizer, chain& model) {
  optimizer.step(model.store, [&] { return model.loss(); });
};
const auto hybrid_step = [](auto& optimizer, chain& model) { optimizer.step(model.store, model); };

}  // namespace

BOOST_AUTO_TEST_CASE(mezo_resumes_bit_for_bit_in_both_restore_modes) {
  for (const auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    check_resume(
        [&] {
          using cosine_mezo = zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference,
                                               zo::sgd<zo::cosine_schedule>>;
          return cosine_mezo(zo::central_difference(1e-3),
                             zo::sgd(zo::cosine_schedule(1e-2, total_steps), 0.01),
                             {.seed = 3, .restore = mode});
        },
        zo_step);
  }
}

BOOST_AUTO_TEST_CASE(spsa_with_q_samples_resumes_bit_for_bit) {
  using optimizer =
      zo::zo_optimizer<zo::rademacher_perturbation, zo::q_sample<zo::one_sided>, zo::sgd<>>;
  check_resume(
      [] {
        return optimizer(zo::q_sample<zo::one_sided>(3, zo::one_sided(1e-3)),
                         zo::sgd(zo::constant_schedule(1e-3)), {.seed = 4});
      },
      zo_step);
}

BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_resume_bit_for_bit_across_a_v_window) {
  // ν = 5: the save falls inside a window, so the resumed run must keep the same V and, for
  // LOZO-M, the same momentum factor.
  check_resume(
      [] {
        return zo::lozo(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                        zo::sgd(zo::constant_schedule(5e-3)), {}, {.seed = 5});
      },
      zo_step);
  check_resume(
      [] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                          zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01), {},
                          {.seed = 6});
      },
      zo_step);
}

BOOST_AUTO_TEST_CASE(a_fused_run_resumes_after_removing_its_pending_perturbation) {
  const auto make = [] {
    return zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                    {.seed = 8, .fused_steps = true});
  };
  const auto fused_step = [](auto& optimizer, chain& model) {
    optimizer.step(model.store, [&] { return model.loss(); });
    // What a caller does before saving; the straight run does it too, so both take the same
    // passes.
    optimizer.remove_pending_perturbation(model.store);
  };
  check_resume(make, fused_step);
}

BOOST_AUTO_TEST_CASE(loho_with_adam_and_with_sgd_momentum_resumes_bit_for_bit) {
  check_resume(
      [] {
        return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                                 {.seed = 9}),
                        zo::adam(1e-2), zo::deepest_layers(1));
      },
      hybrid_step);
  using sgd_hybrid = zo::hybrid<zo::mezo, zo::fo_sgd<>, zo::round_robin_layers>;
  check_resume(
      [] {
        return sgd_hybrid(
            zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                     {.seed = 10}),
            zo::fo_sgd(1e-2, 0.9, 0.01),
            zo::round_robin_layers(1, zo::block_role::first_order, zo::block_role::zeroth_order));
      },
      hybrid_step);
}

BOOST_AUTO_TEST_CASE(a_state_of_another_optimizer_or_a_truncated_one_is_refused) {
  chain model(3, 5, 16, 7);
  auto loho = zo::loho(
      zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 9}),
      zo::adam(1e-2), zo::deepest_layers(1));
  for (int k = 0; k < 3; ++k)
    loho.step(model.store, model);
  std::stringstream state;
  loho.save(state);
  const std::string bytes = state.str();
  auto mezo = zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)));
  std::stringstream foreign(bytes);
  BOOST_CHECK_THROW(mezo.load(foreign), zo::invalid_argument);
  for (const std::size_t cut : {bytes.size() / 3, bytes.size() - 1}) {
    auto fresh = zo::loho(
        zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 9}),
        zo::adam(1e-2), zo::deepest_layers(1));
    std::stringstream truncated(bytes.substr(0, cut));
    BOOST_CHECK_EXCEPTION(fresh.load(truncated), zo::invalid_argument,
                          [](const zo::invalid_argument& e) {
                            return std::string(e.what()).find("truncated") != std::string::npos;
                          });
  }
}
