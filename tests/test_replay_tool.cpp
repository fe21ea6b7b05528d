// SPDX-License-Identifier: Apache-2.0
// zo-replay: a run's log and its base checkpoint give back the live run's weights bit for bit,
// through the library function and through the command.
#define BOOST_TEST_MODULE replay tool
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "replay/replay_run.hpp"
#include "support.hpp"

namespace {

namespace fs = std::filesystem;

fs::path scratch_dir() {
  const fs::path dir = fs::temp_directory_path() / ("zo_replay_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

// A small checkpoint with OPT-style names: matrices, biases and a layer norm.
void write_base(const fs::path& path, unsigned seed = 3) {
  std::srand(seed);
  zo::eigen_store<float> store;
  store.add("layers.0.fc1.weight", zo::eigen_store<float>::matrix_type::Random(12, 8));
  store.add("layers.0.fc1.bias", zo::eigen_store<float>::matrix_type::Random(1, 12));
  store.add("layers.0.final_layer_norm.weight", zo::eigen_store<float>::matrix_type::Ones(1, 8));
  store.add("layers.0.fc2.weight", zo::eigen_store<float>::matrix_type::Random(8, 12));
  zo::io::save_store(path, store);
}

double loss_of(const zo::eigen_store<float>& store) {
  double total = 0;
  for (std::size_t i = 0; i < store.size(); ++i)
    total += (store.matrix(i).array() - 0.1f).square().cast<double>().sum();
  return total;
}

// The live run: the checkpoint loaded as zo-replay loads it, the configuration in the log.
zo::eigen_store<float> run_live(const fs::path& base, const fs::path& log_path,
                                const zo_replay::run_config& config, std::uint64_t steps) {
  auto store = zo_replay::load_checkpoint(base);
  config.with_optimizer([&](auto& optimizer) {
    zo::io::trajectory_writer log(log_path,
                                  zo::io::run_header(store, config.options(), config.to_json()));
    optimizer.optimize(
        store, [&] { return loss_of(store); }, steps, log);
    log.finish();
    return 0;
  });
  return store;
}

}  // namespace

BOOST_AUTO_TEST_CASE(replaying_a_log_on_its_base_checkpoint_gives_the_live_weights) {
  const fs::path dir = scratch_dir(), base = dir / "base.safetensors";
  write_base(base);
  zo_replay::run_config mezo;
  mezo.seed = 5;
  mezo.learning_rate = 1e-3;
  mezo.weight_decay = 0.01;
  mezo.restore = "arithmetic";
  mezo.fused_steps = true;
  zo_replay::run_config lozo_m = mezo;
  lozo_m.optimizer = "lozo-m";
  lozo_m.interval = 4;
  lozo_m.restore = "exact";
  // A run of the first generator: zo-replay takes the generator from the log's header.
  zo_replay::run_config first_generator = mezo;
  first_generator.generator = zo::generator::philox4x32_10;
  for (const auto& config : {mezo, lozo_m, first_generator}) {
    BOOST_TEST_CONTEXT(config.to_json() << ' ' << zo::generator_name(config.generator)) {
      const auto live = run_live(base, dir / "run.zotraj", config, 30);
      BOOST_TEST(loss_of(live) < loss_of(zo_replay::load_checkpoint(base)));
      const auto result =
          zo_replay::replay_file(base, dir / "run.zotraj", dir / "replayed.safetensors");
      BOOST_TEST(result.steps == 30u);
      const auto replayed = zo_replay::load_checkpoint(dir / "replayed.safetensors");
      BOOST_TEST(zo_test::snapshot(replayed) == zo_test::snapshot(live));
#if defined(ZO_REPLAY_BINARY)
      const std::string command = std::string(ZO_REPLAY_BINARY) + " " + base.string() + " " +
                                  (dir / "run.zotraj").string() + " " +
                                  (dir / "cli.safetensors").string() + " > /dev/null";
      BOOST_REQUIRE(std::system(command.c_str()) == 0);
      BOOST_TEST(zo_test::snapshot(zo_replay::load_checkpoint(dir / "cli.safetensors")) ==
                 zo_test::snapshot(live));
#endif
    }
  }
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_log_without_a_run_configuration_is_refused_by_name) {
  const fs::path dir = scratch_dir();
  write_base(dir / "base.safetensors");
  { zo::io::trajectory_writer log(dir / "bad.zotraj", {0, 4, "not json"}); }
  BOOST_CHECK_EXCEPTION(
      zo_replay::replay_file(dir / "base.safetensors", dir / "bad.zotraj", dir / "out.safetensors"),
      zo::invalid_argument, [](const zo::invalid_argument& e) {
        return std::string(e.what()).find("run configuration") != std::string::npos;
      });
  zo_replay::run_config unknown;
  unknown.optimizer = "adamw";
  { zo::io::trajectory_writer log(dir / "unknown.zotraj", {0, 4, unknown.to_json()}); }
  BOOST_CHECK_EXCEPTION(zo_replay::replay_file(dir / "base.safetensors", dir / "unknown.zotraj",
                                               dir / "out.safetensors"),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("'adamw'") != std::string::npos;
                        });
  fs::remove_all(dir);
}

namespace {

std::string bytes_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool replay_error_contains(const fs::path& base, const fs::path& log, const fs::path& out,
                           const std::string& part) {
  try {
    zo_replay::replay_file(base, log, out);
  } catch (const std::exception& e) {
    BOOST_TEST_MESSAGE(e.what());
    return std::string(e.what()).find(part) != std::string::npos;
  }
  return false;
}

}  // namespace

BOOST_AUTO_TEST_CASE(an_output_that_would_overwrite_an_input_is_refused_before_any_work) {
  const fs::path dir = scratch_dir(), base = dir / "base.safetensors", log = dir / "run.zotraj";
  write_base(base);
  zo_replay::run_config config;
  config.learning_rate = 1e-3;
  run_live(base, log, config, 3);
  const std::string base_bytes = bytes_of(base), log_bytes = bytes_of(log);
  BOOST_TEST(replay_error_contains(base, log, base, "would overwrite the base checkpoint"));
  BOOST_TEST(replay_error_contains(base, log, dir / "." / "run.zotraj",
                                   "would overwrite the trajectory log"));
  fs::remove(dir / "alias.safetensors");
  fs::create_symlink(base, dir / "alias.safetensors");
  BOOST_TEST(replay_error_contains(base, log, dir / "alias.safetensors", "would overwrite"));
  BOOST_TEST((bytes_of(base) == base_bytes));
  BOOST_TEST((bytes_of(log) == log_bytes));
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(an_output_is_written_through_its_link_and_a_failed_write_is_an_error) {
  const fs::path dir = scratch_dir(), base = dir / "base.safetensors", log = dir / "run.zotraj";
  write_base(base);
  zo_replay::run_config config;
  config.learning_rate = 1e-3;
  const auto live = run_live(base, log, config, 3);
  // A link to /dev/full: the new file cannot replace a device, so it is refused by name (before,
  // the link was silently replaced by a file).
  fs::remove(dir / "full.safetensors");
  fs::create_symlink("/dev/full", dir / "full.safetensors");
  BOOST_TEST(replay_error_contains(base, log, dir / "full.safetensors", "full.safetensors"));
  BOOST_TEST(fs::is_character_file("/dev/full"));
  // A link to a regular file: the file it names is replaced, the link stays.
  fs::create_directories(dir / "elsewhere");
  fs::remove(dir / "link.safetensors");
  fs::create_symlink(dir / "elsewhere" / "out.safetensors", dir / "link.safetensors");
  zo_replay::replay_file(base, log, dir / "link.safetensors");
  BOOST_TEST(fs::is_symlink(dir / "link.safetensors"));
  BOOST_TEST(zo_test::snapshot(zo_replay::load_checkpoint(dir / "elsewhere" / "out.safetensors")) ==
             zo_test::snapshot(live));
  // A directory that cannot hold the output.
  BOOST_TEST(replay_error_contains(base, log, "/dev/full/out.safetensors", "/dev/full"));
#if defined(ZO_REPLAY_BINARY)
  // The command's report to a full standard output is a failure, not exit status 0.
  const std::string command = std::string(ZO_REPLAY_BINARY) + " " + base.string() + " " +
                              log.string() + " " + (dir / "cli.safetensors").string() +
                              " > /dev/full 2> /dev/null";
  BOOST_TEST(std::system(command.c_str()) != 0);
#endif
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_log_replayed_on_another_checkpoint_of_the_same_shapes_is_refused) {
  const fs::path dir = scratch_dir(), base = dir / "base.safetensors",
                 other = dir / "other.safetensors";
  write_base(base);
  write_base(other, 4);  // the same names and shapes, other values
  zo_replay::run_config config;
  config.seed = 7;
  run_live(base, dir / "run.zotraj", config, 5);
  const auto log = zo::io::read_trajectory(dir / "run.zotraj");
  BOOST_TEST(log.finished);
  BOOST_TEST(
      (log.header.base_fingerprint == zo::io::fingerprint(zo_replay::load_checkpoint(base))));
  BOOST_CHECK_EXCEPTION(zo_replay::replay_file(other, dir / "run.zotraj", dir / "out.safetensors"),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("fingerprint") != std::string::npos;
                        });
  BOOST_TEST(!fs::exists(dir / "out.safetensors"));
#if defined(ZO_REPLAY_BINARY)
  const std::string command = std::string(ZO_REPLAY_BINARY) + " " + other.string() + " " +
                              (dir / "run.zotraj").string() + " " +
                              (dir / "cli.safetensors").string() + " 2> /dev/null";
  BOOST_TEST(std::system(command.c_str()) != 0);
  BOOST_TEST(!fs::exists(dir / "cli.safetensors"));
#endif
  fs::remove_all(dir);
}
