// SPDX-License-Identifier: Apache-2.0
// zo/distributed/mpi.hpp under mpiexec with 1, 2 and 4 ranks (tests/mpi/CMakeLists.txt). Every
// verdict that involves other ranks is computed from gathered values, so all ranks reach it
// together and none is left waiting in a collective for a rank that failed a check.
#define BOOST_TEST_MODULE mpi
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>
#include <zo/distributed/mpi.hpp>
#include <zo/io/safetensors.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using zo_test::chain;
namespace zm = zo::mpi;

zm::communicator& world() {
  static zm::communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(60)});
  return comm;
}

// Every test uses the same batch, split unevenly when the rank count does not divide it (30 over
// 4 ranks: 7, 8, 7, 8), so the shard weights are not all powers of two.
constexpr Eigen::Index batch = 30;

// Rank r holds examples [B·r/P, B·(r+1)/P) of the batch.
std::pair<Eigen::Index, Eigen::Index> shard_of(int rank, int ranks) {
  const Eigen::Index begin = batch * rank / ranks, end = batch * (rank + 1) / ranks;
  return {begin, end - begin};
}

// Keeps only this rank's shard of the chain's examples and tells the communicator its size.
void keep_shard(chain& model, zm::communicator& comm) {
  const auto [begin, count] = shard_of(comm.rank(), comm.size());
  model.x = model.x.middleCols(begin, count).eval();
  model.y = model.y.middleCols(begin, count).eval();
  comm.set_local_examples(static_cast<std::size_t>(count));
  comm.set_batch_examples(static_cast<std::size_t>(batch));
}

// True on every rank when every rank's parameters equal rank 0's bit for bit.
template <class Store>
bool replicas_identical(zm::communicator& comm, const Store& store) {
  const auto mine = zo_test::snapshot(store);
  using T = typename decltype(mine)::value_type;
  std::vector<T> all(mine.size() * static_cast<std::size_t>(comm.size()));
  comm.allgather(mine.data(), mine.size() * sizeof(T), all.data(), "the test's parameters",
                 zm::channel::control);
  for (int r = 1; r < comm.size(); ++r) {
    if (std::memcmp(all.data() + static_cast<std::size_t>(r) * mine.size(), all.data(),
                    mine.size() * sizeof(T)) != 0) {
      return false;
    }
  }
  return true;
}

// max_i |a_i − b_i| / max(1, |b_i|).
double largest_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return worst;
}

// The distributed runs and the single-process run over the union of the shards see the same
// examples at the same points; the only difference is how the batch loss is summed:
// Σ_r (n_r/N)·(mean of shard r) in rank order against one mean over all N examples. A loss then
// differs by a few ulps, |ΔL| ≲ 4·2⁻⁵³·L; a projected gradient (L+ − L−)/2ε by 4·2⁻⁵³·L/ε
// ≈ 5e-14 for L ≲ 0.1 and ε = 1e-3; a parameter by the learning rate (≤ 1e-2) times that per
// step, ≲ 5e-16; and over 200 steps, adding up without cancellation, by ≲ 1e-13. The bound is
// ten times that (LoHO's Adam normalises its first-order gradients, whose own summation differs
// by ulps in the same way). Measured: ≤ 1e-15 with 2 and 4 ranks (the test prints it).
constexpr double union_bound = 1e-12;

template <class Store>
void check_against_union(zm::communicator& comm, const Store& distributed, const Store& single,
                         const char* name) {
  const auto a = zo_test::snapshot(distributed), b = zo_test::snapshot(single);
  const double difference = largest_difference(a, b);
  BOOST_TEST_MESSAGE(name << " on " << comm.size() << " ranks: largest relative difference from "
                          << "the single-process run " << difference);
  if (comm.size() == 1) {
    // One rank's weight is exactly 1: nothing is summed differently.
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
  } else {
    BOOST_TEST(difference <= union_bound);
  }
  BOOST_TEST(replicas_identical(comm, distributed));
}

constexpr std::uint64_t steps = 200;

