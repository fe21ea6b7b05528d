// SPDX-License-Identifier: Apache-2.0
// zo-finetune's resume state (finetune --save-every N, --resume): the directory PREFIX.resume/
// holds the weights after some step as a checkpoint directory (weights-STEP.save.<pid>.<random>)
// and the file `state`, which names that directory and holds the run's position (the step, the
// batch sampler, the curve so far, the running train loss, the options the run was started with)
// and the optimizer's saved state. A save writes a new weights directory (see save_checkpoint),
// then replaces `state` as a whole (write_file_atomically), then removes everything else in the
// directory: a kill at any moment leaves a `state` naming complete weights. The directory is
// written only under the prefix's lock (PREFIX.lock).
#pragma once

#include <bit>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

#include "../common/check.hpp"
#include "../common/output_files.hpp"
#include "checkpoint.hpp"

namespace opt {

inline constexpr const char* resume_magic = "zo-finetune resume state 1\n";

// A double as the integer of its bits, so that it comes back exactly.
inline std::uint64_t double_bits(double x) {
  return std::bit_cast<std::uint64_t>(x);
}
inline double bits_double(std::uint64_t bits) {
  return std::bit_cast<double>(bits);
}

struct resume_state {
  nlohmann::json position;  // step, sampler, curve, ...; "weights" names the weights directory
  std::string optimizer;    // the optimizer's save()
};

// Writes the resume state into `dir` (created where missing): the weights first, then `state`
// naming them, then the older entries removed. The weights are saved in the store's element type.
template <class Store>
void save_resume_state(const std::filesystem::path& dir, const opt_config& config,
                       const Store& store, nlohmann::json position, const std::string& optimizer) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  zo_examples::require(!ec,
                       "cannot create the resume directory " + dir.string() + ": " + ec.message());
  const std::uint64_t step = position.at("step").get<std::uint64_t>();
  const fs::path weights =
      zo_examples::unique_sibling(dir / ("weights-" + std::to_string(step)), "save");
  save_checkpoint(weights, config, store);
  position["weights"] = weights.filename().string();
  position["optimizer_bytes"] = optimizer.size();
  zo_examples::write_file_atomically(
      dir / "state", std::string(resume_magic) + position.dump() + '\n' + optimizer);
  // Older weights and the temporaries of killed saves: nothing else writes here (the lock).
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "state" || name == weights.filename().string()) continue;
    fs::remove_all(entry.path(), ec);
    zo_examples::require(!ec, "cannot remove " + entry.path().string() + ": " + ec.message());
  }
}

// Reads the resume state of `dir`; nullopt where there is none (no `state` file). A damaged
// state is an error naming the file.
inline std::optional<resume_state> read_resume_state(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const fs::path path = dir / "state";
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const std::string bytes = zo_examples::read_file(path);
  const std::string magic = resume_magic;
  zo_examples::require(bytes.starts_with(magic),
                       path.string() + " is not a zo-finetune resume state");
  const auto end = bytes.find('\n', magic.size());
  zo_examples::require(end != std::string::npos, path.string() + " is truncated");
  resume_state state;
  try {
    state.position = nlohmann::json::parse(bytes.substr(magic.size(), end - magic.size()));
    state.optimizer = bytes.substr(end + 1);
    zo_examples::require(
        state.position.at("optimizer_bytes").get<std::size_t>() == state.optimizer.size(),
        "the optimizer state's length does not match");
    state.position.at("step").get<std::uint64_t>();
    state.position.at("weights").get<std::string>();
  } catch (const std::exception& e) {
    throw zo::invalid_argument("the resume state " + path.string() + " is damaged: " + e.what());
  }
  return state;
}

}  // namespace opt
