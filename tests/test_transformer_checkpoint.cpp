// SPDX-License-Identifier: Apache-2.0
// Checkpoints of the demo's transformer (examples/finetune/checkpoint.hpp): a written and
// re-read checkpoint gives identical logits; a real OPT checkpoint's variations (no "model."
// prefix, F16 tensors, an lm_head.weight) load; a missing, misnamed or mis-shaped tensor, a
// truncated file and an unsupported config each give an error naming the problem.
#define BOOST_TEST_MODULE transformer_checkpoint
#include <sys/resource.h>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "finetune/checkpoint.hpp"
#include "finetune/reviews.hpp"

namespace {

namespace fs = std::filesystem;

const opt::opt_config small{
    .vocab_size = 13, .max_positions = 10, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ffn = 12};

// A scratch directory removed at the end of each test.
struct scratch {
  fs::path dir;
  scratch() {
    dir = fs::temp_directory_path() /
          ("zo_checkpoint_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() { fs::remove_all(dir); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

// Random values everywhere (OPT's initialisation leaves biases zero and norms one, which would
// hide a tensor read into the wrong place).
void randomise(zo::eigen_store<float>& store, unsigned seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (std::size_t b = 0; b < store.size(); ++b) {
    auto& m = store.matrix(b);
    for (Eigen::Index e = 0; e < m.size(); ++e)
      m.data()[e] = normal(engine);
  }
}

std::vector<opt::matrix<float>> some_logits(const zo::eigen_store<float>& store,
                                            const opt::opt_config& config) {
  const opt::opt_model model(config, store);
  std::vector<opt::matrix<float>> out;
  const std::vector<std::vector<int>> sequences = {{1, 5, 2, 12, 0, 7}, {3}, {9, 9, 4, 11, 2}};
  for (const auto& tokens : sequences) {
    std::vector<int> positions(tokens.size());
    for (std::size_t p = 0; p < positions.size(); ++p)
      positions[p] = static_cast<int>(p);
    out.push_back(model.logits(tokens, positions));
  }
  return out;
}

// Writes a checkpoint of a randomised model into dir and returns the model's store.
zo::eigen_store<float> save_random(const fs::path& dir, unsigned seed) {
  zo::eigen_store<float> store;
  opt::register_parameters(store, small, 0);
  randomise(store, seed);
  opt::save_checkpoint(dir, small, store);
  return store;
}

// The message of the zo::invalid_argument f throws.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const zo::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Rewrites a checkpoint's tensors through a function of (name, tensor values) that returns the
// tensors to write instead (to rename, reshape, drop or add).
struct tensor_entry {
  std::string name;
  zo::io::tensor_shape shape;
  std::vector<float> values;
};
template <class Edit>
void rewrite(const fs::path& dir, Edit&& edit) {
  const auto file = zo::io::safetensors_file::open(dir / "model.safetensors");
  std::vector<tensor_entry> entries;
  for (const auto& t : file.tensors())
    entries.push_back({t.name, t.shape, file.read_float(t.name)});
  edit(entries);
  std::vector<zo::io::tensor_to_write> out;
  for (const auto& e : entries)
    out.push_back({e.name, e.shape, e.values.data()});
  zo::io::write_safetensors(dir / "model.safetensors", out);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_written_and_reread_checkpoint_gives_identical_logits) {
  scratch s;
  const auto store = save_random(s.dir, 1);

  zo::eigen_store<float> loaded;
  const auto result = opt::load_checkpoint(s.dir, loaded);
  BOOST_TEST(result.ignored.empty());
  BOOST_TEST(result.config.d_model == small.d_model);
  BOOST_TEST(result.config.n_layers == small.n_layers);
  BOOST_TEST(result.config.max_positions == small.max_positions);
  const auto before = some_logits(store, small);
  const auto after = some_logits(loaded, result.config);
  BOOST_REQUIRE(before.size() == after.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    BOOST_REQUIRE(before[i].size() == after[i].size());
    BOOST_TEST(std::memcmp(before[i].data(), after[i].data(), sizeof(float) * before[i].size()) ==
               0);
  }
  // Layer indices and decay flags come back with the tensors.
  for (std::size_t b = 0; b < store.size(); ++b) {
    const auto block = store.block(b);
    const auto other = loaded.block(*loaded.find(block.name()));
    BOOST_TEST((block.layer() == other.layer()));
    BOOST_TEST(block.decay() == other.decay());
  }
  // Hugging Face's shapes: Linear weights [out, in], biases and norms 1-D, positions offset 2.
  const auto file = zo::io::safetensors_file::open(s.dir / "model.safetensors");
  const auto& positions = file.at("model.decoder.embed_positions.weight");
  BOOST_TEST((positions.shape == zo::io::tensor_shape{12, 8}));
  const auto& fc1 = file.at("model.decoder.layers.1.fc1.weight");
  BOOST_TEST((fc1.shape == zo::io::tensor_shape{12, 8}));
  const auto& bias = file.at("model.decoder.layers.0.self_attn.q_proj.bias");
  BOOST_TEST((bias.shape == zo::io::tensor_shape{8}));
}

// A bf16 model loads an F32 checkpoint rounded to the nearest (ties to even) and writes BF16,
// which reads back bit for bit, into a bf16 model, or exactly widened, into a float one whose
// logits are the bf16 model's; a non-finite bf16 weight is refused like a float one.
BOOST_AUTO_TEST_CASE(a_bf16_checkpoint_round_trips_bit_for_bit_and_f32_loads_rounded) {
  scratch s;
  const auto original = save_random(s.dir / "f32", 2);
  opt::sixteen_bit_store<zo::bfloat16> half;
  opt::load_checkpoint(s.dir / "f32", half);
  BOOST_REQUIRE(half.size() == original.size());
  for (std::size_t b = 0; b < original.size(); ++b) {
    const auto& m = original.matrix(*original.find(half.block(b).name()));
    for (Eigen::Index e = 0; e < m.size(); ++e)
      BOOST_TEST_REQUIRE(half.block(b).data()[e].bits ==
                         zo::round_nearest<zo::bfloat16>(m.data()[e]).bits);
    BOOST_TEST((half.block(b).layer() == original.block(b).layer()));
    BOOST_TEST(half.block(b).decay() == original.block(b).decay());
  }

  opt::save_checkpoint(s.dir / "bf16", small, half);
  const auto file = zo::io::safetensors_file::open(s.dir / "bf16" / "model.safetensors");
  for (const auto& t : file.tensors())
    BOOST_TEST(zo::io::dtype_name(t.dtype) == "BF16", t.name);
  auto data_bytes = [](const zo::io::safetensors_file& f) {
    std::size_t total = 0;
    for (const auto& t : f.tensors())
      total += t.end - t.begin;
    return total;
  };
  BOOST_TEST(2 * data_bytes(file) ==
             data_bytes(zo::io::safetensors_file::open(s.dir / "f32" / "model.safetensors")));
  std::ifstream config_file(s.dir / "bf16" / "config.json");
  BOOST_TEST(nlohmann::json::parse(config_file).at("torch_dtype") == "bfloat16");

  opt::sixteen_bit_store<zo::bfloat16> again;
  opt::load_checkpoint(s.dir / "bf16", again);
  zo::eigen_store<float> widened;
  opt::load_checkpoint(s.dir / "bf16", widened);
  for (std::size_t b = 0; b < half.size(); ++b) {
    for (std::size_t e = 0; e < half.block(b).size(); ++e) {
      BOOST_TEST_REQUIRE(again.block(b).data()[e].bits == half.block(b).data()[e].bits);
      BOOST_TEST_REQUIRE(widened.block(b).data()[e] == zo::widen(half.block(b).data()[e]));
    }
  }
  const opt::bf16_opt_model half_model(small, again);
  const auto expected = some_logits(widened, small);
  const std::vector<std::vector<int>> sequences = {{1, 5, 2, 12, 0, 7}, {3}, {9, 9, 4, 11, 2}};
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    std::vector<int> positions(sequences[i].size());
    for (std::size_t p = 0; p < positions.size(); ++p)
      positions[p] = static_cast<int>(p);
    const auto logits = half_model.logits(sequences[i], positions);
    BOOST_REQUIRE(logits.size() == expected[i].size());
    BOOST_TEST(std::memcmp(logits.data(), expected[i].data(), sizeof(float) * logits.size()) == 0);
  }

  again.block(*again.find("model.decoder.layers.1.fc1.bias")).data()[2].bits = 0x7FC0;  // NaN
  const std::string message = error_of([&] { opt::save_checkpoint(s.dir / "bad", small, again); });
  BOOST_TEST(contains(message, "1 weights are NaN or infinite"), message);
  BOOST_TEST(!fs::exists(s.dir / "bad"));
}

BOOST_AUTO_TEST_CASE(real_opt_checkpoint_variations_load) {
  scratch s;
  const auto store = save_random(s.dir, 2);
  // OPTModel's names (no "model." prefix), F16 storage and a tied lm_head.weight, as in real
  // OPT files.
  const auto file = zo::io::safetensors_file::open(s.dir / "model.safetensors");
  std::vector<std::string> names;
  std::vector<zo::io::tensor_shape> shapes;
  std::vector<std::vector<std::uint16_t>> halves;
  auto to_half = [](float f) {
    // Values here are well inside F16's normal range; round to nearest even.
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
    std::uint32_t mantissa = bits & 0x7fffffu;
    if (exponent <= 0) return static_cast<std::uint16_t>(sign);  // flush tiny values
    std::uint32_t half = sign | (static_cast<std::uint32_t>(exponent) << 10) | (mantissa >> 13);
    const std::uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(half);
  };
  for (const auto& t : file.tensors()) {
    names.push_back(t.name.substr(6));
    shapes.push_back(t.shape);
    std::vector<std::uint16_t> h;
    for (float f : file.read_float(t.name))
      h.push_back(to_half(f));
    halves.push_back(h);
  }
  names.push_back("lm_head.weight");
  shapes.push_back(file.at("model.decoder.embed_tokens.weight").shape);
  halves.push_back(halves.front());
  // A hand-written F16 safetensors file.
  nlohmann::json header;
  std::size_t offset = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::size_t bytes = halves[i].size() * 2;
    header[names[i]] = {
        {"dtype", "F16"}, {"shape", shapes[i]}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  std::ofstream out(s.dir / "model.safetensors", std::ios::binary | std::ios::trunc);
  const std::uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& h : halves)
    out.write(reinterpret_cast<const char*>(h.data()), static_cast<std::streamsize>(h.size() * 2));
  out.close();

  zo::eigen_store<float> loaded;
  const auto result = opt::load_checkpoint(s.dir, loaded);
  BOOST_TEST((result.ignored == std::vector<std::string>{"lm_head.weight"}));
  // F16 keeps 11 significant bits: the tensors agree to that precision, and the logits closely.
  for (std::size_t b = 0; b < store.size(); ++b) {
    const auto& a = store.matrix(b);
    const auto& c = loaded.matrix(*loaded.find(store.block(b).name()));
    BOOST_TEST((a - c).cwiseAbs().maxCoeff() <= 1e-3f * (1.0f + a.cwiseAbs().maxCoeff()));
  }
  const auto before = some_logits(store, small);
  const auto after = some_logits(loaded, result.config);
  for (std::size_t i = 0; i < before.size(); ++i)
    BOOST_TEST((before[i] - after[i]).cwiseAbs().maxCoeff() < 0.05f);
}

BOOST_AUTO_TEST_CASE(a_missing_or_misnamed_tensor_is_named) {
  scratch s;
  save_random(s.dir, 3);
  rewrite(s.dir, [](std::vector<tensor_entry>& entries) {
    for (auto& e : entries)
      if (e.name == "model.decoder.layers.1.fc2.bias") e.name = "model.decoder.layers.1.fc2.b";
  });
  zo::eigen_store<float> loaded;
  const std::string message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "no tensor 'model.decoder.layers.1.fc2.bias'"));
  BOOST_TEST(contains(message, "expected shape 1x8"));
  BOOST_TEST(loaded.size() == 0u);  // nothing was loaded
}

BOOST_AUTO_TEST_CASE(a_mis_shaped_tensor_is_named_with_both_shapes) {
  scratch s;
  save_random(s.dir, 4);
  rewrite(s.dir, [](std::vector<tensor_entry>& entries) {
    for (auto& e : entries) {
      if (e.name == "model.decoder.layers.0.fc1.weight") {
        e.shape = {8, 12};  // transposed: [in, out] instead of Hugging Face's [out, in]
      }
    }
  });
  zo::eigen_store<float> loaded;
  const std::string message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "model.decoder.layers.0.fc1.weight"));
  BOOST_TEST(contains(message, "[8, 12]"));
  BOOST_TEST(contains(message, "12"));
  BOOST_TEST(loaded.size() == 0u);
}