// `steps` distributed steps on this rank's shard, none skipped, with the replicas compared every
// 50 steps.
template <class Optimizer, class Store, class Objective>
void run_distributed(zm::communicator& comm, Optimizer& optimizer, Store& store, Objective& f) {
  zm::replica_check check(comm, store, 50);
  for (std::uint64_t k = 0; k < steps; ++k)
    BOOST_REQUIRE(!optimizer.step(store, f, check).skipped());
}

}  // namespace

BOOST_AUTO_TEST_CASE(data_parallel_mezo_matches_the_union_of_the_shards) {
  auto& comm = world();
  chain model(2, 6, batch, 3), reference(2, 6, batch, 3);
  keep_shard(model, comm);
  const double initial = reference.loss();

  zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>> distributed(
      zm::data_parallel<>(comm, zo::central_difference(1e-3)), zo::sgd<>(2e-3), {.seed = 5});
  auto local_loss = [&] { return model.loss(); };
  run_distributed(comm, distributed, model.store, local_loss);

  zo::mezo single(zo::central_difference(1e-3), zo::sgd<>(2e-3), {.seed = 5});
  single.optimize(
      reference.store, [&] { return reference.loss(); }, steps);
  BOOST_TEST_MESSAGE("MeZO: loss " << initial << " -> " << reference.loss());
  BOOST_TEST(reference.loss() < 0.9 * initial);  // the run trains
  check_against_union(comm, model.store, reference.store, "MeZO");
}

BOOST_AUTO_TEST_CASE(data_parallel_lozo_m_matches_the_union_of_the_shards) {
  auto& comm = world();
  chain model(2, 6, batch, 4), reference(2, 6, batch, 4);
  keep_shard(model, comm);
  const double initial = reference.loss();

  zo::zo_optimizer<zo::low_rank_perturbation, zm::data_parallel<>, zo::low_rank_momentum<>>
      distributed(zo::low_rank_perturbation(2, 10), zm::data_parallel<>(comm),
                  zo::low_rank_momentum<>(1e-3, 0.9), zo::all_blocks{}, {.seed = 6});
  auto local_loss = [&] { return model.loss(); };
  run_distributed(comm, distributed, model.store, local_loss);

  zo::lozo_m single(zo::low_rank_perturbation(2, 10), zo::central_difference(),
                    zo::low_rank_momentum<>(1e-3, 0.9), zo::all_blocks{}, {.seed = 6});
  single.optimize(
      reference.store, [&] { return reference.loss(); }, steps);
  BOOST_TEST_MESSAGE("LOZO-M: loss " << initial << " -> " << reference.loss());
  BOOST_TEST(reference.loss() < 0.9 * initial);
  check_against_union(comm, model.store, reference.store, "LOZO-M");
}

BOOST_AUTO_TEST_CASE(data_parallel_loho_matches_the_union_of_the_shards) {
  auto& comm = world();
  chain model(3, 6, batch, 5), reference(3, 6, batch, 5);
  keep_shard(model, comm);
  const double initial = reference.loss();

  using zo_part = zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>>;
  zo::hybrid<zo_part, zo::adam<>, zo::deepest_layers> distributed(
      zo_part(zm::data_parallel<>(comm), zo::sgd<>(2e-3), {.seed = 7}), zo::adam<>(1e-2),
      zo::deepest_layers(1));
  zm::data_parallel_objective objective(comm, model.store, model);
  run_distributed(comm, distributed, model.store, objective);

  zo::loho single(zo::mezo(zo::central_difference(), zo::sgd<>(2e-3), {.seed = 7}),
                  zo::adam<>(1e-2), zo::deepest_layers(1));
  single.optimize(reference.store, reference, steps);
  BOOST_TEST_MESSAGE("LoHO: loss " << initial << " -> " << reference.loss());
  BOOST_TEST(reference.loss() < 0.5 * initial);
  check_against_union(comm, model.store, reference.store, "LoHO");
}

