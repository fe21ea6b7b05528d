// SPDX-License-Identifier: Apache-2.0
// Distributed fine-tuning over MPI (Open MPI). Optional: not included by zo.hpp; link zo::mpi.
//
// Zeroth-order methods need almost no communication: every rank regenerates the same direction
// from the same key, so only loss values travel. Three modes, each a policy or wrapper the
// existing optimizers take unchanged:
//
//   data_parallel<Base>         estimator: every rank holds a replica and evaluates its own shard
//                               of the batch; one gather of every rank's losses per step.
//   direction_parallel<Base>    estimator: the q directions of a step are split across ranks;
//                               one gather of (sample, g, loss) records per step.
//   data_parallel_objective     LoHO's objective: the first-order blocks' gradients are gathered
//                               (only those blocks); the zeroth-order part as in data_parallel.
//
// Replicas stay bit-identical because nothing depends on MPI's reduction order: each rank's
// values are gathered (allgather) and every rank sums them itself in rank order. A periodic
// checksum (replica_check) turns a divergence into an error. Every collective is non-blocking
// and polled against a deadline, so a dead or hung rank ends the job with timeout_error instead
// of a hang. See docs/distributed.md.
#pragma once

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "zo/backends/cpu.hpp"
#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/gradient_view.hpp"
#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"

namespace zo::mpi {

// A collective did not complete before the deadline: a rank has died, hung or fallen out of
// step. The communicator is unusable afterwards (the pending request cannot be cancelled); end
// the job, e.g. through run_or_abort.
class timeout_error : public std::runtime_error {
 public:
  explicit timeout_error(const std::string& what) : std::runtime_error("zo: " + what) {}
};

// The replicas' parameters differ (replica_check).
class replica_divergence : public std::runtime_error {
 public:
  explicit replica_divergence(const std::string& what) : std::runtime_error("zo: " + what) {}
};

// Initialises MPI for the lifetime of the object (funneled: zo's OpenMP threads never call MPI).
class environment {
 public:
  environment(int& argc, char**& argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
  ~environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;
};

struct communicator_options {
  // How long a rank waits for any collective before throwing timeout_error. It bounds the time
  // a job survives a dead or hung rank, so it should exceed the slowest rank's step.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

// Bytes this rank put into collectives, and bytes it received from the other ranks. "Sent" is
// the rank's own contribution to each gather (its send buffer); how many times the MPI library
// forwards it on the wire depends on its algorithm (a ring allgather moves each contribution
// P − 1 times).
struct traffic {
  std::uint64_t collectives = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;

  traffic operator-(const traffic& earlier) const {
    return {collectives - earlier.collectives, bytes_sent - earlier.bytes_sent,
            bytes_received - earlier.bytes_received};
  }
};

// What a collective is for: the optimizer's own traffic, or checks and checkpoints around it,
// counted apart so that per-step figures are the optimizer's alone.
enum class channel { step, control };

class communicator {
 public:
  explicit communicator(MPI_Comm comm = MPI_COMM_WORLD, communicator_options options = {})
      : comm_(comm), options_(options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    require(initialized != 0,
            "zo::mpi::communicator: MPI is not initialised (construct "
            "a zo::mpi::environment or call MPI_Init first)");
    require(options.timeout.count() > 0,
            "zo::mpi::communicator: the timeout must be positive, got " +
                std::to_string(options.timeout.count()) + " ms");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm get() const { return comm_; }
  const communicator_options& options() const { return options_; }

  // The optimizer's traffic, and that of checks and checkpoints (channel::control).
  const traffic& stats() const { return step_; }
  const traffic& control_stats() const { return control_; }

  // The number of examples in this rank's shard of the current batch (data parallel). Each
  // rank's loss enters the global loss with weight local / Σ local, so the global loss is the
  // mean over the union of the shards when every rank's objective returns its shard's mean.
  // Rank-local: no communication; the counts travel with the step's losses.
  void set_local_examples(std::size_t examples) { local_examples_ = examples; }
  std::size_t local_examples() const { return local_examples_; }
  // The batch size the shards must add up to; 0 (the default) leaves it unchecked.
  void set_batch_examples(std::size_t examples) { batch_examples_ = examples; }
  std::size_t batch_examples() const { return batch_examples_; }

  // Gathers `bytes` from every rank into `receive` (size() · bytes), in rank order.
  void allgather(const void* send, std::size_t bytes, void* receive, std::string_view what,
                 channel c = channel::step) {
    require_usable();
    require_int(bytes, what);
    MPI_Request request;
    check(MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, receive, static_cast<int>(bytes),
                         MPI_BYTE, comm_, &request),
          what);
    wait(request, what);
    count(c, bytes, bytes * static_cast<std::size_t>(size_ - 1));
  }