BOOST_AUTO_TEST_CASE(a_truncated_file_is_an_error) {
  scratch s;
  save_random(s.dir, 5);
  const fs::path path = s.dir / "model.safetensors";
  const auto full = fs::file_size(path);
  // Cut inside the data, inside the header and inside the length field.
  for (const std::uintmax_t keep : {full - 7, full / 2, std::uintmax_t{40}, std::uintmax_t{5}}) {
    save_random(s.dir, 5);
    fs::resize_file(path, keep);
    zo::eigen_store<float> loaded;
    const std::string message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
    BOOST_TEST_MESSAGE(keep << " bytes: " << message);
    BOOST_TEST(contains(message, "truncated"));
  }
}

BOOST_AUTO_TEST_CASE(unsupported_or_broken_configs_are_named) {
  scratch s;
  save_random(s.dir, 6);
  const fs::path path = s.dir / "config.json";
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = opt::config_json(small);
    if (value.is_null()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
    std::ofstream(path, std::ios::trunc) << j.dump();
    zo::eigen_store<float> loaded;
    return error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  };
  BOOST_TEST(contains(with("do_layer_norm_before", false), "do_layer_norm_before"));
  BOOST_TEST(contains(with("word_embed_proj_dim", 4), "word_embed_proj_dim"));
  BOOST_TEST(contains(with("activation_function", "gelu"), "activation_function"));
  BOOST_TEST(contains(with("hidden_size", nullptr), "hidden_size"));
  BOOST_TEST(contains(with("ffn_dim", -3), "ffn_dim"));
  const std::string heads = with("num_attention_heads", 3);
  BOOST_TEST_MESSAGE(heads);
  BOOST_TEST(contains(heads, "divisible"));
  BOOST_TEST(contains(heads, "config.json"));
  BOOST_TEST(heads.find("zo:") == 0u);
  BOOST_TEST(heads.find("zo:", 1) == std::string::npos);  // the prefix once, not twice
  // Hugging Face builds no final LayerNorm under this flag (OPT-350m); this model always has one.
  BOOST_TEST(contains(with("_remove_final_layer_norm", true), "_remove_final_layer_norm"));
  BOOST_TEST(contains(with("bos_token_id", 13), "bos_token_id"));  // vocab_size is 13
  BOOST_TEST(contains(with("pad_token_id", "<pad>"), "pad_token_id"));
  // A config whose sizes disagree with the tensors: the tensor is named.
  BOOST_TEST(contains(with("ffn_dim", 16), "fc1.weight"));
  std::ofstream(path, std::ios::trunc) << "{ not json";
  zo::eigen_store<float> loaded;
  BOOST_TEST(contains(error_of([&] { opt::load_checkpoint(s.dir, loaded); }), "not valid JSON"));
}