// q = 4 directions over the ranks (one each on 4 ranks) against zo::q_sample(4) in one process:
// every measured point is computed from the exact-restore snapshot, and the update is the same
// code with the same projected gradients, so the result is bit-identical, step by step.
BOOST_AUTO_TEST_CASE(direction_parallel_equals_the_single_process_q_sample_step) {
  auto& comm = world();
  for (std::size_t q : {4u, 3u, 1u}) {
    chain model(2, 6, batch, 8), reference(2, 6, batch, 8);
    zo::zo_optimizer<zo::gaussian_perturbation, zm::direction_parallel<>, zo::sgd<>> distributed(
        zm::direction_parallel<>(comm, q), zo::sgd<>(2e-3), {.seed = 11});
    zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>> single(
        zo::q_sample<>(q), zo::sgd<>(2e-3), {.seed = 11});
    bool same_reports = true;
    for (std::uint64_t k = 0; k < steps; ++k) {
      const auto a = distributed.step(model.store, [&] { return model.loss(); });
      const auto b = single.step(reference.store, [&] { return reference.loss(); });
      same_reports &= a.loss == b.loss &&
                      std::equal(a.projected_gradients.begin(), a.projected_gradients.end(),
                                 b.projected_gradients.begin(), b.projected_gradients.end());
    }
    BOOST_TEST_INFO("q = " << q);
    BOOST_TEST(same_reports);
    const auto a = zo_test::snapshot(model.store), b = zo_test::snapshot(reference.store);
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
    BOOST_TEST(replicas_identical(comm, model.store));
  }
}

BOOST_AUTO_TEST_CASE(direction_parallel_lozo_m_equals_the_single_process_q_sample_step) {
  auto& comm = world();
  chain model(2, 6, batch, 9), reference(2, 6, batch, 9);
  zo::zo_optimizer<zo::low_rank_perturbation, zm::direction_parallel<>, zo::low_rank_momentum<>>
      distributed(zo::low_rank_perturbation(2, 10), zm::direction_parallel<>(comm, 4),
                  zo::low_rank_momentum<>(1e-3), zo::all_blocks{}, {.seed = 12});
  zo::zo_optimizer<zo::low_rank_perturbation, zo::q_sample<>, zo::low_rank_momentum<>> single(
      zo::low_rank_perturbation(2, 10), zo::q_sample<>(4), zo::low_rank_momentum<>(1e-3),
      zo::all_blocks{}, {.seed = 12});
  distributed.optimize(
      model.store, [&] { return model.loss(); }, steps);
  single.optimize(
      reference.store, [&] { return reference.loss(); }, steps);
  const auto a = zo_test::snapshot(model.store), b = zo_test::snapshot(reference.store);
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
  BOOST_TEST(replicas_identical(comm, model.store));
}