  // Gathers counts[r] bytes from rank r into `receive`, rank after rank; `bytes` must be
  // counts[rank()].
  void allgatherv(const void* send, std::size_t bytes, std::span<const std::size_t> counts,
                  void* receive, std::string_view what, channel c = channel::step) {
    require_usable();
    require(counts.size() == static_cast<std::size_t>(size_) &&
                counts[static_cast<std::size_t>(rank_)] == bytes,
            "zo::mpi: " + std::string(what) + ": the byte counts do not match the ranks");
    std::vector<int> sizes(counts.size()), offsets(counts.size());
    std::size_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      require_int(counts[r], what);
      require_int(total, what);
      sizes[r] = static_cast<int>(counts[r]);
      offsets[r] = static_cast<int>(total);
      total += counts[r];
    }
    MPI_Request request;
    check(MPI_Iallgatherv(send, static_cast<int>(bytes), MPI_BYTE, receive, sizes.data(),
                          offsets.data(), MPI_BYTE, comm_, &request),
          what);
    wait(request, what);
    count(c, bytes, total - bytes);
  }

  // Every rank's value of a trivially copyable `value`, in rank order.
  template <class T>
  std::vector<T> allgather_value(const T& value, std::string_view what,
                                 channel c = channel::control) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> all(static_cast<std::size_t>(size_));
    allgather(&value, sizeof(T), all.data(), what, c);
    return all;
  }

 private:
  void require_usable() const {
    if (broken_) {
      throw timeout_error("rank " + std::to_string(rank_) +
                          ": the communicator is unusable after an earlier timeout");
    }
  }
  static void require_int(std::size_t bytes, std::string_view what) {
    require(bytes <= static_cast<std::size_t>(INT_MAX),
            "zo::mpi: " + std::string(what) + " needs more than 2^31 - 1 bytes per rank");
  }
  void check(int code, std::string_view what) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw std::runtime_error("zo: rank " + std::to_string(rank_) + ": MPI failed in " +
                             std::string(what) + ": " + std::string(text, length));
  }

  // Polls instead of blocking, so that a collective that never completes ends in an error. The
  // first millisecond only yields (a step's collective is usually done by then); later polls
  // sleep, so that ranks oversubscribing a core leave it to the ones still computing.
  void wait(MPI_Request& request, std::string_view what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + options_.timeout;
    for (;;) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      const auto now = clock::now();
      if (now >= deadline) {
        broken_ = true;
        throw timeout_error("rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                            " waited more than " + std::to_string(options_.timeout.count()) +
                            " ms for " + std::string(what) +
                            ": another rank has died, hung or fallen out of step");
      }
      if (now - start < std::chrono::milliseconds(1)) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  void count(channel c, std::size_t sent, std::size_t received) {
    traffic& t = c == channel::step ? step_ : control_;
    ++t.collectives;
    t.bytes_sent += sent;
    t.bytes_received += received;
  }

  MPI_Comm comm_;
  communicator_options options_;
  int rank_ = 0, size_ = 1;
  std::size_t local_examples_ = 1;
  std::size_t batch_examples_ = 0;
  bool broken_ = false;
  traffic step_, control_;
};

// Runs `body`; if it throws, prints the error with the rank and aborts the whole job
// (MPI_Abort), so that one rank's failure ends every rank instead of leaving them waiting.
template <class Body>
void run_or_abort(MPI_Comm comm, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    int rank = -1;
    MPI_Comm_rank(comm, &rank);
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(comm, 1);
  }
}

