// SPDX-License-Identifier: Apache-2.0
// What zo-replay does, as functions the tests call too: the optimizer settings a trajectory log
// carries in its description (JSON), checkpoints as zo stores, and the replay of a log on a base
// checkpoint with the optimizer the log names.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <zo/io/safetensors.hpp>
#include <zo/io/trajectory.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

#include "../common/check.hpp"
#include "../common/output_files.hpp"

namespace zo_replay {

// Everything that decides a zeroth-order run besides the weights and the losses. Constant
// learning rates only: a log records each step's rate, but a schedule is code.
struct run_config {
  std::string optimizer = "mezo";  // mezo, lozo or lozo-m
  std::uint64_t seed = 0;
  double learning_rate = 1e-6;
  double weight_decay = 0;
  double epsilon = 1e-3;
  std::string restore = "exact";  // exact or arithmetic
  bool fused_steps = false;
  std::size_t rank = 2;       // LOZO
  std::size_t interval = 50;  // LOZO's ν
  double beta = 0.9;          // LOZO-M
  bool scale_by_sqrt_rank = false;
  // Not in the description: the log's header names it (zo::io::trajectory_header::generator).
  zo::generator generator = zo::default_generator;

  std::string to_json() const {
    return nlohmann::json{{"optimizer", optimizer},
                          {"seed", seed},
                          {"learning_rate", learning_rate},
                          {"weight_decay", weight_decay},
                          {"epsilon", epsilon},
                          {"restore", restore},
                          {"fused_steps", fused_steps},
                          {"rank", rank},
                          {"interval", interval},
                          {"beta", beta},
                          {"scale_by_sqrt_rank", scale_by_sqrt_rank}}
        .dump();
  }

  static run_config from_json(const std::string& text) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw zo::invalid_argument("the log's description is not a run configuration (JSON): " +
                                 std::string(e.what()));
    }
    zo_examples::require(j.is_object(), "the log's description is not a JSON object");
    run_config c;
    const auto field = [&](const char* name, auto& value) {
      if (!j.contains(name)) return;
      try {
        j.at(name).get_to(value);
      } catch (const nlohmann::json::exception&) {
        throw zo::invalid_argument(std::string("run configuration field '") + name +
                                   "' has the wrong type: " + j.at(name).dump());
      }
    };
    field("optimizer", c.optimizer);
    field("seed", c.seed);
    field("learning_rate", c.learning_rate);
    field("weight_decay", c.weight_decay);
    field("epsilon", c.epsilon);
    field("restore", c.restore);
    field("fused_steps", c.fused_steps);
    field("rank", c.rank);
    field("interval", c.interval);
    field("beta", c.beta);
    field("scale_by_sqrt_rank", c.scale_by_sqrt_rank);
    zo_examples::require(
        c.restore == "exact" || c.restore == "arithmetic",
        "run configuration: restore must be exact or arithmetic, got '" + c.restore + "'");
    return c;
  }

  zo::zo_options options() const {
    return {.seed = seed,
            .generator = generator,
            .restore = restore == "exact" ? zo::restore_mode::exact : zo::restore_mode::arithmetic,
            .fused_steps = fused_steps};
  }

  // Calls f with the optimizer this configuration describes.
  template <class F>
  decltype(auto) with_optimizer(F&& f) const {
    const zo::central_difference estimator(epsilon);
    if (optimizer == "mezo") {
      zo::mezo opt(estimator, zo::sgd<>(learning_rate, weight_decay), options());
      return f(opt);
    }
    const zo::low_rank_perturbation perturbation(rank, interval, scale_by_sqrt_rank);
    if (optimizer == "lozo") {
      zo::lozo opt(perturbation, estimator, zo::sgd<>(learning_rate, weight_decay), {}, options());
      return f(opt);
    }
    zo_examples::require(optimizer == "lozo-m", "run configuration: unknown optimizer '" +
                                                    optimizer + "' (mezo, lozo or lozo-m)");
    zo::lozo_m opt(perturbation, estimator,
                   zo::low_rank_momentum(zo::constant_schedule(learning_rate), beta, weight_decay),
                   {}, options());
    return f(opt);
  }
};

// The MeZO reference's convention: biases and layer norms are not decayed.
inline bool decayed(const std::string& name) {
  return name.find("bias") == std::string::npos && name.find("layer_norm") == std::string::npos &&
         name.find("layernorm") == std::string::npos;
}

// A checkpoint as a store: one block per tensor in file order (block ids key the directions, so
// the order is part of the run), [n] as 1 × n, [r, c] as r × c.
inline zo::eigen_store<float> load_checkpoint(const std::filesystem::path& path) {
  const auto file = zo::io::safetensors_file::open(path);
  zo::eigen_store<float> store;
  for (const auto& t : file.tensors()) {
    zo_examples::require(t.shape.size() == 1 || t.shape.size() == 2,
                         "tensor '" + t.name + "' in " + path.string() + " has shape " +
                             zo::io::shape_string(t.shape) + "; zo-replay takes 1-D and 2-D ones");
    const std::size_t rows = t.shape.size() == 1 ? 1 : t.shape[0];
    const std::size_t cols = t.shape.back();
    const auto values = file.read_float(t.name, t.shape);
    zo::eigen_store<float>::matrix_type m(static_cast<Eigen::Index>(rows),
                                          static_cast<Eigen::Index>(cols));
    std::copy(values.begin(), values.end(), m.data());
    store.add(t.name, std::move(m), {.decay = decayed(t.name)});
  }
  return store;
}

struct replay_result {
  std::size_t steps = 0;
  zo::io::trajectory log;
};

// Replays the log at `log_path` on the checkpoint at `base`, writing the result to `out`.
// Before anything is read, an `out` that would overwrite the base or the log (the same file,
// through links too) is refused, as is one that is (or links to) something other than a
// regular file, which the new file could not replace as a whole. `out` is written through its
// links, as a whole (zo::io::write_safetensors: a temporary file, fsync'ed and renamed), and its
// directory fsync'ed; a failed write is an error naming the file.
inline replay_result replay_file(const std::filesystem::path& base,
                                 const std::filesystem::path& log_path,
                                 const std::filesystem::path& out) {
  zo_examples::refuse_overwriting_inputs(
      {{out, "the output"}}, {{base, "the base checkpoint"}, {log_path, "the trajectory log"}});
  const std::filesystem::path target = zo_examples::resolved_output(out);
  std::error_code ec;
  const auto status = std::filesystem::status(target, ec);
  zo_examples::require(!std::filesystem::exists(status) || std::filesystem::is_regular_file(status),
                       "cannot write " + out.string() +
                           ": it is not a regular file (it resolves to " + target.string() + ")");
  replay_result result;
  result.log = zo::io::read_trajectory(log_path);
  run_config config = run_config::from_json(result.log.header.description);
  config.generator = result.log.header.generator;
  auto store = load_checkpoint(base);
  result.steps = config.with_optimizer(
      [&](auto& optimizer) { return zo::io::replay(optimizer, store, result.log); });
  zo::io::save_store(target, store, {{"zo-replay", log_path.filename().string()}});
  try {
    zo_examples::fsync_directory(target.parent_path());
  } catch (const std::exception& e) {
    throw zo::invalid_argument("cannot write " + out.string() + ": " + e.what());
  }
  return result;
}

}  // namespace zo_replay