// The zeroth-order traffic per step is a handful of scalars whatever the model's size; the
// first-order part of LoHO sends its blocks' gradients. Two widths: 2 layers of 4 and of 32.
BOOST_AUTO_TEST_CASE(bytes_per_step_are_reported_and_independent_of_the_parameter_count) {
  auto& comm = world();
  const auto ranks = static_cast<std::uint64_t>(comm.size());
  for (std::size_t width : {4u, 32u}) {
    chain model(2, width, batch, 3);
    keep_shard(model, comm);
    const std::size_t parameters = zo_test::snapshot(model.store).size();
    BOOST_TEST_INFO("width " << width << ", " << parameters << " parameters");

    // Data parallel MeZO: (examples, L+, L−), 8 bytes each.
    zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>> mezo(
        zm::data_parallel<>(comm), zo::sgd<>(1e-3), {.seed = 1});
    zm::traffic_meter meter(comm);
    for (int k = 0; k < 3; ++k)
      mezo.step(
          model.store, [&] { return model.loss(); }, meter);
    BOOST_TEST(meter.steps() == 3u);
    BOOST_TEST(meter.last_step().collectives == 1u);
    BOOST_TEST(meter.last_step().bytes_sent == 24u);
    BOOST_TEST(meter.last_step().bytes_received == 24u * (ranks - 1));
    BOOST_TEST_MESSAGE("data-parallel MeZO, " << parameters << " parameters, " << ranks
                                              << " ranks: " << meter.last_step().bytes_sent
                                              << " bytes sent per rank per step");

    // Data parallel with q = 4 central differences: (examples, 8 losses).
    zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<zo::q_sample<>>, zo::sgd<>> nspsa(
        zm::data_parallel<zo::q_sample<>>(comm, zo::q_sample<>(4)), zo::sgd<>(1e-3));
    zm::traffic_meter nspsa_meter(comm);
    nspsa.step(
        model.store, [&] { return model.loss(); }, nspsa_meter);
    BOOST_TEST(nspsa_meter.last_step().bytes_sent == 8u * (1 + 2 * 4));

    // Direction parallel q = 4: one 24-byte (sample, g, loss) record per direction measured.
    zm::direction_parallel<> split(comm, 4);
    zo::zo_optimizer<zo::gaussian_perturbation, zm::direction_parallel<>, zo::sgd<>> directions(
        split, zo::sgd<>(1e-3));
    zm::traffic_meter direction_meter(comm);
    directions.step(
        model.store, [&] { return model.loss(); }, direction_meter);
    const std::uint64_t own = split.first_sample(comm.rank() + 1) - split.first_sample(comm.rank());
    BOOST_TEST(direction_meter.last_step().bytes_sent == 24u * own);
    BOOST_TEST(direction_meter.last_step().bytes_sent +
                   direction_meter.last_step().bytes_received ==
               24u * 4);

    // LoHO with the deepest layer first-order: 24 bytes for the zeroth-order part, and 16 bytes
    // (examples, loss) plus the first-order gradients in double.
    using zo_part = zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>>;
    zo::hybrid<zo_part, zo::adam<>, zo::deepest_layers> loho(
        zo_part(zm::data_parallel<>(comm), zo::sgd<>(1e-3)), zo::adam<>(1e-3),
        zo::deepest_layers(1));
    zm::data_parallel_objective objective(comm, model.store, model);
    zm::traffic_meter loho_meter(comm);
    loho.step(model.store, objective, loho_meter);
    const std::size_t first_order = width * width + width;  // layer 1's weight and bias
    BOOST_TEST(loho_meter.last_step().collectives == 2u);
    BOOST_TEST(loho_meter.last_step().bytes_sent == 24u + 16u + 8u * first_order);
    BOOST_TEST_MESSAGE("data-parallel LoHO, "
                       << parameters << " parameters (" << first_order << " first-order): "
                       << loho_meter.last_step().bytes_sent << " bytes sent per rank per step");
    // Checks and checkpoints are counted apart from the steps.
    const auto before = comm.stats();
    zm::verify_replicas(comm, model.store, 0);
    BOOST_TEST(comm.stats().bytes_sent == before.bytes_sent);
  }
}

// A non-finite loss on one rank's shard skips the step on every rank, parameters restored.
BOOST_AUTO_TEST_CASE(a_nonfinite_loss_on_one_rank_skips_the_step_everywhere) {
  auto& comm = world();
  chain model(2, 6, batch, 3);
  keep_shard(model, comm);
  zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>> optimizer(
      zm::data_parallel<>(comm), zo::sgd<>(2e-3), {.seed = 5});
  const bool poisoned_rank = comm.rank() == comm.size() - 1;
  std::uint64_t skipped = 0;
  for (std::uint64_t k = 0; k < 10; ++k) {
    const auto before = zo_test::snapshot(model.store);
    const auto report = optimizer.step(model.store, [&] {
      return poisoned_rank && k == 4 ? std::numeric_limits<double>::quiet_NaN() : model.loss();
    });
    if (report.skipped()) {
      ++skipped;
      BOOST_TEST(k == 4u);
      BOOST_TEST(zo_test::snapshot(model.store) == before);
    }
  }
  BOOST_TEST(skipped == 1u);
  BOOST_TEST(replicas_identical(comm, model.store));
}