namespace detail {

// Forwards an estimator's moves to the optimizer's probe and records each local loss. A
// non-finite local loss does not end the step here (the probe's measure()), so that this rank
// keeps making the moves the others make; the step is skipped on every rank once the gathered
// losses show it.
template <class Probe>
class recording_probe {
 public:
  static constexpr bool measures = true;
  recording_probe(Probe& probe, std::vector<double>& losses) : probe_(probe), losses_(losses) {}
  void shift(std::size_t sample, double alpha) { probe_.shift(sample, alpha); }
  void reset() { probe_.reset(); }
  double evaluate() {
    const double loss = probe_.measure();
    losses_.push_back(loss);
    return loss;
  }
  double measure() { return evaluate(); }

 private:
  Probe& probe_;
  std::vector<double>& losses_;
};

// Hands an estimator given losses in order, without moving any parameter.
class replay_probe {
 public:
  static constexpr bool measures = true;
  explicit replay_probe(std::span<const double> losses) : losses_(losses) {}
  void shift(std::size_t, double) {}
  void reset() {}
  double evaluate() { return losses_[next_++]; }
  double measure() { return evaluate(); }

 private:
  std::span<const double> losses_;
  std::size_t next_ = 0;
};

// Σ_r w_r·x_r in rank order, w_r = n_r / Σ n: the same on every rank and, with one rank, x
// itself (w = 1). Ranks with an empty shard are left out (their loss may be NaN). When the
// batch size is known (expected > 0), shards that do not add up to it are an error.
inline std::vector<double> shard_weights(std::span<const double> counts, std::size_t expected) {
  double total = 0;
  std::string listed;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    total += counts[r];
    listed += (r == 0 ? "" : ", ") + std::to_string(static_cast<std::uint64_t>(counts[r]));
  }
  require(total > 0, "data_parallel: every rank's shard is empty (set_local_examples)");
  require(expected == 0 || total == static_cast<double>(expected),
          "data_parallel: the ranks' shards hold " + listed +
              " examples, which do not add up to "
              "the batch of " +
              std::to_string(expected));
  std::vector<double> weights(counts.size());
  for (std::size_t r = 0; r < counts.size(); ++r)
    weights[r] = counts[r] / total;
  return weights;
}

template <class Store>
constexpr void require_host_store() {
  static_assert(std::is_same_v<typename Store::backend_type, backends::cpu>,
                "zo::mpi: parameter checksums and first-order gradient exchange read host "
                "memory; they need a store on the cpu backend");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Data parallel: every rank evaluates the loss on its own shard of the batch at the same
// (key-regenerated) points. The base estimator runs once on the parameters, recording the local
// losses; one gather brings every rank's (examples, losses); every rank forms the global losses
// Σ_r w_r·L_r in rank order and runs the base estimator again on them, without moving the
// parameters, to get the projected gradients. Per step each rank sends 8·(1 + k) bytes for k
// evaluations (MeZO: 24), whatever the number of parameters.
template <class Base = central_difference>
class data_parallel {
  static_assert(check_estimator<Base>());

 public:
  explicit data_parallel(communicator& comm, Base base = Base{})
      : comm_(&comm), base_(std::move(base)) {}

  double epsilon() const { return base_.epsilon(); }
  std::size_t samples() const { return base_.samples(); }
  const Base& base() const { return base_; }

  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    // A dry run (a fused step learning where the next one starts) talks to no other rank.
    if constexpr (!Probe::measures) {
      return base_.estimate(probe, g);
    } else {
      local_.assign(1, static_cast<double>(comm_->local_examples()));
      detail::recording_probe<Probe> recorder(probe, local_);
      base_.estimate(recorder, g);  // this shard's estimate, replaced below
      const std::size_t row = local_.size();
      const auto ranks = static_cast<std::size_t>(comm_->size());
      gathered_.resize(row * ranks);
      comm_->allgather(local_.data(), row * sizeof(double), gathered_.data(),
                       "the data-parallel losses of a step");
      counts_.resize(ranks);
      for (std::size_t r = 0; r < ranks; ++r)
        counts_[r] = gathered_[r * row];
      const auto weights = detail::shard_weights(counts_, comm_->batch_examples());
      global_.assign(row - 1, 0.0);
      for (std::size_t r = 0; r < ranks; ++r) {
        if (counts_[r] == 0) continue;
        for (std::size_t e = 0; e + 1 < row; ++e)
          global_[e] += weights[r] * gathered_[r * row + 1 + e];
      }
      // A non-finite global loss ends the step on every rank alike.
      for (double loss : global_) {
        if (!std::isfinite(loss)) return loss;
      }
      detail::replay_probe replay(global_);
      return base_.estimate(replay, g);
    }
  }

 private:
  communicator* comm_;
  Base base_;
  // Scratch reused from step to step.
  mutable std::vector<double> local_, gathered_, counts_, global_;
};

