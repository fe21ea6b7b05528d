// SPDX-License-Identifier: Apache-2.0
// Builds (not run: that needs mpiexec) against the installed zo::mpi target.
#include <zo/distributed/mpi.hpp>
#include <zo/zo.hpp>

int main(int argc, char** argv) {
  zo::mpi::environment mpi(argc, argv);
  zo::mpi::communicator comm;
  zo::zo_optimizer<zo::gaussian_perturbation, zo::mpi::data_parallel<>, zo::sgd<>> optimizer(
      zo::mpi::data_parallel<>(comm), zo::sgd<>(0.01));
  return optimizer.step_count() == 0 ? 0 : 1;
}