BOOST_AUTO_TEST_CASE(the_review_language_tokenizes_and_its_tasks_are_well_formed) {
  const auto tokens = reviews::tokenize("<bos> review : the soup was great . it was");
  BOOST_TEST(reviews::detokenize(tokens) == "<bos> review : the soup was great . it was");
  BOOST_TEST(error_of([] { reviews::tokenize("the soup was delicious"); }).find("delicious") !=
             std::string::npos);
  const auto task = reviews::sentiment_examples(1, 200);
  int positive = 0;
  for (const auto& ex : task) {
    BOOST_REQUIRE(ex.targets.size() == 1u);
    BOOST_TEST(ex.targets[0].position == static_cast<int>(ex.tokens.size()) - 1);
    const int label = ex.targets[0].token;
    BOOST_TEST((label == reviews::label_tokens()[0] || label == reviews::label_tokens()[1]));
    positive += label == reviews::label_tokens()[1];
    // The label words never appear in the task's reviews.
    for (std::size_t t = 0; t + 1 < ex.tokens.size(); ++t) {
      BOOST_TEST(ex.tokens[t] != reviews::label_tokens()[0]);
      BOOST_TEST(ex.tokens[t] != reviews::label_tokens()[1]);
    }
  }
  BOOST_TEST(positive == 100);
  // Same seed, same data; another seed, other data.
  auto texts = [](std::uint64_t seed) {
    std::vector<std::vector<int>> out;
    for (const auto& ex : reviews::sentiment_examples(seed, 50))
      out.push_back(ex.tokens);
    return out;
  };
  BOOST_TEST((texts(1) == texts(1)));
  BOOST_TEST((texts(1) != texts(2)));
  const auto windows = reviews::language_modelling_windows(2, 10, 16);
  BOOST_TEST(windows.size() == 10u);
  for (const auto& w : windows) {
    BOOST_TEST(w.tokens.size() == 16u);
    BOOST_TEST(w.targets.size() == 15u);
    BOOST_TEST(w.targets[3].token == w.tokens[4]);
  }
}

