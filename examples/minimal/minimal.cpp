// SPDX-License-Identifier: Apache-2.0
// zo-minimal: a Hugging Face OPT checkpoint fine-tuned with MeZO, in one file.
//
//   zo-minimal finetune CHECKPOINT OUT [STEPS]   MeZO on a toy task; writes OUT as a checkpoint
//   zo-minimal logits CHECKPOINT TOKEN...        the logits at every position, one line each
//
// A checkpoint is a directory as transformers' save_pretrained writes it: config.json and
// model.safetensors. The model is OPT as opt-125m lays it out (pre-LayerNorm decoder layers,
// ReLU, the LM head tied to the token embedding); other variants are refused. The forward pass
// runs one sequence at a time and keeps nothing for a backward pass: MeZO needs only losses.
// examples/finetune/opt_model.hpp is the demo's fuller version of this model (batched, parallel,
// with a backward pass for LoHO and Adam); the tests check that the two give the same logits.
#include <Eigen/Core>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>
#include <zo/io/safetensors.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

namespace {

namespace fs = std::filesystem;
using matrix = zo::eigen_store<float>::matrix_type;  // row-major, as PyTorch stores tensors

struct opt_config {
  int vocab_size, max_positions, d_model, n_heads, n_layers, d_ffn;
};

opt_config read_config(const nlohmann::json& j) {
  auto field = [&](const char* key) { return j.at(key).get<int>(); };
  const opt_config config{field("vocab_size"),        field("max_position_embeddings"),
                          field("hidden_size"),       field("num_attention_heads"),
                          field("num_hidden_layers"), field("ffn_dim")};
  // An unsupported variant would otherwise load (its shapes agree) and compute another function.
  if (!j.value("do_layer_norm_before", true) || j.value("activation_function", "relu") != "relu" ||
      j.value("_remove_final_layer_norm", false) ||
      j.value("word_embed_proj_dim", config.d_model) != config.d_model)
    throw std::runtime_error(
        "config.json: not a pre-LayerNorm ReLU OPT model without "
        "projections (opt-125m, opt-1.3b and larger are)");
  if (config.d_model % config.n_heads != 0)
    throw std::runtime_error("config.json: hidden_size is not a multiple of num_attention_heads");
  return config;
}

// Every tensor with its Hugging Face name and shape: Linear weights are [out, in], and 1-D
// tensors (biases, LayerNorm parameters) are held as 1 × n.
std::vector<std::tuple<std::string, int, int>> tensor_shapes(const opt_config& c) {
  const int d = c.d_model;
  // OPT's learned positions are offset by 2: position p reads row p + 2.
  std::vector<std::tuple<std::string, int, int>> shapes = {
      {"model.decoder.embed_tokens.weight", c.vocab_size, d},
      {"model.decoder.embed_positions.weight", c.max_positions + 2, d}};
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string layer = "model.decoder.layers." + std::to_string(i) + ".";
    for (const char* projection : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      shapes.emplace_back(layer + "self_attn." + projection + ".weight", d, d);
      shapes.emplace_back(layer + "self_attn." + projection + ".bias", 1, d);
    }
    shapes.emplace_back(layer + "self_attn_layer_norm.weight", 1, d);
    shapes.emplace_back(layer + "self_attn_layer_norm.bias", 1, d);
    shapes.emplace_back(layer + "fc1.weight", c.d_ffn, d);
    shapes.emplace_back(layer + "fc1.bias", 1, c.d_ffn);
    shapes.emplace_back(layer + "fc2.weight", d, c.d_ffn);
    shapes.emplace_back(layer + "fc2.bias", 1, d);
    shapes.emplace_back(layer + "final_layer_norm.weight", 1, d);
    shapes.emplace_back(layer + "final_layer_norm.bias", 1, d);
  }
  shapes.emplace_back("model.decoder.final_layer_norm.weight", 1, d);
  shapes.emplace_back("model.decoder.final_layer_norm.bias", 1, d);
  return shapes;
}

matrix linear(const matrix& x, const matrix& weight, const matrix& bias) {
  matrix y = x * weight.transpose();
  y.rowwise() += bias.row(0);
  return y;
}

