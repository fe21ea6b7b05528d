// SPDX-License-Identifier: Apache-2.0
// Recorded outputs: every optimizer, mode and element type run for a few steps on the shared test
// problems, and fingerprints of what came out (the parameters, the step reports, the saved state
// and the trajectory log, byte for byte) compared with tests/recorded/outputs.txt. A change to
// the library's internals must reproduce them bit for bit; a change that is meant to alter an
// output re-records it (`test_recorded -- --record`) and says why in its commit.
#define BOOST_TEST_MODULE recorded
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>
#include <zo/io/trajectory.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

namespace fs = std::filesystem;
using zo_test::chain;

// FNV-1a, 64 bits: enough to tell two outputs apart, short enough to read in a diff.
struct fingerprint {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  }
  template <class T>
  void add_value(const T& v) {
    add(&v, sizeof v);
  }
  std::string hex() const {
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
    return out;
  }
};

template <class Store>
std::string parameters_of(const Store& store) {
  fingerprint f;
  for (const auto v : zo_test::snapshot(store))
    f.add_value(v);
  return f.hex();
}

// Folds each step's report into a fingerprint: status, loss, rate, gradients, evaluations, roles.
struct report_recorder {
  fingerprint* f;
  void after_step(const zo::step_report& r) {
    f->add_value(r.step);
    f->add_value(static_cast<int>(r.status));
    f->add_value(r.loss);
    f->add_value(r.learning_rate);
    f->add_value(r.evaluations);
    for (const double g : r.projected_gradients)
      f->add_value(g);
    for (const auto role : r.roles)
      f->add_value(role);
  }
};

std::string file_of(const fs::path& path) {
  fingerprint f;
  const auto bytes = zo::io::detail::read_file(path);
  f.add(bytes.data(), bytes.size());
  return f.hex();
}

template <class Optimizer>
std::string state_of(const Optimizer& optimizer) {
  std::ostringstream out(std::ios::binary);
  optimizer.save(out);
  const std::string bytes = out.str();
  fingerprint f;
  f.add(bytes.data(), bytes.size());
  return f.hex();
}

using outputs = std::map<std::string, std::string>;

// A loss that reports NaN at one call, so the skipped-step path is part of the record.
template <class Loss>
struct nan_at {
  Loss loss;
  int bad_call;
  int calls = 0;
  double operator()() {
    const double value = loss();
    return ++calls == bad_call ? std::numeric_limits<double>::quiet_NaN() : value;
  }
};

constexpr std::uint64_t steps = 9;

// A zeroth-order optimizer on the double chain (a NaN at the 7th evaluation) and on a float
// least-squares problem.
template <class Make>
void record_zo(outputs& out, const std::string& name, Make&& make) {
  {
    const fs::path log_path = fs::temp_directory_path() / ("zo_recorded_" + name + ".zotraj");
    chain model(3, 5, 16, 7);
    auto optimizer = make();
    fingerprint reports;
    {
      zo::io::trajectory_writer log(log_path,
                                    zo::io::run_header(model.store, optimizer.options(), name));
      nan_at<std::function<double()>> loss{[&] { return model.loss(); }, 7};
      optimizer.optimize(model.store, loss, steps, log, report_recorder{&reports});
      log.finish();
    }
    out[name + ".double.parameters"] = parameters_of(model.store);
    out[name + ".double.reports"] = reports.hex();
    out[name + ".double.state"] = state_of(optimizer);
    out[name + ".double.log"] = file_of(log_path);
    fs::remove(log_path);
  }
  {
    auto [a, b] = zo_test::random_problem(50, 6 * 4 + 4, 3);
    std::vector<float> weight(24), bias(4);
    for (std::size_t e = 0; e < weight.size(); ++e)
      weight[e] = 0.05f * static_cast<float>(e % 5) - 0.1f;
    for (std::size_t e = 0; e < bias.size(); ++e)
      bias[e] = 0.01f * static_cast<float>(e);
    zo::view_store<float> store;
    store.add("weight", std::span<float>(weight), 6, 4, {.layer = 0});
    store.add("bias", std::span<float>(bias), {.layer = 1, .decay = false});
    zo_test::least_squares<zo::view_store<float>> loss{&store, a, b};
    auto optimizer = make();
    fingerprint reports;
    optimizer.optimize(store, loss, steps, report_recorder{&reports});
    out[name + ".float.parameters"] = parameters_of(store);
    out[name + ".float.reports"] = reports.hex();
    out[name + ".float.state"] = state_of(optimizer);
  }
}

