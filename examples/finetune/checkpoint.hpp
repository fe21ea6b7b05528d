// SPDX-License-Identifier: Apache-2.0
// Checkpoints in the layout of a Hugging Face OPT model directory: config.json (the fields of
// OPTConfig the model uses) and model.safetensors (the tensors under their Hugging Face names),
// so a directory written here opens with transformers' OPTForCausalLM and a real OPT checkpoint
// of the supported kind (pre-LayerNorm, no projection, ReLU: opt-125m and the 1.3B and larger
// models) opens here.
#pragma once

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include <zo/core/errors.hpp>
#include <zo/io/safetensors.hpp>

#include "../common/check.hpp"
#include "../common/output_files.hpp"
#include "opt_model.hpp"

namespace opt {

// torch_dtype names the tensors' dtype as transformers spells it: "float32", "bfloat16" or
// "float16".
inline nlohmann::json config_json(const opt_config& config,
                                  const std::string& torch_dtype = "float32") {
  auto id = [](const std::optional<int>& token) {
    return token ? nlohmann::json(*token) : nlohmann::json(nullptr);
  };
  return {{"model_type", "opt"},
          {"architectures", {"OPTForCausalLM"}},
          {"vocab_size", config.vocab_size},
          {"max_position_embeddings", config.max_positions},
          {"hidden_size", config.d_model},
          {"word_embed_proj_dim", config.d_model},
          {"num_attention_heads", config.n_heads},
          {"num_hidden_layers", config.n_layers},
          {"ffn_dim", config.d_ffn},
          {"do_layer_norm_before", true},
          {"activation_function", "relu"},
          {"enable_bias", true},
          {"layer_norm_elementwise_affine", true},
          {"tie_word_embeddings", true},
          {"_remove_final_layer_norm", false},
          {"bos_token_id", id(config.bos_token_id)},
          {"eos_token_id", id(config.eos_token_id)},
          {"pad_token_id", id(config.pad_token_id)},
          {"torch_dtype", torch_dtype}};
}

// Reads the fields the model uses and rejects the OPT variants it does not implement, naming the
// field, rather than loading weights into the wrong computation.
inline opt_config config_from_json(const nlohmann::json& j, const std::string& source) {
  auto fail = [&](const std::string& what) { throw zo::invalid_argument(source + ": " + what); };
  if (!j.is_object()) fail("not a JSON object");
  auto integer = [&](const char* key) {
    if (!j.contains(key)) fail(std::string("no \"") + key + "\"");
    const auto& v = j.at(key);
    if (!v.is_number_integer() || v.get<long long>() <= 0 || v.get<long long>() > (1 << 30))
      fail(std::string("\"") + key + "\" must be a positive integer, got " + v.dump());
    return v.get<int>();
  };
  auto expect = [&](const char* key, const nlohmann::json& wanted) {
    if (j.contains(key) && j.at(key) != wanted)
      fail(std::string("\"") + key + "\" is " + j.at(key).dump() + "; this model supports only " +
           wanted.dump());
  };
  if (j.contains("model_type")) expect("model_type", "opt");
  expect("do_layer_norm_before", true);
  expect("activation_function", "relu");
  expect("enable_bias", true);
  expect("layer_norm_elementwise_affine", true);
  expect("tie_word_embeddings", true);
  // True in OPT-350m's config: Hugging Face then builds no final LayerNorm, which this model
  // always applies.
  expect("_remove_final_layer_norm", false);
  opt_config c;
  c.vocab_size = integer("vocab_size");
  c.max_positions = integer("max_position_embeddings");
  c.d_model = integer("hidden_size");
  c.n_heads = integer("num_attention_heads");
  c.n_layers = integer("num_hidden_layers");
  c.d_ffn = integer("ffn_dim");
  // Absent, null or an id; checked against the vocabulary below.
  auto token_id = [&](const char* key) -> std::optional<int> {
    if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
    const auto& v = j.at(key);
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > (1 << 30))
      fail(std::string("\"") + key + "\" must be a token id or null, got " + v.dump());
    return v.get<int>();
  };
  c.bos_token_id = token_id("bos_token_id");
  c.eos_token_id = token_id("eos_token_id");
  c.pad_token_id = token_id("pad_token_id");
  if (j.contains("word_embed_proj_dim") && j.at("word_embed_proj_dim") != c.d_model)
    fail(
        "\"word_embed_proj_dim\" differs from \"hidden_size\" (OPT-350m's projections), which "
        "this model does not implement");
  if (const auto what = c.problem()) fail(*what);
  return c;
}