matrix layer_norm(const matrix& x, const matrix& weight, const matrix& bias) {
  const matrix centred = x.colwise() - x.rowwise().mean();
  const Eigen::ArrayXf inverse_std = (centred.array().square().rowwise().mean() + 1e-5f).rsqrt();
  return ((centred.array().colwise() * inverse_std).rowwise() * weight.row(0).array()).rowwise() +
         bias.row(0).array();
}

class opt_model {
 public:
  // Reads config.json and model.safetensors (F32, F16 or BF16 tensors, read as float).
  explicit opt_model(const fs::path& checkpoint) {
    std::ifstream in(checkpoint / "config.json");
    if (!in) throw std::runtime_error("cannot open " + (checkpoint / "config.json").string());
    config_json_ = nlohmann::json::parse(in);
    config_ = read_config(config_json_);
    for (const auto& [name, rows, cols] : tensor_shapes(config_))
      store_.add(name, rows, cols);
    const auto unread = zo::io::load_store(checkpoint / "model.safetensors", store_);
    for (const auto& name : unread) {
      // A real checkpoint's lm_head.weight is a copy of the token embedding.
      if (name != "lm_head.weight")
        throw std::runtime_error("tensor '" + name + "' is not in the model config.json describes");
    }
  }

  const opt_config& config() const { return config_; }
  // The tensors zo perturbs and updates in place.
  zo::eigen_store<float>& parameters() { return store_; }

  // Logits over the vocabulary at every position of `tokens`, one row per position.
  matrix logits(std::span<const int> tokens) const {
    const auto length = static_cast<Eigen::Index>(tokens.size());
    if (length == 0 || length > config_.max_positions)
      throw std::runtime_error("a sequence must have 1 to max_position_embeddings tokens");
    const int d = config_.d_model, head_dim = d / config_.n_heads;
    const matrix& embed_tokens = tensor("model.decoder.embed_tokens.weight");
    matrix x(length, d);
    for (Eigen::Index t = 0; t < length; ++t) {
      if (tokens[t] < 0 || tokens[t] >= config_.vocab_size)
        throw std::runtime_error("token " + std::to_string(tokens[t]) +
                                 " is not in the vocabulary");
      x.row(t) = embed_tokens.row(tokens[t]) +
                 tensor("model.decoder.embed_positions.weight").row(t + 2);  // OPT's offset
    }
    for (int i = 0; i < config_.n_layers; ++i) {
      const std::string layer = "model.decoder.layers." + std::to_string(i) + ".";
      auto weight = [&](const std::string& name) -> const matrix& { return tensor(layer + name); };
      auto project = [&](const matrix& input, const std::string& name) {
        return linear(input, weight(name + ".weight"), weight(name + ".bias"));
      };
      // Causal multi-head self-attention on the normalised input, added to the residual.
      const matrix h =
          layer_norm(x, weight("self_attn_layer_norm.weight"), weight("self_attn_layer_norm.bias"));
      // OPT scales the projected query, bias included.
      const matrix q = project(h, "self_attn.q_proj") * (1.0f / std::sqrt(float(head_dim)));
      const matrix k = project(h, "self_attn.k_proj"), v = project(h, "self_attn.v_proj");
      matrix context(length, d);
      for (int head = 0; head < config_.n_heads; ++head) {
        const Eigen::Index first = head * head_dim;
        matrix scores = q.middleCols(first, head_dim) * k.middleCols(first, head_dim).transpose();
        for (Eigen::Index t = 0; t < length; ++t) {  // position t attends to positions 0..t
          auto visible = scores.row(t).head(t + 1);
          visible = (visible.array() - visible.maxCoeff()).exp().matrix();
          visible /= visible.sum();
          scores.row(t).tail(length - t - 1).setZero();
        }
        context.middleCols(first, head_dim) = scores * v.middleCols(first, head_dim);
      }
      x += project(context, "self_attn.out_proj");
      // The ReLU feed-forward block, also on the normalised input and added to the residual.
      const matrix g =
          layer_norm(x, weight("final_layer_norm.weight"), weight("final_layer_norm.bias"));
      x += project(project(g, "fc1").cwiseMax(0.0f), "fc2");
    }
    const matrix out = layer_norm(x, tensor("model.decoder.final_layer_norm.weight"),
                                  tensor("model.decoder.final_layer_norm.bias"));
    return out * embed_tokens.transpose();  // the LM head is the token embedding
  }