BOOST_AUTO_TEST_CASE(saving_a_store_that_does_not_match_the_config_names_the_tensor) {
  scratch s;
  zo::eigen_store<float> store;
  opt::register_parameters(store, small, 0);
  opt::opt_config wider = small;
  wider.d_ffn = 16;
  const std::string message = error_of([&] { opt::save_checkpoint(s.dir, wider, store); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(
      contains(message, "'model.decoder.layers.0.fc1.weight' is 12x8, the config says 16x8"));
  BOOST_TEST(!fs::exists(s.dir / "model.safetensors"));
}

// A diverged run's weights: saving refuses them (nothing written, the old checkpoint kept) with
// the count and the first tensor; loading a file that holds them names the tensor.
BOOST_AUTO_TEST_CASE(non_finite_weights_are_refused_on_save_and_on_load) {
  scratch s;
  const auto store = save_random(s.dir, 4);
  const auto before = zo::io::safetensors_file::open(s.dir / "model.safetensors")
                          .read_float("model.decoder.layers.1.fc2.weight");
  zo::eigen_store<float> bad;
  opt::register_parameters(bad, small, 0);
  randomise(bad, 5);
  const auto fc2 = *bad.find("model.decoder.layers.1.fc2.weight");
  bad.matrix(fc2).data()[3] = std::numeric_limits<float>::quiet_NaN();
  bad.matrix(fc2).data()[7] = std::numeric_limits<float>::infinity();
  bad.matrix(*bad.find("model.decoder.final_layer_norm.bias")).data()[0] =
      -std::numeric_limits<float>::infinity();
  const std::string message = error_of([&] { opt::save_checkpoint(s.dir, small, bad); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "3 weights are NaN or infinite"));
  BOOST_TEST(contains(message, "'model.decoder.layers.1.fc2.weight'"));
  BOOST_TEST(zo::io::safetensors_file::open(s.dir / "model.safetensors")
                 .read_float("model.decoder.layers.1.fc2.weight") == before);
  // A file written by other means, with one NaN in one tensor.
  rewrite(s.dir, [](std::vector<tensor_entry>& entries) {
    for (auto& e : entries) {
      if (e.name == "model.decoder.layers.0.self_attn.q_proj.bias")
        e.values[1] = std::numeric_limits<float>::quiet_NaN();
    }
  });
  zo::eigen_store<float> loaded;
  const std::string load_message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  BOOST_TEST_MESSAGE(load_message);
  BOOST_TEST(contains(load_message, "tensor 'model.decoder.layers.0.self_attn.q_proj.bias'"));
  BOOST_TEST(contains(load_message, "holds 1 NaN or infinite values"));
}

BOOST_AUTO_TEST_CASE(a_tensor_the_config_does_not_account_for_is_an_error_naming_it) {
  // A config of fewer layers than the file would load a shortened model.
  scratch s;
  save_random(s.dir, 7);
  nlohmann::json j = opt::config_json(small);
  j["num_hidden_layers"] = 1;
  std::ofstream(s.dir / "config.json", std::ios::trunc) << j.dump();
  zo::eigen_store<float> loaded;
  std::string message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "'model.decoder.layers.1."));
  BOOST_TEST(contains(message, "1-layer"));
  BOOST_TEST(loaded.size() == 0u);

  // A tensor of no OPT layer at all.
  save_random(s.dir, 7);
  rewrite(s.dir, [](std::vector<tensor_entry>& entries) {
    entries.push_back({"model.decoder.extra.weight", {2}, {1.0f, 2.0f}});
  });
  message = error_of([&] { opt::load_checkpoint(s.dir, loaded); });
  BOOST_TEST(contains(message, "'model.decoder.extra.weight'"));
  BOOST_TEST(loaded.size() == 0u);
}