BOOST_AUTO_TEST_CASE(diverged_replicas_are_reported_with_their_ranks) {
  auto& comm = world();
  chain model(2, 4, batch, 3);
  BOOST_CHECK_NO_THROW(zm::verify_replicas(comm, model.store, 7));
  if (comm.size() == 1) return;
  if (comm.rank() == 1) model.store.matrix(0)(0, 0) += 1e-15;
  try {
    zm::verify_replicas(comm, model.store, 7);
    BOOST_ERROR("no divergence reported");
  } catch (const zm::replica_divergence& e) {
    const std::string what = e.what();
    BOOST_TEST_MESSAGE(what);
    BOOST_TEST(what.find("step 7") != std::string::npos);
    BOOST_TEST(what.find("rank(s) 1 differ") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(shards_that_do_not_add_up_are_rejected_before_any_change) {
  auto& comm = world();
  chain model(2, 4, batch, 3);
  keep_shard(model, comm);
  comm.set_batch_examples(batch + 1);
  zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>> optimizer(
      zm::data_parallel<>(comm), zo::sgd<>(2e-3));
  const auto before = zo_test::snapshot(model.store);
  try {
    optimizer.step(model.store, [&] { return model.loss(); });
    BOOST_ERROR("no error for shards that do not add up");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST(std::string(e.what()).find("do not add up to the batch of 31") != std::string::npos);
  }
  BOOST_TEST(zo_test::snapshot(model.store) == before);
  BOOST_TEST(optimizer.step_count() == 0u);
  comm.set_batch_examples(0);
  BOOST_CHECK_THROW(zm::direction_parallel<>(comm, 0), zo::invalid_argument);
  BOOST_CHECK_THROW(zm::direction_parallel<>(comm, 257), zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(direction_parallel_refuses_fused_steps) {
  auto& comm = world();
  chain model(2, 4, batch, 3);
  zo::zo_optimizer<zo::gaussian_perturbation, zm::direction_parallel<>, zo::sgd<>> optimizer(
      zm::direction_parallel<>(comm, 4), zo::sgd<>(2e-3), {.fused_steps = true});
  BOOST_CHECK_THROW(optimizer.step(model.store, [&] { return model.loss(); }),
                    zo::invalid_argument);
}

// Data-parallel fused steps: every rank holds the same pending perturbation, so replicas stay
// identical, and the result equals the unfused distributed run up to the fused pass's rounding.
BOOST_AUTO_TEST_CASE(data_parallel_fused_steps_keep_the_replicas_identical) {
  auto& comm = world();
  chain model(2, 6, batch, 3);
  keep_shard(model, comm);
  zo::zo_optimizer<zo::gaussian_perturbation, zm::data_parallel<>, zo::sgd<>> optimizer(
      zm::data_parallel<>(comm), zo::sgd<>(2e-3), {.seed = 5, .fused_steps = true});
  zm::replica_check check(comm, model.store, 10);
  optimizer.optimize(
      model.store, [&] { return model.loss(); }, 50, check);
  BOOST_TEST(replicas_identical(comm, model.store));
}

// Checkpoints: rank 0 alone writes (zo::io::save_store writes a temporary file and renames
// it); when write_on_root returns, the complete file is there for every rank.
BOOST_AUTO_TEST_CASE(rank_zero_writes_the_checkpoint_atomically) {
  auto& comm = world();
  zo::eigen_store<float> store;
  store.add("w", Eigen::MatrixXf::Constant(3, 2, 0.5f));
  const int pid = comm.allgather_value(static_cast<int>(getpid()), "the test's pid")[0];
  const auto dir = std::filesystem::temp_directory_path() / ("zo_mpi_test_" + std::to_string(pid));
  if (comm.rank() == 0) std::filesystem::create_directories(dir);
  int writes = 0;
  zm::write_on_root(comm, [&] {
    ++writes;
    zo::io::save_store(dir / "checkpoint.safetensors", store);
  });
  BOOST_TEST(writes == (comm.rank() == 0 ? 1 : 0));
  zo::eigen_store<float> loaded;
  loaded.add("w", Eigen::MatrixXf::Zero(3, 2));
  zo::io::load_store(dir / "checkpoint.safetensors", loaded);
  BOOST_TEST(loaded.matrix(0)(2, 1) == 0.5f);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir))
    ++files;
  BOOST_TEST(files == 1u);  // no temporary left behind
  // A failing writer is reported on every rank.
  BOOST_CHECK_THROW(zm::write_on_root(comm, [&] { throw std::runtime_error("disk full"); }),
                    std::runtime_error);
  comm.allgather_value(0, "the test's end");  // every rank has read the file
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

int main(int argc, char** argv) {
  zm::environment mpi(argc, argv);
  const int failed = boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
  // A rank whose checks failed fails the job even if the others passed.
  const auto all = world().allgather_value(failed, "the test results");
  return *std::max_element(all.begin(), all.end());
}