// ---------------------------------------------------------------------------------------------
// Direction parallel: the q directions of a step are split across ranks in contiguous ranges
// (rank r measures samples ⌊r·q/P⌋ to ⌊(r+1)·q/P⌋ − 1; ranks may get none when q < P), every
// rank on the whole batch. One gather of (sample, g, loss) records, 24 bytes per direction;
// every rank then holds all q projected gradients and the step rule applies all q updates in
// sample order, exactly as zo::q_sample<Base>(q) in one process. With restore_mode::exact each
// measured point is computed from the snapshot, so it does not depend on which directions were
// measured before it, and the result is bit-identical to the single-process q-sample step.
// Fused steps are refused: each rank's first point differs.
template <class Base = central_difference>
class direction_parallel {
  static_assert(check_measuring_estimator<Base>());

 public:
  direction_parallel(communicator& comm, std::size_t q, Base base = Base{})
      : comm_(&comm), base_(std::move(base)), q_(q) {
    zo::require(q >= 1 && q <= max_samples_per_step,
                "direction_parallel: q must be between 1 and " +
                    std::to_string(max_samples_per_step) + ", got " + std::to_string(q));
    zo::require(base_.samples() == 1,
                "direction_parallel: the base estimator must measure one direction");
  }

  double epsilon() const { return base_.epsilon(); }
  std::size_t samples() const { return q_; }
  const Base& base() const { return base_; }

  // The samples rank r measures: [first(r), first(r + 1)).
  std::size_t first_sample(int rank) const {
    return static_cast<std::size_t>(rank) * q_ / static_cast<std::size_t>(comm_->size());
  }

  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    if constexpr (!Probe::measures) {
      throw zo::invalid_argument(
          "direction_parallel does not support fused steps (zo_options::fused_steps): each rank "
          "starts its step at a different direction");
    } else {
      losses_.clear();
      detail::recording_probe<Probe> recorder(probe, losses_);
      const double shared = base_.baseline(recorder);
      const int rank = comm_->rank();
      const std::size_t begin = first_sample(rank), end = first_sample(rank + 1);
      mine_.clear();
      for (std::size_t j = begin; j < end; ++j) {
        double gj = 0;
        const double loss = base_.measure(recorder, j, shared, gj);
        mine_.push_back({static_cast<double>(j), gj, loss});
      }
      // A non-finite local loss travels as a non-finite record, so every rank skips the step.
      for (double loss : losses_) {
        if (!std::isfinite(loss)) {
          for (auto& r : mine_)
            r.loss = loss;
        }
      }
      const auto ranks = static_cast<std::size_t>(comm_->size());
      byte_counts_.resize(ranks);
      for (std::size_t r = 0; r < ranks; ++r) {
        byte_counts_[r] =
            (first_sample(static_cast<int>(r) + 1) - first_sample(static_cast<int>(r))) *
            sizeof(record);
      }
      all_.resize(q_);
      comm_->allgatherv(mine_.data(), mine_.size() * sizeof(record), byte_counts_, all_.data(),
                        "the direction-parallel projected gradients of a step");
      double loss = 0;
      for (std::size_t j = 0; j < q_; ++j) {
        zo::require(all_[j].sample == static_cast<double>(j),
                    "direction_parallel: the ranks disagree on the directions of a step "
                    "(is q the same on every rank?)");
        if (!std::isfinite(all_[j].loss)) return all_[j].loss;  // skipped on every rank
        g[j] = all_[j].g;
        loss += all_[j].loss;  // in sample order, as q_sample adds them
      }
      return loss / static_cast<double>(q_);
    }
  }

 private:
  struct record {
    double sample, g, loss;
  };
  static_assert(sizeof(record) == 24);

  communicator* comm_;
  Base base_;
  std::size_t q_;
  mutable std::vector<double> losses_;
  mutable std::vector<record> mine_, all_;
  mutable std::vector<std::size_t> byte_counts_;
};