// A hybrid on the chain; its objective's zeroth-order loss is NaN at the 11th call.
template <class Make>
void record_hybrid(outputs& out, const std::string& name, Make&& make) {
  chain model(3, 5, 16, 7);
  auto optimizer = make();
  struct objective {
    chain* model;
    int calls = 0;
    double loss() {
      const double value = model->loss();
      return ++calls == 11 ? std::numeric_limits<double>::quiet_NaN() : value;
    }
    double loss_and_gradients(zo::gradient_view<double>& g) { return model->loss_and_gradients(g); }
  } f{&model};
  fingerprint reports;
  report_recorder recorder{&reports};
  for (std::uint64_t k = 0; k < steps; ++k) {
    optimizer.step(model.store, f, recorder);
    reports.add_value(optimizer.first_order_loss());
    reports.add_value(optimizer.gradient_norm());
  }
  out[name + ".parameters"] = parameters_of(model.store);
  out[name + ".reports"] = reports.hex();
  out[name + ".state"] = state_of(optimizer);
}

// Every run with the given generator. Those of philox4x32-10, the generator the outputs were
// first recorded with, keep their first names; the others' names start with the generator's.
void record_all(outputs& out, zo::generator generator) {
  using zo::restore_mode;
  const auto options = [generator](restore_mode restore, bool fused) {
    return zo::zo_options{
        .seed = 11, .generator = generator, .restore = restore, .fused_steps = fused};
  };
  const zo::zo_options hybrid_options{.seed = 5, .generator = generator};
  const std::string prefix = generator == zo::generator::philox4x32_10
                                 ? std::string()
                                 : std::string(zo::generator_name(generator)) + ".";
  for (const auto restore : {restore_mode::exact, restore_mode::arithmetic}) {
    for (const bool fused : {false, true}) {
      const std::string mode =
          std::string(restore == restore_mode::exact ? "exact" : "arithmetic") +
          (fused ? ".fused" : "");
      record_zo(out, prefix + "mezo." + mode, [&] {
        return zo::mezo(zo::central_difference(1e-3), zo::sgd<>(2e-3, 0.01),
                        options(restore, fused));
      });
      record_zo(out, prefix + "spsa." + mode, [&] {
        return zo::spsa(zo::central_difference(1e-3), zo::sgd<>(1e-3), options(restore, fused));
      });
      record_zo(out, prefix + "one_sided." + mode, [&] {
        return zo::zo_optimizer<zo::gaussian_perturbation, zo::one_sided, zo::sgd<>>(
            zo::one_sided(1e-3), zo::sgd<>(1e-3), options(restore, fused));
      });
      record_zo(out, prefix + "q3." + mode, [&] {
        return zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>>(
            zo::q_sample<>(3), zo::sgd<>(2e-3), options(restore, fused));
      });
      record_zo(out, prefix + "q2_one_sided." + mode, [&] {
        using optimizer =
            zo::zo_optimizer<zo::rademacher_perturbation, zo::q_sample<zo::one_sided>, zo::sgd<>>;
        return optimizer(zo::q_sample<zo::one_sided>(2, zo::one_sided(1e-3)), zo::sgd<>(1e-3),
                         options(restore, fused));
      });
      record_zo(out, prefix + "lozo." + mode, [&] {
        return zo::lozo(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
                        zo::sgd<>(2e-3, 0.01), {}, options(restore, fused));
      });
      record_zo(out, prefix + "lozo_m." + mode, [&] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 3, true), zo::central_difference(1e-3),
                          zo::low_rank_momentum<>(2e-3, 0.8, 0.01), {}, options(restore, fused));
      });
      record_zo(out, prefix + "lozo_m_interval1_q2." + mode, [&] {
        using optimizer =
            zo::zo_optimizer<zo::low_rank_perturbation, zo::q_sample<>, zo::low_rank_momentum<>>;
        return optimizer(zo::low_rank_perturbation(1, 1), zo::q_sample<>(2),
                         zo::low_rank_momentum<>(1e-3), {}, options(restore, fused));
      });
      record_zo(out, prefix + "mezo_cosine_round_robin." + mode, [&] {
        using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference,
                                           zo::sgd<zo::cosine_schedule>, zo::round_robin_layers>;
        return optimizer({}, zo::central_difference(1e-3),
                         zo::sgd<zo::cosine_schedule>(zo::cosine_schedule(3e-3, 6), 0.05),
                         zo::round_robin_layers(2), options(restore, fused));
      });
    }
  }
  record_hybrid(out, prefix + "loho.adam", [&] {
    return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(2e-3), hybrid_options),
                    zo::adam<>(1e-2, 0.9, 0.999, 1e-4, 0.01), zo::deepest_layers(1));
  });
  record_hybrid(out, prefix + "hybrid.sgd_momentum.round_robin", [&] {
    using zo_part = zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<>>;
    return zo::hybrid<zo_part, zo::fo_sgd<>, zo::round_robin_layers>(
        zo_part(zo::central_difference(1e-3), zo::sgd<>(2e-3),
                {.seed = 5, .generator = generator, .restore = zo::restore_mode::arithmetic}),
        zo::fo_sgd<>(1e-2, 0.9, 0.01),
        zo::round_robin_layers(1, zo::block_role::first_order, zo::block_role::zeroth_order),
        {.clip_norm = 0.5});
  });
  record_hybrid(out, prefix + "hybrid.intra_layer_mask", [&] {
    using selector = zo::intra_layer_mask<zo::deepest_layers>;
    return zo::hybrid<zo::mezo, zo::adam<>, selector>(
        zo::mezo(zo::central_difference(1e-3), zo::sgd<>(2e-3), hybrid_options), zo::adam<>(1e-2),
        selector(zo::deepest_layers(2), 0.3, 9));
  });
  record_hybrid(out, prefix + "hybrid.lozo_m", [&] {
    return zo::hybrid<zo::lozo_m, zo::adam<>, zo::deepest_layers>(
        zo::lozo_m(zo::low_rank_perturbation(2, 2), zo::central_difference(1e-3),
                   zo::low_rank_momentum<>(2e-3), {}, hybrid_options),
        zo::adam<>(1e-2), zo::deepest_layers(1));
  });
}

