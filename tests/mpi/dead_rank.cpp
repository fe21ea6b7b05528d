// SPDX-License-Identifier: Apache-2.0
// mpi_dead_rank MODE TIMEOUT_MS: every rank runs 200 data-parallel MeZO steps on its shard; at
// step 20 rank 1 is killed (kill), sleeps for an hour (hang) or carries on (control). The other
// ranks must then end the job with an error (zo::mpi::timeout_error through run_or_abort, or
// mpiexec's own teardown after a killed rank) instead of waiting.
#include <Eigen/Dense>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <zo/distributed/mpi.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

int main(int argc, char** argv) {
  zo::mpi::environment env(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "control";
  const long timeout_ms = argc > 2 ? std::atol(argv[2]) : 3000;
  zo::mpi::communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::milliseconds(timeout_ms)});
  zo::mpi::run_or_abort(MPI_COMM_WORLD, [&] {
    std::srand(1);  // the same replica and data on every rank
    zo::eigen_store<double> store;
    store.add("w", Eigen::MatrixXd::Random(8, 1));
    const Eigen::MatrixXd x = Eigen::MatrixXd::Random(8, 4 * comm.size());
    const Eigen::RowVectorXd y = Eigen::RowVectorXd::Random(4 * comm.size());
    const auto shard = [&](const Eigen::MatrixXd& m) { return m.middleCols(4 * comm.rank(), 4); };
    comm.set_local_examples(4);
    const auto loss = [&] {
      const Eigen::RowVectorXd out = store.matrix(0).col(0).transpose() * shard(x);
      return 0.5 * (out - y.middleCols(4 * comm.rank(), 4)).squaredNorm() / 4.0;
    };
    zo::zo_optimizer<zo::gaussian_perturbation, zo::mpi::data_parallel<>, zo::sgd<>> optimizer(
        zo::mpi::data_parallel<>(comm), zo::sgd<>(0.01), {.seed = 1});
    for (int step = 0; step < 200; ++step) {
      if (step == 20 && comm.rank() == 1) {
        if (mode == "kill") std::raise(SIGKILL);
        if (mode == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
      }
      optimizer.step(store, loss);
    }
    std::printf("rank %d: 200 steps, loss %.6f\n", comm.rank(), loss());
  });
  return 0;
}