inline opt_config read_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  std::ifstream in(path);
  zo_examples::require(static_cast<bool>(in), "cannot open " + path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw zo::invalid_argument(path.string() + " is not valid JSON: " + e.what());
  }
  return config_from_json(j, path.string());
}

// The entries a directory save_checkpoint replaces may hold: a checkpoint's two files. Anything
// else (a tokenizer, notes) would be lost with the old directory, so such a directory is refused.
inline const std::vector<std::string>& checkpoint_files() {
  static const std::vector<std::string> names = {"config.json", "model.safetensors"};
  return names;
}

// Refuses, naming the reason, a `dir` save_checkpoint must not replace: something other than a
// directory, or a directory holding entries other than a checkpoint's files. An absent `dir` is
// fine. Callers check this before any work; save_checkpoint checks it again.
inline void check_checkpoint_target(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const fs::path target = zo_examples::resolved_output(dir);
  std::error_code ec;
  const auto status = fs::status(target, ec);
  if (!fs::exists(status)) return;
  zo_examples::require(
      fs::is_directory(status),
      dir.string() + " exists and is not a directory; a checkpoint is a directory");
  fs::directory_iterator entries(target, ec);
  if (ec == std::errc::no_such_file_or_directory) return;  // another save moved it meanwhile
  zo_examples::require(!ec, "cannot read the directory " + dir.string() + ": " + ec.message());
  for (; entries != fs::directory_iterator(); entries.increment(ec)) {
    if (ec) break;  // gone meanwhile (another save)
    const std::string name = entries->path().filename().string();
    const auto& known = checkpoint_files();
    zo_examples::require(std::find(known.begin(), known.end(), name) != known.end(),
                         dir.string() + " holds '" + name +
                             "', which is not part of a checkpoint; a save replaces the whole "
                             "directory, so it is refused (remove the file or choose another "
                             "directory)");
  }
}

// How many of `values` are NaN or infinite.
template <class T>
std::size_t count_nonfinite(std::span<const T> values) {
  return static_cast<std::size_t>(std::count_if(values.begin(), values.end(),
                                                [](T x) { return !std::isfinite(zo::widen(x)); }));
}

// The dtype a checkpoint of element type T is written in, as transformers' config names it.
template <class T>
std::string torch_dtype_name() {
  if constexpr (std::is_same_v<T, zo::bfloat16>) {
    return "bfloat16";
  } else if constexpr (std::is_same_v<T, zo::float16>) {
    return "float16";
  } else {
    return "float32";
  }
}