// ---------------------------------------------------------------------------------------------
// LoHO's objective over a shard: loss() is the local loss (the zeroth-order part's estimator,
// data_parallel, combines them), and loss_and_gradients gathers every rank's first-order
// gradients (only the blocks the hybrid asks for) and loss, and sums them in rank order with
// the shard weights. Per step each rank sends 16 bytes plus its first-order gradients,
// sizeof(T)·(first-order parameters). Needs a store on the cpu backend.
template <class Objective, class Store>
class data_parallel_objective {
  using T = typename Store::value_type;

 public:
  data_parallel_objective(communicator& comm, const Store& store, Objective& local)
      : comm_(&comm), store_(&store), local_(&local) {
    detail::require_host_store<Store>();
    static_assert(differentiable_objective<Objective, T>,
                  "zo::mpi::data_parallel_objective: the objective needs loss() and "
                  "loss_and_gradients(zo::gradient_view<T>&)");
  }

  double loss() { return static_cast<double>(local_->loss()); }

  double loss_and_gradients(gradient_view<T>& view) {
    const double local = static_cast<double>(local_->loss_and_gradients(view));
    std::size_t elements = 0;
    for (std::size_t index : view.blocks())
      elements += store_->block(index).size();
    const std::size_t header = 2 * sizeof(double);
    const std::size_t row = header + elements * sizeof(T);
    send_.resize(row);
    const double head[2] = {static_cast<double>(comm_->local_examples()), local};
    std::memcpy(send_.data(), head, header);
    std::size_t offset = header;
    for (std::size_t k = 0; k < view.blocks().size(); ++k) {
      const std::size_t n = store_->block(view.blocks()[k]).size();
      std::memcpy(send_.data() + offset, view[k], n * sizeof(T));
      offset += n * sizeof(T);
    }
    const auto ranks = static_cast<std::size_t>(comm_->size());
    receive_.resize(row * ranks);
    comm_->allgather(send_.data(), row, receive_.data(), "the first-order gradients of a step");

    std::vector<double> counts(ranks), losses(ranks);
    for (std::size_t r = 0; r < ranks; ++r) {
      double h[2];
      std::memcpy(h, receive_.data() + r * row, header);
      counts[r] = h[0];
      losses[r] = h[1];
    }
    const auto weights = detail::shard_weights(counts, comm_->batch_examples());
    double loss = 0;
    for (std::size_t r = 0; r < ranks; ++r) {
      if (counts[r] != 0) loss += weights[r] * losses[r];
    }
    sum_.resize(elements);
    std::fill(sum_.begin(), sum_.end(), 0.0);
    std::vector<T> row_values(elements);
    for (std::size_t r = 0; r < ranks; ++r) {
      if (counts[r] == 0) continue;
      std::memcpy(row_values.data(), receive_.data() + r * row + header, elements * sizeof(T));
      for (std::size_t e = 0; e < elements; ++e)
        sum_[e] += weights[r] * static_cast<double>(row_values[e]);
    }
    offset = 0;
    for (std::size_t k = 0; k < view.blocks().size(); ++k) {
      const std::size_t n = store_->block(view.blocks()[k]).size();
      for (std::size_t e = 0; e < n; ++e)
        view[k][e] = static_cast<T>(sum_[offset + e]);
      offset += n;
    }
    return loss;
  }

