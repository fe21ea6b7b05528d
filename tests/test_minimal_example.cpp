// SPDX-License-Identifier: Apache-2.0
// The minimal example (examples/minimal/minimal.cpp, the command zo-minimal) against the demo's
// model (examples/finetune/opt_model.hpp): on a checkpoint zo-finetune pretrained, zo-minimal's
// MeZO run lowers the held-out loss and writes a checkpoint the demo loads; and zo-minimal's
// logits equal the demo model's on that checkpoint, on the pretrained one and on one whose every
// tensor is random (so that a tensor read into the wrong place, such as a bias or a LayerNorm
// parameter the usual initialisation leaves at 0 or 1, shows).
#define BOOST_TEST_MODULE minimal example
#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <filesystem>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "finetune/checkpoint.hpp"

namespace {

namespace fs = std::filesystem;

// The commands under test, as CMake built them.
const std::string zo_minimal = ZO_MINIMAL_BINARY;
const std::string zo_finetune = ZO_FINETUNE_BINARY;

// Logits may differ by rounding alone: the two forwards sum in different orders.
constexpr float logit_tolerance = 2e-5f;

// Removed when the test program ends.
struct scratch {
  fs::path dir = fs::temp_directory_path() / ("zo_minimal_" + std::to_string(::getpid()));
  scratch() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() { fs::remove_all(dir); }
};

// Runs a command line and returns its standard output; the test fails unless it exits 0.
std::string run(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  BOOST_REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;)
    output.append(buffer, n);
  const int status = ::pclose(pipe);
  BOOST_TEST_INFO("command: " << command);
  BOOST_REQUIRE_EQUAL(status, 0);
  return output;
}

scratch& work() {
  static scratch s;
  return s;
}

// A model small enough to pretrain in seconds, with sequences up to 12 tokens.
const fs::path& pretrained_checkpoint() {
  static const fs::path dir = [] {
    const fs::path out = work().dir / "pretrained";
    run(zo_finetune + " pretrain --out " + out.string() +
        " --d-model 32 --heads 4 --layers 2 --ffn 64 --max-positions 12 --window 12 --steps 40 "
        "--batch 16 --lr 3e-3 --threads 2 > /dev/null");
    return out;
  }();
  return dir;
}

opt::matrix<float> minimal_logits(const fs::path& checkpoint, const std::vector<int>& tokens) {
  std::string command = zo_minimal + " logits " + checkpoint.string();
  for (int token : tokens) {
    command += ' ';
    command += std::to_string(token);
  }
  std::istringstream lines(run(command));
  std::vector<std::vector<float>> rows;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream values(line);
    rows.emplace_back();
    for (float value; values >> value;)
      rows.back().push_back(value);
  }
  BOOST_REQUIRE(!rows.empty());
  opt::matrix<float> logits(static_cast<Eigen::Index>(rows.size()),
                            static_cast<Eigen::Index>(rows.front().size()));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    BOOST_REQUIRE_EQUAL(rows[r].size(), rows.front().size());
    for (std::size_t c = 0; c < rows[r].size(); ++c)
      logits(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = rows[r][c];
  }
  return logits;
}

opt::matrix<float> demo_logits(const fs::path& checkpoint, const std::vector<int>& tokens) {
  zo::eigen_store<float> store;
  const auto loaded = opt::load_checkpoint(checkpoint, store);
  const opt::opt_model model(loaded.config, store);
  std::vector<int> every_position(tokens.size());
  for (std::size_t p = 0; p < tokens.size(); ++p)
    every_position[p] = static_cast<int>(p);
  return model.logits(tokens, every_position);
}

// A sequence of the model's full length, so that every position embedding is read.
std::vector<int> random_tokens(const fs::path& checkpoint, unsigned seed) {
  const opt::opt_config config = opt::read_config(checkpoint);
  std::mt19937 engine(seed);
  std::uniform_int_distribution<int> token(0, config.vocab_size - 1);
  std::vector<int> tokens(static_cast<std::size_t>(config.max_positions));
  for (int& t : tokens)
    t = token(engine);
  return tokens;
}

float largest_difference(const opt::matrix<float>& a, const opt::matrix<float>& b) {
  BOOST_REQUIRE_EQUAL(a.rows(), b.rows());
  BOOST_REQUIRE_EQUAL(a.cols(), b.cols());
  return (a - b).cwiseAbs().maxCoeff();
}

void check_same_logits(const fs::path& checkpoint) {
  for (unsigned seed : {1u, 2u}) {
    const auto tokens = random_tokens(checkpoint, seed);
    const auto minimal = minimal_logits(checkpoint, tokens);
    const auto demo = demo_logits(checkpoint, tokens);
    const float difference = largest_difference(minimal, demo);
    BOOST_TEST_MESSAGE(checkpoint.filename()
                       << ", sequence " << seed << ": logits differ by " << difference
                       << " at most, of up to " << demo.cwiseAbs().maxCoeff());
    BOOST_TEST_INFO("checkpoint " << checkpoint << ", sequence " << seed);
    BOOST_TEST(difference <= logit_tolerance);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(fine_tuning_lowers_the_held_out_loss_and_writes_a_checkpoint) {
  const fs::path pretrained = pretrained_checkpoint();
  const fs::path tuned = work().dir / "tuned";
  const std::string output =
      run(zo_minimal + " finetune " + pretrained.string() + " " + tuned.string() + " 200");
  std::smatch losses;
  BOOST_TEST_INFO("output: " << output);
  BOOST_REQUIRE(std::regex_search(
      output, losses, std::regex(R"(held-out loss ([0-9.]+) -> ([0-9.]+) after 200 MeZO steps)")));
  const double before = std::stod(losses[1]), after = std::stod(losses[2]);
  BOOST_TEST_INFO("held-out loss " << before << " -> " << after);
  BOOST_TEST(after < before - 0.05);

  // The written checkpoint is the model the demo reads, with the weights the run changed.
  zo::eigen_store<float> store;
  const auto loaded = opt::load_checkpoint(tuned, store);
  BOOST_TEST(opt::config_json(loaded.config) == opt::config_json(opt::read_config(pretrained)));
  const auto tokens = random_tokens(pretrained, 3);
  BOOST_TEST(largest_difference(demo_logits(pretrained, tokens), demo_logits(tuned, tokens)) >
             100 * logit_tolerance);
  check_same_logits(tuned);
}

BOOST_AUTO_TEST_CASE(logits_equal_the_demo_models_on_a_pretrained_checkpoint) {
  check_same_logits(pretrained_checkpoint());
}

BOOST_AUTO_TEST_CASE(logits_equal_the_demo_models_when_every_tensor_is_random) {
  const opt::opt_config config{.vocab_size = 29,
                               .max_positions = 9,
                               .d_model = 12,
                               .n_heads = 3,
                               .n_layers = 2,
                               .d_ffn = 20};
  zo::eigen_store<float> store;
  opt::register_parameters(store, config, 5);
  std::mt19937 engine(11);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (std::size_t b = 0; b < store.size(); ++b) {
    auto& m = store.matrix(b);
    for (Eigen::Index e = 0; e < m.size(); ++e)
      m.data()[e] = normal(engine);
  }
  const fs::path random = work().dir / "random";
  opt::save_checkpoint(random, config, store);
  check_same_logits(random);
}