// Writes config.json and model.safetensors as a new directory `dir`, as a whole: both files go
// into a uniquely named temporary sibling (DIR.tmp.<pid>.<random>), each fsync'ed, the directory
// fsync'ed, then it is renamed into place. An existing `dir` (a checkpoint, see
// check_checkpoint_target) is exchanged with it in one rename (Linux's RENAME_EXCHANGE) and
// removed; where the file system cannot exchange, it is renamed aside (DIR.old.<pid>.<random>)
// first. The parent directory is fsync'ed. A failure removes the temporary directory and leaves
// the old checkpoint as it was; a kill leaves the old directory or the new one under `dir` (or,
// on a file system without the exchange, between the two renames, both under their temporary
// names). Concurrent saves use different temporaries; the last one to rename wins.
// The tensors are written in the store's element type: F32 from float, BF16 and F16 as they are.
template <class Store>
void save_checkpoint(const std::filesystem::path& dir, const opt_config& config, const Store& store,
                     const zo::io::metadata_map& metadata = {}) {
  namespace fs = std::filesystem;
  using T = typename Store::value_type;
  static_assert(zo::io::element_type<T>, "save_checkpoint writes float, bfloat16 or float16");
  // Only the model's tensors, in Hugging Face order, whatever else the store holds.
  std::vector<zo::io::tensor_to_write> tensors;
  for (const auto& spec : parameter_specs(config)) {
    const auto found = store.find(spec.name);
    zo_examples::require(found.has_value(),
                         "save_checkpoint: the store has no '" + spec.name + "'");
    const auto block = store.block(*found);
    zo_examples::require(block.rows() == static_cast<std::size_t>(spec.rows) &&
                             block.cols() == static_cast<std::size_t>(spec.cols),
                         "save_checkpoint: '" + spec.name + "' is " + std::to_string(block.rows()) +
                             "x" + std::to_string(block.cols()) + ", the config says " +
                             std::to_string(spec.rows) + "x" + std::to_string(spec.cols));
    zo::io::tensor_to_write tensor{.name = spec.name,
                                   .shape = zo::io::default_tensor_shape{}(block)};
    if constexpr (std::is_same_v<T, zo::bfloat16>) {
      tensor.bf16 = block.data();
    } else if constexpr (std::is_same_v<T, zo::float16>) {
      tensor.f16 = block.data();
    } else {
      tensor.data = block.data();
    }
    tensors.push_back(std::move(tensor));
  }
  // A diverged run's weights are not a checkpoint: refuse them, counting what is not finite.
  std::size_t nonfinite = 0;
  std::string first;
  for (const auto& t : tensors) {
    const auto block = store.block(*store.find(t.name));
    const std::size_t here = count_nonfinite(std::span<const T>(block.data(), block.size()));
    if (here > 0 && first.empty()) first = t.name;
    nonfinite += here;
  }
  zo_examples::require(nonfinite == 0, [&] {
    return "refusing to write the checkpoint " + dir.string() + ": " + std::to_string(nonfinite) +
           " weights are NaN or infinite (the first in '" + first + "'); the run diverged";
  });
  zo::io::metadata_map meta = metadata;
  meta.emplace("format", "pt");  // what transformers expects of a PyTorch checkpoint
  check_checkpoint_target(dir);

  const fs::path target = zo_examples::resolved_output(dir);
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  zo_examples::require(!ec, "cannot write the checkpoint " + dir.string() +
                                ": cannot create the directory " + parent.string() + ": " +
                                ec.message());
  const fs::path temporary = zo_examples::unique_sibling(target, "tmp");
  zo_examples::require(fs::create_directory(temporary, ec) && !ec,
                       "cannot write the checkpoint " + dir.string() + ": cannot create " +
                           temporary.string() + ": " + ec.message());
  fs::path replaced;  // the old checkpoint, renamed aside, once the new one is in place
  try {
    zo_examples::write_new_file(temporary / "config.json",
                                config_json(config, torch_dtype_name<T>()).dump(2) + '\n',
                                (dir / "config.json").string());
    zo::io::write_safetensors(temporary / "model.safetensors", tensors, meta);
    zo_examples::fsync_directory(temporary);
    // Into place: over an absent target, or swapped with the old one in one step (Linux's
    // renameat2 RENAME_EXCHANGE, so `dir` is never absent), or, on a file system without the
    // exchange, the old one renamed aside first (rename cannot replace a non-empty directory).
    // Another save may move things in between: a few attempts.
    for (int attempt = 0;; ++attempt) {
      if (::rename(temporary.c_str(), target.c_str()) == 0) break;
      const int error = errno;
      if ((error != ENOTEMPTY && error != EEXIST) || attempt == 4)
        throw std::runtime_error("cannot rename " + temporary.string() + " to " + target.string() +
                                 ": " + zo_examples::errno_text(error));
#ifdef RENAME_EXCHANGE
      if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) ==
          0) {
        replaced = temporary;  // now the old checkpoint
        break;
      }
      if (errno == ENOENT) continue;  // another save moved it
#endif
      const fs::path old = zo_examples::unique_sibling(target, "old");
      if (::rename(target.c_str(), old.c_str()) != 0) {
        if (errno == ENOENT) continue;  // another save moved it
        throw std::runtime_error("cannot move the old checkpoint " + target.string() +
                                 " aside: " + zo_examples::errno_text(errno));
      }
      if (::rename(temporary.c_str(), target.c_str()) != 0) {
        const int failed = errno;
        // Put the old one back; where another save's checkpoint took the place meanwhile, the
        // old one is superseded.
        if (::rename(old.c_str(), target.c_str()) != 0) fs::remove_all(old, ec);
        if (failed == ENOTEMPTY || failed == EEXIST) continue;
        throw std::runtime_error("cannot rename " + temporary.string() + " to " + target.string() +
                                 ": " + zo_examples::errno_text(failed));
      }
      replaced = old;
      break;
    }
    zo_examples::fsync_directory(parent);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(temporary, ignored);
    throw zo::invalid_argument("cannot write the checkpoint " + dir.string() + ": " + e.what());
  }
  if (!replaced.empty()) {
    fs::remove_all(replaced, ec);
    zo_examples::require(!ec, "wrote the checkpoint " + dir.string() +
                                  " but cannot remove the old one, " + replaced.string() + ": " +
                                  ec.message());
  }
}