outputs record_all() {
  outputs out;
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8})
    record_all(out, generator);
  return out;
}

std::string recorded_path() {
  return ZO_RECORDED_OUTPUTS;
}

bool asked_to_record() {
  const auto& args = boost::unit_test::framework::master_test_suite().argv;
  const int argc = boost::unit_test::framework::master_test_suite().argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string(args[i]) == "--record") return true;
  }
  return false;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_optimizer_reproduces_its_recorded_outputs) {
  const outputs now = record_all();
  if (asked_to_record()) {
    std::ofstream file(recorded_path());
    file << "# Written by `test_recorded -- --record`: fingerprints (FNV-1a 64) of each "
            "optimizer's outputs.\n";
    for (const auto& [name, value] : now)
      file << name << ' ' << value << '\n';
    BOOST_REQUIRE(file.good());
    BOOST_TEST_MESSAGE("recorded " << now.size() << " outputs to " << recorded_path());
    return;
  }
  std::ifstream file(recorded_path());
  BOOST_REQUIRE_MESSAGE(file.good(), "cannot read " << recorded_path());
  outputs recorded;
  for (std::string line; std::getline(file, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.find(' ');
    recorded[line.substr(0, space)] = line.substr(space + 1);
  }
  BOOST_TEST(recorded.size() == now.size());
  for (const auto& [name, value] : now) {
    const auto found = recorded.find(name);
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST_REQUIRE((found != recorded.end()));
      BOOST_TEST(found->second == value);
    }
  }
}