BOOST_AUTO_TEST_CASE(config_json_names_the_special_tokens_of_the_vocabulary) {
  // Hugging Face assumes OPT's ids (bos = eos = 2, pad = 1) where config.json is silent; in the
  // review language those are "," and ".", so the ids are written: the real ones, or null.
  scratch s;
  const nlohmann::json none = opt::config_json(small);
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    BOOST_REQUIRE(none.contains(key));
    BOOST_TEST(none.at(key).is_null());
  }
  opt::opt_config with_bos = small;
  with_bos.bos_token_id = 0;
  zo::eigen_store<float> store;
  opt::register_parameters(store, with_bos, 0);
  opt::save_checkpoint(s.dir, with_bos, store);
  nlohmann::json written;
  std::ifstream(s.dir / "config.json") >> written;
  BOOST_TEST(written.at("bos_token_id") == 0);
  BOOST_TEST(written.at("eos_token_id").is_null());
  BOOST_TEST(written.at("pad_token_id").is_null());
  BOOST_TEST(written.at("_remove_final_layer_norm") == false);
  const opt::opt_config read = opt::read_config(s.dir);
  BOOST_TEST((read.bos_token_id == std::optional<int>(0)));
  BOOST_TEST(!read.eos_token_id.has_value());
  BOOST_TEST(!read.pad_token_id.has_value());
  // A real OPT config's ids are read as they are.
  written["bos_token_id"] = 2;
  written["eos_token_id"] = 2;
  written["pad_token_id"] = 1;
  const opt::opt_config real = opt::config_from_json(written, "real");
  BOOST_TEST((real.bos_token_id == std::optional<int>(2)));
  BOOST_TEST((real.pad_token_id == std::optional<int>(1)));
  // Why the ids must be written: Hugging Face's defaults are words of the demo's vocabulary.
  BOOST_TEST(reviews::token("<bos>") == 0);
  BOOST_TEST(reviews::token(".") == 1);
  BOOST_TEST(reviews::token(",") == 2);
}