struct loaded_checkpoint {
  opt_config config;
  // The one tensor a file may hold that the model does not read: a real OPT file's
  // lm_head.weight, tied to the token embedding. Any other unused tensor is an error.
  std::vector<std::string> ignored;
};

// Loads a checkpoint directory into an empty store (filled in parameter_specs order, with layer
// indices and decay flags). Every tensor is checked (present, shape, dtype, and used by the
// model) before any is read.
// Tensor names may carry OPTForCausalLM's "model." prefix or, as OPTModel writes them, not.
// Into a float store, F16, BF16 and F64 tensors are converted to float; into a sixteen_bit_store,
// tensors of its own dtype are copied bit for bit and others rounded to the nearest value (ties
// to even; F64 through float).
template <class Store>
loaded_checkpoint load_checkpoint(const std::filesystem::path& dir, Store& store) {
  using T = typename Store::value_type;
  zo_examples::require(store.size() == 0, "load_checkpoint needs an empty store");
  loaded_checkpoint result{read_config(dir), {}};
  const auto file = zo::io::safetensors_file::open(dir / "model.safetensors");
  const auto specs = parameter_specs(result.config);
  std::vector<std::string> names;
  for (const auto& spec : specs) {
    std::string name = spec.name;
    if (file.find(name) == nullptr && file.find(name.substr(6)) != nullptr) name.erase(0, 6);
    const auto* t = file.find(name);
    zo_examples::require(t != nullptr, "no tensor '" + spec.name + "' in " + file.source() +
                                           " (expected shape " + std::to_string(spec.rows) + "x" +
                                           std::to_string(spec.cols) + ")");
    file.require_block_shape(*t, static_cast<std::size_t>(spec.rows),
                             static_cast<std::size_t>(spec.cols));
    names.push_back(name);
  }
  // A tensor the config does not account for (a layer beyond num_hidden_layers, say) means the
  // config describes another model than the file: refuse rather than load part of it.
  for (const auto& t : file.tensors()) {
    if (std::find(names.begin(), names.end(), t.name) != names.end()) continue;
    zo_examples::require(t.name == "lm_head.weight", "tensor '" + t.name + "' in " + file.source() +
                                                         " is not part of the " +
                                                         std::to_string(result.config.n_layers) +
                                                         "-layer model config.json describes");
    result.ignored.push_back(t.name);
  }
  register_parameters(store, result.config, 0);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto block = store.block(*store.find(specs[i].name));
    file.read_block(names[i], block.rows(), block.cols(), std::span<T>(block.data(), block.size()));
    const std::size_t nonfinite = count_nonfinite(std::span<const T>(block.data(), block.size()));
    zo_examples::require(nonfinite == 0, [&] {
      return "tensor '" + names[i] + "' in " + file.source() + " holds " +
             std::to_string(nonfinite) + " NaN or infinite values (of " +
             std::to_string(block.size()) + "): the checkpoint is of a diverged run";
    });
  }
  return result;
}

}  // namespace opt