 private:
  communicator* comm_;
  const Store* store_;
  Objective* local_;
  std::vector<unsigned char> send_, receive_;
  std::vector<double> sum_;
};

// ---------------------------------------------------------------------------------------------
// Replica checks.

// A 64-bit hash of the raw bits of every block (FNV-1a over 8-byte words, block sizes mixed
// in): equal parameters give equal hashes on every machine with the same byte order; one pass
// over the parameters.
template <class Store>
std::uint64_t parameter_checksum(const Store& store) {
  detail::require_host_store<Store>();
  constexpr std::uint64_t prime = 0x100000001b3ull;
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto block = store.block(i);
    const auto* bytes = reinterpret_cast<const unsigned char*>(block.data());
    const std::size_t n = block.size() * sizeof(*block.data());
    h = (h ^ n) * prime;
    std::size_t k = 0;
    for (; k + 8 <= n; k += 8) {
      std::uint64_t word;
      std::memcpy(&word, bytes + k, 8);
      h = (h ^ word) * prime;
    }
    for (; k < n; ++k)
      h = (h ^ bytes[k]) * prime;
  }
  return h;
}

// Gathers every rank's parameter checksum and throws replica_divergence, on every rank, naming
// the ranks whose parameters differ from rank 0's.
template <class Store>
void verify_replicas(communicator& comm, const Store& store, std::uint64_t step) {
  const std::uint64_t mine = parameter_checksum(store);
  const auto all = comm.allgather_value(mine, "the replica checksums");
  std::string differing, values;
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    differing += (differing.empty() ? "" : ", ") + std::to_string(r);
  }
  if (differing.empty()) return;
  char hex[32];
  for (std::size_t r = 0; r < all.size(); ++r) {
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(all[r]));
    values += (r == 0 ? "" : ", ") + std::string("rank ") + std::to_string(r) + " " + hex;
  }
  throw replica_divergence("the replicas diverged by step " + std::to_string(step) +
                           ": the parameters of rank(s) " + differing + " differ from rank 0's (" +
                           values + ")");
}

// A callback (step(store, f, check)) that verifies the replicas after every `every`-th step.
// With fused steps the parameters between steps hold the next perturbation; data-parallel
// replicas hold the same one, so the check stays valid.
template <class Store>
class replica_check {
 public:
  replica_check(communicator& comm, const Store& store, std::uint64_t every = 100)
      : comm_(&comm), store_(&store), every_(every) {
    zo::require(every >= 1, "replica_check: every must be at least 1");
  }
  template <class Report>
  void after_step(const Report& report) {
    if ((report.step + 1) % every_ == 0) verify_replicas(*comm_, *store_, report.step);
  }

 private:
  communicator* comm_;
  const Store* store_;
  std::uint64_t every_;
};

// A callback that records the optimizer traffic of each step (communicator::stats() between
// two after_step calls; checks and checkpoints are counted apart).
class traffic_meter {
 public:
  explicit traffic_meter(const communicator& comm) : comm_(&comm), previous_(comm.stats()) {}
  template <class Report>
  void after_step(const Report&) {
    last_ = comm_->stats() - previous_;
    previous_ = comm_->stats();
    ++steps_;
  }
  const traffic& last_step() const { return last_; }
  std::uint64_t steps() const { return steps_; }

 private:
  const communicator* comm_;
  traffic previous_, last_;
  std::uint64_t steps_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Checkpoints: rank 0 alone runs `write` (e.g. zo::io::save_store, which writes to a temporary
// name and renames it into place); every rank then learns whether it succeeded, and none goes
// on before the file is complete. A failure is rethrown on rank 0 and reported on the others.
template <class Write>
void write_on_root(communicator& comm, Write&& write) {
  std::exception_ptr error;
  int failed = 0;
  if (comm.rank() == 0) {
    try {
      write();
    } catch (...) {
      error = std::current_exception();
      failed = 1;
    }
  }
  const auto status = comm.allgather_value(failed, "the checkpoint's completion");
  if (error) std::rethrow_exception(error);
  if (status[0] != 0) throw std::runtime_error("zo: rank 0 failed to write the checkpoint");
}

}  // namespace zo::mpi