namespace {

// The entries of a directory, by name.
std::vector<std::string> entries_of(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string bytes_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs f with writes to regular files limited to `bytes` (RLIMIT_FSIZE; SIGXFSZ ignored, so a
// write past it fails with EFBIG, as on a full disk).
template <class F>
void with_file_size_limit(rlim_t bytes, F&& f) {
  rlimit old{};
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = old;
  limited.rlim_cur = bytes;
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
  try {
    f();
  } catch (...) {
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, handler);
    throw;
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, handler);
}

const opt::opt_config one_layer{
    .vocab_size = 13, .max_positions = 10, .d_model = 4, .n_heads = 1, .n_layers = 1, .d_ffn = 6};

}  // namespace

BOOST_AUTO_TEST_CASE(a_checkpoint_of_another_shape_replaces_the_directory_as_a_whole) {
  scratch s;
  const fs::path ck = s.dir / "ck";
  save_random(ck, 1);
  zo::eigen_store<float> other;
  opt::register_parameters(other, one_layer, 0);
  randomise(other, 2);
  opt::save_checkpoint(ck, one_layer, other);
  zo::eigen_store<float> loaded;
  const auto result = opt::load_checkpoint(ck, loaded);
  BOOST_TEST(result.config.n_layers == 1);
  BOOST_TEST(some_logits(loaded, one_layer) == some_logits(other, one_layer));
  // No temporary or set-aside directory is left next to it.
  BOOST_TEST(entries_of(s.dir) == std::vector<std::string>{"ck"});
  BOOST_TEST((entries_of(ck) == std::vector<std::string>{"config.json", "model.safetensors"}));
}

BOOST_AUTO_TEST_CASE(a_failed_save_leaves_the_old_checkpoint_and_no_temporary) {
  scratch s;
  const fs::path ck = s.dir / "ck";
  save_random(ck, 1);
  const std::string config = bytes_of(ck / "config.json"),
                    weights = bytes_of(ck / "model.safetensors");
  zo::eigen_store<float> other;
  opt::register_parameters(other, one_layer, 0);
  // 1 KiB: config.json fits, model.safetensors does not, so the save fails half way.
  std::string message;
  with_file_size_limit(
      1024, [&] { message = error_of([&] { opt::save_checkpoint(ck, one_layer, other); }); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "cannot write the checkpoint " + ck.string()));
  BOOST_TEST((bytes_of(ck / "config.json") == config));
  BOOST_TEST((bytes_of(ck / "model.safetensors") == weights));
  BOOST_TEST(entries_of(s.dir) == std::vector<std::string>{"ck"});
  BOOST_TEST((entries_of(ck) == std::vector<std::string>{"config.json", "model.safetensors"}));
}

BOOST_AUTO_TEST_CASE(a_save_never_leaves_new_weights_with_the_old_config) {
  // Before, the weights were renamed into place first and config.json (through the fixed name
  // config.json.tmp) second, so a failure between them (here the temporary name taken by a
  // directory) left the new weights under the old config. A directory holding anything but a
  // checkpoint's two files is now refused as a whole, before anything is written.
  scratch s;
  const fs::path ck = s.dir / "ck";
  const auto old = save_random(ck, 1);
  fs::create_directory(ck / "config.json.tmp");
  zo::eigen_store<float> other;
  opt::register_parameters(other, one_layer, 0);
  const std::string message = error_of([&] { opt::save_checkpoint(ck, one_layer, other); });
  BOOST_TEST_MESSAGE(message);
  BOOST_TEST(contains(message, "'config.json.tmp'"));
  zo::eigen_store<float> loaded;
  BOOST_REQUIRE(error_of([&] { opt::load_checkpoint(ck, loaded); }) == "(no error)");
  BOOST_TEST(some_logits(loaded, small) == some_logits(old, small));
}

BOOST_AUTO_TEST_CASE(concurrent_saves_leave_one_whole_checkpoint) {
  scratch s;
  const fs::path ck = s.dir / "ck";
  zo::eigen_store<float> a, b;
  opt::register_parameters(a, small, 0);
  opt::register_parameters(b, one_layer, 0);
  std::string errors[2];
  {
    auto save = [&](const opt::opt_config& config, const zo::eigen_store<float>& store,
                    std::string& error) {
      for (int i = 0; i < 20 && error.empty(); ++i) {
        try {
          opt::save_checkpoint(ck, config, store);
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
    };
    std::thread first(save, std::cref(small), std::cref(a), std::ref(errors[0]));
    std::thread second(save, std::cref(one_layer), std::cref(b), std::ref(errors[1]));
    first.join();
    second.join();
  }
  BOOST_TEST(errors[0] == "");
  BOOST_TEST(errors[1] == "");
  zo::eigen_store<float> loaded;
  BOOST_TEST(error_of([&] { opt::load_checkpoint(ck, loaded); }) == "(no error)");
  BOOST_TEST(entries_of(s.dir) == std::vector<std::string>{"ck"});
}
