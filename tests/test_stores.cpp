// SPDX-License-Identifier: Apache-2.0
// The ready-made stores: metadata, layout, lookups, and that both model the store concept.
#define BOOST_TEST_MODULE stores
#include <boost/test/unit_test.hpp>
#include <vector>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

static_assert(zo::parameter_store<zo::view_store<float>>);
static_assert(zo::parameter_store<zo::view_store<double>>);
static_assert(zo::parameter_store<zo::eigen_store<float>>);
static_assert(zo::parameter_store<zo::eigen_store<double>>);
static_assert(zo::parameter_block<zo::block_view<float>>);
static_assert(zo::perturbation_policy<zo::gaussian_perturbation, zo::eigen_store<double>>);
static_assert(zo::estimator<zo::q_sample<zo::one_sided>>);
static_assert(zo::zo_step_rule<zo::sgd<zo::cosine_schedule>>);
static_assert(zo::layer_selector<zo::all_blocks, zo::view_store<float>>);
static_assert(zo::perturbation_policy<zo::low_rank_perturbation, zo::view_store<float>>);
static_assert(zo::zo_step_rule<zo::low_rank_momentum<>>);

BOOST_AUTO_TEST_CASE(view_store_exposes_caller_memory_with_its_metadata) {
  std::vector<float> w(12), b(3);
  zo::view_store<float> store;
  const auto wid = store.add("layers.0.fc.weight", std::span<float>(w), 3, 4, {.layer = 0});
  const auto bid = store.add("layers.0.fc.bias", std::span<float>(b), {.layer = 0, .decay = false});
  BOOST_TEST(store.size() == 2u);
  BOOST_TEST(store.parameter_count() == 15u);
  const auto wb = store.block(wid);
  BOOST_TEST(wb.id() == 0u);
  BOOST_TEST(wb.name() == "layers.0.fc.weight");
  BOOST_TEST(wb.layer().value() == 0);
  BOOST_TEST(wb.rows() == 3u);
  BOOST_TEST(wb.cols() == 4u);
  BOOST_TEST(wb.decay());
  BOOST_TEST(wb.data() == w.data());
  const auto bb = store.block(bid);
  BOOST_TEST(bb.id() == 1u);
  BOOST_TEST(bb.rows() == 3u);
  BOOST_TEST(bb.cols() == 1u);
  BOOST_TEST(!bb.decay());
  BOOST_TEST(store.find("layers.0.fc.bias").value() == bid);
  BOOST_TEST(!store.find("missing").has_value());
  BOOST_CHECK_THROW(store.block(2), std::out_of_range);
}

BOOST_AUTO_TEST_CASE(eigen_store_is_row_major_and_keeps_addresses) {
  zo::eigen_store<double> store;
  zo::eigen_store<double>::matrix_type m(2, 3);
  m << 1, 2, 3, 4, 5, 6;
  const auto id = store.add("m", m);
  const double* address = store.block(id).data();
  for (int k = 0; k < 50; ++k)
    store.add("filler" + std::to_string(k), 4, 4);
  BOOST_TEST(store.block(id).data() == address);
  // Element (r, c) at r * cols + c, the layout every block uses.
  BOOST_TEST(store.block(id).data()[1 * 3 + 2] == 6.0);
  BOOST_TEST(store.block(1).layer().has_value() == false);
  store.assign(id, zo::eigen_store<double>::matrix_type::Constant(2, 3, 7.0));
  BOOST_TEST(store.matrix(id)(1, 2) == 7.0);
}