  // Writes a checkpoint that transformers' OPTForCausalLM.from_pretrained reads. Plainly: a
  // crash part way leaves a partial directory (the demo's save_checkpoint is the careful one).
  void save(const fs::path& dir) const {
    fs::create_directories(dir);
    nlohmann::json config = config_json_;
    config["torch_dtype"] = "float32";  // whatever the input held, zo writes F32
    std::ofstream out(dir / "config.json");
    out << config.dump(2) << '\n';
    out.close();
    if (!out) throw std::runtime_error("cannot write " + (dir / "config.json").string());
    zo::io::save_store(dir / "model.safetensors", store_, {{"format", "pt"}});
  }

 private:
  const matrix& tensor(const std::string& name) const { return store_.matrix(*store_.find(name)); }

  nlohmann::json config_json_;
  opt_config config_{};
  zo::eigen_store<float> store_;
};

// The toy task: sequences that count up through the token ids from a random start (t, t + 1,
// t + 2, ...), the loss being the mean cross-entropy of each next token. Every token id, however
// the vocabulary spells it, makes an example, so the task works on any OPT checkpoint.
using sequences = std::vector<std::vector<int>>;

sequences counting_sequences(std::mt19937_64& engine, int count, int vocab_size, int length) {
  std::uniform_int_distribution<int> start(0, vocab_size - 1);
  sequences out(static_cast<std::size_t>(count));
  for (auto& tokens : out) {
    const int first = start(engine);
    for (int t = 0; t < length; ++t)
      tokens.push_back((first + t) % vocab_size);
  }
  return out;
}

double next_token_loss(const opt_model& model, const sequences& batch) {
  double total = 0;
  std::size_t predictions = 0;
  for (const auto& tokens : batch) {
    const matrix logits = model.logits(tokens);
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
      const auto row = logits.row(static_cast<Eigen::Index>(t)).cast<double>();
      const double max = row.maxCoeff();
      total += max + std::log((row.array() - max).exp().sum()) - row(tokens[t + 1]);
      ++predictions;
    }
  }
  return total / double(predictions);
}

int finetune(const fs::path& checkpoint, const fs::path& out, int steps) {
  opt_model model(checkpoint);
  const int vocab_size = model.config().vocab_size;
  const int length = std::min(16, model.config().max_positions);
  std::mt19937_64 engine(7);
  const sequences held_out = counting_sequences(engine, 64, vocab_size, length);
  const double before = next_token_loss(model, held_out);

  // MeZO: each step measures the loss at θ + εz and θ − εz for a random direction z, which zo
  // regenerates from a seed instead of storing, and moves θ along z by the measured slope.
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(1e-3), {.seed = 42});
  for (int step = 1; step <= steps; ++step) {
    const sequences batch = counting_sequences(engine, 16, vocab_size, length);
    const zo::step_report report =
        optimizer.step(model.parameters(), [&] { return next_token_loss(model, batch); });
    if (step % 50 == 0) std::printf("step %d: batch loss %.4f\n", step, report.loss);
  }
  const double after = next_token_loss(model, held_out);
  model.save(out);
  std::printf("held-out loss %.4f -> %.4f after %d MeZO steps; wrote %s\n", before, after, steps,
              out.c_str());
  return 0;
}

int whole_number(const std::string& text, const char* what) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < 0)
    throw std::runtime_error(std::string(what) + " must be a whole number, got '" + text + "'");
  return value;
}

int print_logits(const fs::path& checkpoint, std::span<char*> token_texts) {
  const opt_model model(checkpoint);
  std::vector<int> tokens;
  for (const char* text : token_texts)
    tokens.push_back(whole_number(text, "a token"));
  const matrix logits = model.logits(tokens);
  for (Eigen::Index t = 0; t < logits.rows(); ++t) {
    for (Eigen::Index v = 0; v < logits.cols(); ++v)
      std::printf(v == 0 ? "%.9g" : " %.9g", logits(t, v));
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  try {
    if (command == "finetune" && (argc == 4 || argc == 5))
      return finetune(argv[2], argv[3], argc == 5 ? whole_number(argv[4], "STEPS") : 300);
    if (command == "logits" && argc >= 4)
      return print_logits(argv[2], std::span<char*>(argv + 3, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zo-minimal: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: zo-minimal finetune CHECKPOINT OUT [STEPS]\n"
               "       zo-minimal logits CHECKPOINT TOKEN...\n");
  return 2;
}
