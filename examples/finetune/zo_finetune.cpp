// SPDX-License-Identifier: Apache-2.0
// zo-finetune: pretrains the example transformer on the generated review corpus, fine-tunes it
// on the sentiment task with MeZO, LOZO, LOZO-M, LoHO or first-order Adam, measures the memory of
// a zeroth-order step against inference, and reports runs as a table, CSV and a plot.
//
//   zo-finetune pretrain --out DIR [options]
//   zo-finetune finetune --checkpoint DIR --method M --out PREFIX [options]
//   zo-finetune memory   --checkpoint DIR [options]
//   zo-finetune report   --out DIR RUN.json...
//
// `zo-finetune help` lists every option with its default.
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <concepts>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>
#include <zo/zo.hpp>
#ifdef ZO_FINETUNE_MPI
#include <zo/distributed/mpi.hpp>
#endif

#include "../common/check.hpp"
#include "../common/output_files.hpp"
#include "checkpoint.hpp"
#include "resume_state.hpp"
#include "reviews.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Command line: --name value (or --name=value) pairs, each checked against the command's table
// of options, so a misspelt option is an error rather than a silently ignored default. The
// parser is strict: an option given twice, an empty value, a separate value that is itself an
// option (`--out --steps`; write `--out=--steps` for such a value), a number not written
// completely (std::from_chars: no leading space or '+', no hexadecimal) or not finite, and an
// integer with an exponent, a fraction or outside the range of what stores it are errors
// naming the option. An option that finetune's --method never reads is an error too.

struct option_spec {
  std::string name, default_value, help;
  // finetune: the --method values that read this option; empty: every method does.
  std::vector<std::string> methods{};
};

// "a", "a or b", "a, b or c".
std::string one_of(const std::vector<std::string>& words) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i)
    out += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + words[i];
  return out;
}

class arguments {
 public:
  arguments(std::vector<option_spec> specs, int argc, char** argv, int first)
      : specs_(std::move(specs)) {
    for (const auto& s : specs_)
      values_[s.name] = s.default_value;
    for (int i = first; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0) {
        positional_.push_back(arg);
        continue;
      }
      arg.erase(0, 2);
      std::string value;
      const auto eq = arg.find('=');
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg.erase(eq);
      }
      if (!values_.contains(arg)) throw zo::invalid_argument("unknown option --" + arg);
      if (eq == std::string::npos) {
        if (i + 1 >= argc) throw zo::invalid_argument("option --" + arg + " needs a value");
        value = argv[++i];
        if (value.rfind("--", 0) == 0)
          throw zo::invalid_argument("option --" + arg + " needs a value, got the option " + value +
                                     " (write --" + arg + "=" + value +
                                     " for a value that begins with --)");
      }
      if (value.empty()) throw zo::invalid_argument("option --" + arg + " has an empty value");
      if (!given_.insert(arg).second)
        throw zo::invalid_argument("option --" + arg + " is given more than once");
      values_[arg] = value;
    }
  }

  const std::string& text(const std::string& name) const { return values_.at(name); }
  bool given(const std::string& name) const { return given_.contains(name); }

  // A finite number, the whole value (1e-3, 0.5, -2; not " 1", "+1", "0x10", "inf" or "1e999").
  double number(const std::string& name) const {
    const std::string& v = text(name);
    double x = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc{} || end != v.data() + v.size() || !std::isfinite(x))
      throw zo::invalid_argument("--" + name + " must be a finite number, got '" + v + "'");
    return x;
  }
  // A number in [min, max].
  double number(const std::string& name, double min, double max) const {
    const double x = number(name);
    if (x < min || x > max) {
      throw zo::invalid_argument("--" + name + " must be from " + shortest(min) + " to " +
                                 shortest(max) + ", got " + text(name));
    }
    return x;
  }
  // An integer in [min, max], written in decimal digits (a leading '-' where min < 0; no
  // exponent, fraction or '+'), that therefore fits the T it is stored in.
  template <std::integral T>
  T integer(const std::string& name, T min, T max) const {
    const std::string& v = text(name);
    T x{};
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec == std::errc{} && end == v.data() + v.size() && x >= min && x <= max) return x;
    throw zo::invalid_argument("--" + name + " must be an integer from " + std::to_string(min) +
                               " to " + std::to_string(max) + ", got '" + v + "'");
  }
  const std::vector<std::string>& positional() const { return positional_; }

  // Refuses any option given that `method` (finetune's --method) never reads, naming the
  // methods that do.
  void refuse_unread(const std::string& method) const {
    for (const auto& s : specs_) {
      if (!given(s.name) || s.methods.empty() ||
          std::find(s.methods.begin(), s.methods.end(), method) != s.methods.end())
        continue;
      throw zo::invalid_argument("--" + s.name + " is read only by --method " + one_of(s.methods) +
                                 ", not by " + method);
    }
  }

  static void print(std::ostream& out, const std::vector<option_spec>& specs) {
    for (const auto& s : specs) {
      out << "  --" << s.name;
      if (!s.default_value.empty()) out << " (default " << s.default_value << ")";
      if (!s.methods.empty()) out << " [--method " << one_of(s.methods) << " only]";
      out << "\n      " << s.help << "\n";
    }
  }

 private:
  static std::string shortest(double x) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", x);
    return buffer;
  }

  std::vector<option_spec> specs_;
  std::map<std::string, std::string> values_;
  std::set<std::string> given_;
  std::vector<std::string> positional_;
};

// The bounds of the integer options (and of the values derived from them), each within what
// stores it: no value wraps.
constexpr int max_width = 65536;   // --d-model, --heads, --ffn, --max-positions, --window, --rank
constexpr int max_layers = 1024;   // --layers; --loho-layers at most 2 more (embeddings, norm)
constexpr int max_threads = 4096;  // --threads (0: the OpenMP default)
constexpr int max_scale = 1024;    // memory --scale
constexpr std::uint64_t max_count = std::uint64_t{1} << 32;  // steps, batch, examples, intervals
constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();  // seeds, budget

// ---------------------------------------------------------------------------------------------
// Measurements.

// A size field of /proc/self/status ("VmHWM:", "VmRSS:"), in bytes; nullopt where there is none.
std::optional<std::size_t> status_bytes(std::string_view field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(field)) return std::stoull(line.substr(field.size())) * 1024;
  }
  return std::nullopt;
}

// Peak resident set size of this process (VmHWM), in bytes.
std::size_t peak_resident_bytes() {
  if (const auto peak = status_bytes("VmHWM:")) return *peak;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::size_t>(usage.ru_maxrss) * 1024;
}

std::size_t resident_bytes() {
  return status_bytes("VmRSS:").value_or(0);
}

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(std::llround(seconds));
  char buffer[32];
  if (s >= 60) {
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%llds", s);
  }
  return buffer;
}

// One progress line per call: to a terminal it overwrites itself, to a file or pipe it is
// printed at most every few seconds so logs stay short.
class progress_line {
 public:
  progress_line(std::string label, std::uint64_t total)
      : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO) != 0) {}

  // `skipped`: steps so far that changed nothing (a non-finite loss or a refused update).
  void update(std::uint64_t step, double loss, bool force = false, std::uint64_t skipped = 0) {
    const double elapsed = seconds_since(start_);
    if (!force && elapsed - last_print_ < (tty_ ? 0.2 : 5.0)) return;
    last_print_ = elapsed;
    const double rate = step / std::max(elapsed, 1e-9);
    const double eta = rate > 0 ? double(total_ - step) / rate : 0;
    const std::string skips =
        skipped > 0 ? "  skipped " + std::to_string(skipped) + " (no update)" : std::string();
    std::fprintf(stderr, "%s%s step %llu/%llu  loss %.4f%s  %.1f steps/s  ETA %s%s",
                 tty_ ? "\r" : "", label_.c_str(), static_cast<unsigned long long>(step),
                 static_cast<unsigned long long>(total_), loss, skips.c_str(), rate,
                 duration_text(eta).c_str(), tty_ ? "   " : "\n");
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_;
  std::uint64_t total_;
  bool tty_;
  clock_type::time_point start_ = clock_type::now();
  double last_print_ = -1e9;
};

void set_threads(const arguments& args) {
  if (const int threads = args.integer<int>("threads", 0, max_threads); threads > 0)
    omp_set_num_threads(threads);
}

// Seconds a collective may wait under mpirun: positive, at most a million (the milliseconds are
// rounded to a long long).
double mpi_timeout_seconds(const arguments& args) {
  const double seconds = args.number("mpi-timeout", 0, 1e6);
  zo_examples::require(seconds > 0,
                       "--mpi-timeout must be positive, got " + args.text("mpi-timeout"));
  return seconds;
}

// The processes fine-tuning together: this one alone or, when zo-finetune is built with Open MPI
// and started by mpirun, the job's ranks, each holding a replica of the model and evaluating its
// shard of every batch (zo::mpi's data parallelism: the zeroth-order parts exchange losses, the
// first-order parts the gradients of their blocks).
struct team {
  int rank = 0, size = 1;
#ifdef ZO_FINETUNE_MPI
  std::unique_ptr<zo::mpi::communicator> comm;
#endif

  bool root() const {
    return rank == 0;
  }

  void set_shard(std::size_t local, std::size_t batch) const {
#ifdef ZO_FINETUNE_MPI
    if (comm) {
      comm->set_local_examples(local);
      comm->set_batch_examples(batch);
    }
#endif
    (void)local, (void)batch;
  }
  std::uint64_t bytes_sent() const {
#ifdef ZO_FINETUNE_MPI
    if (comm) return comm->stats().bytes_sent;
#endif
    return 0;
  }
  template <class Store>
  void verify_replicas(const Store& store, std::uint64_t step) const {
#ifdef ZO_FINETUNE_MPI
    if (comm) zo::mpi::verify_replicas(*comm, store, step);
#endif
    (void)store, (void)step;
  }
  template <class Base, class Body>
  void with_estimator(Base base, Body&& body) const {
#ifdef ZO_FINETUNE_MPI
    if (comm) return body(zo::mpi::data_parallel<Base>(*comm, base));
#endif
    body(base);
  }
  template <class Store, class Objective, class Body>
  void with_gradients(const Store& store, Objective& objective, Body&& body) const {
#ifdef ZO_FINETUNE_MPI
    if (comm) {
      zo::mpi::data_parallel_objective<Objective, Store> shared(*comm, store, objective);
      return body(shared);
    }
#endif
    (void)store;
    body(objective);
  }
};

const team& the_team(const arguments& args) {
  static const team t = [&] {
    team made;
#ifdef ZO_FINETUNE_MPI
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
      const double seconds = mpi_timeout_seconds(args);
      made.comm = std::make_unique<zo::mpi::communicator>(
          MPI_COMM_WORLD, zo::mpi::communicator_options{
                              .timeout = std::chrono::milliseconds(std::llround(seconds * 1000))});
      made.rank = made.comm->rank();
      made.size = made.comm->size();
    }
#endif
    (void)args;
    return made;
  }();
  return t;
}

// ---------------------------------------------------------------------------------------------
// Data and evaluation.

// Held-out accuracy on the label words: with two candidates the prediction is right exactly
// when the cross-entropy over them is below ln 2.
struct evaluation {
  double accuracy = 0, loss = 0;
};

template <class T>
evaluation evaluate(const opt::basic_opt_model<T>& model, const opt::batch& examples) {
  const auto losses = model.example_losses(examples, reviews::label_word_loss());
  evaluation e;
  for (double l : losses) {
    e.loss += l;
    if (l < std::log(2.0)) e.accuracy += 1;
  }
  e.loss /= double(losses.size());
  e.accuracy /= double(losses.size());
  return e;
}

// Batches drawn without replacement, reshuffled each epoch, from one seeded engine. next()
// returns examples [first, last) of the drawn batch: under mpirun every rank draws the same
// batch and keeps its own shard.
class batch_sampler {
 public:
  batch_sampler(const opt::batch& data, std::size_t batch_size, std::uint64_t seed)
      : data_(&data), batch_size_(batch_size), engine_(seed) {
    zo_examples::require(batch_size <= data.size(), "the batch size " + std::to_string(batch_size) +
                                                        " exceeds the " +
                                                        std::to_string(data.size()) + " examples");
  }
  opt::batch next(std::size_t first, std::size_t last) {
    opt::batch out;
    for (std::size_t i = 0; i < batch_size_; ++i) {
      if (cursor_ == order_.size()) {
        order_.resize(data_->size());
        std::iota(order_.begin(), order_.end(), std::size_t{0});
        std::shuffle(order_.begin(), order_.end(), engine_);
        cursor_ = 0;
      }
      const std::size_t drawn = order_[cursor_++];
      if (i >= first && i < last) out.push_back((*data_)[drawn]);
    }
    return out;
  }

  // The sampler's position (engine, epoch order, cursor), for --resume.
  nlohmann::json state() const {
    std::ostringstream engine;
    engine << engine_;
    return {{"engine", engine.str()}, {"order", order_}, {"cursor", cursor_}};
  }
  void restore(const nlohmann::json& state) {
    std::istringstream engine(state.at("engine").get<std::string>());
    engine >> engine_;
    order_ = state.at("order").get<std::vector<std::size_t>>();
    cursor_ = state.at("cursor").get<std::size_t>();
    bool valid = static_cast<bool>(engine) && cursor_ <= order_.size() &&
                 (order_.empty() || order_.size() == data_->size());
    for (std::size_t i : order_)
      valid = valid && i < data_->size();
    zo_examples::require(valid, "the resume state's batch sampler does not fit the data");
  }

 private:
  const opt::batch* data_;
  std::size_t batch_size_;
  std::mt19937_64 engine_;
  std::vector<std::size_t> order_;
  std::size_t cursor_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Checks made before any work.

// The data sets are built in memory before the first step. Options that would need more than
// this are refused, naming the option, before anything is built (rather than ending, perhaps
// hours later, in std::bad_alloc).
constexpr double data_limit_bytes = 4.0 * 1024 * 1024 * 1024;
// Upper estimates of the memory the data take, from the generator: a sentiment example holds
// at most about 50 tokens in a vector of up to 64, one target, the example itself and the
// allocator's overhead; a pretraining window costs, per token, the corpus stream (int, in a
// vector of up to twice its size), its copy in the window and a target (8 bytes, doubled).
constexpr double sentiment_example_bytes = 512;
constexpr double window_token_bytes = 32, window_bytes = 128;

std::string gib(double bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
  return buffer;
}

void require_data_fits(double bytes, const std::string& options) {
  if (bytes > data_limit_bytes)
    throw zo::invalid_argument(options + " would build about " + gib(bytes) +
                               " of data in memory, over the " + gib(data_limit_bytes) +
                               " this tool allows (estimated from the options)");
}

// The model is built from the size options (pretrain, and memory's scaled probe): one refused
// here is refused by name rather than ending in std::bad_alloc. `copies`: how many arrays of the
// parameters' size the command holds (pretrain's Adam: the weights, gradients and two moments).
void require_model_fits(const opt::opt_config& config, double copies, const std::string& options) {
  double parameters = 0;
  for (const auto& spec : opt::parameter_specs(config))
    parameters += double(spec.rows) * double(spec.cols);
  const double bytes = parameters * sizeof(float) * copies;
  if (bytes > data_limit_bytes) {
    char count[32];
    std::snprintf(count, sizeof count, "%.3g", parameters);
    throw zo::invalid_argument(options + " give a model of " + count + " parameters, about " +
                               gib(bytes) + " with what this command keeps of them, over the " +
                               gib(data_limit_bytes) + " this tool allows");
  }
}

// A learning rate or other rate: finite (number() checks) and at least zero, or positive.
double non_negative(const arguments& args, const std::string& name) {
  const double x = args.number(name);
  if (x < 0)
    throw zo::invalid_argument("--" + name + " must be at least 0, got " + args.text(name));
  return x;
}
double positive_number(const arguments& args, const std::string& name) {
  const double x = args.number(name);
  if (x <= 0) throw zo::invalid_argument("--" + name + " must be positive, got " + args.text(name));
  return x;
}
double unit_fraction(const arguments& args, const std::string& name) {
  const double x = args.number(name);
  if (x <= 0 || x > 1) {
    throw zo::invalid_argument("--" + name + " must be above 0 and at most 1, got " +
                               args.text(name));
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// pretrain

std::vector<option_spec> pretrain_options() {
  return {{"out", "", "checkpoint directory to write (config.json, model.safetensors)"},
          {"d-model", "64", "hidden size"},
          {"heads", "4", "attention heads"},
          {"layers", "4", "decoder layers"},
          {"ffn", "256", "feed-forward size"},
          {"max-positions", "64", "longest sequence"},
          {"window", "32", "tokens per training window"},
          {"steps", "1500", "Adam steps"},
          {"batch", "32", "windows per step"},
          {"lr", "2e-3", "Adam learning rate (linear decay to zero)"},
          {"seed", "1", "initialisation and corpus seed"},
          {"threads", "0", "OpenMP threads (0: the OpenMP default)"}};
}

// One first-order step over the gradient buffers' blocks: the objective's loss and gradients
// (one forward and backward pass), then the rule on each block. Serves pretraining and the full
// fine-tuning baseline.
template <class Rule, class Objective>
double first_order_step(zo::eigen_store<float>& store, opt::gradient_buffers<float>& gradients,
                        Rule& rule, Objective& objective, std::uint64_t step) {
  auto view = gradients.view();
  const double loss = objective.loss_and_gradients(view);
  for (std::size_t k = 0; k < gradients.blocks().size(); ++k) {
    rule.apply(zo::backends::cpu{}, store.block(gradients.blocks()[k]), gradients[k].data(), 1.0,
               step);
  }
  return loss;
}

int pretrain(const arguments& args) {
  set_threads(args);
  const fs::path out = args.text("out");
  zo_examples::require(!out.empty(), "pretrain needs --out DIR");
  opt::opt_config config;
  config.vocab_size = reviews::vocabulary_size();
  config.d_model = args.integer("d-model", 1, max_width);
  config.n_heads = args.integer("heads", 1, max_width);
  config.n_layers = args.integer("layers", 1, max_layers);
  config.d_ffn = args.integer("ffn", 1, max_width);
  config.max_positions = args.integer("max-positions", 1, max_width);
  // Every review begins with <bos>; the language has no end-of-sequence or padding token.
  config.bos_token_id = reviews::token("<bos>");
  zo_examples::require(
      config.d_model % config.n_heads == 0,
      "--d-model " + args.text("d-model") + " is not divisible by --heads " + args.text("heads"));
  const int window = args.integer("window", 1, max_width);
  zo_examples::require(window <= config.max_positions, "--window exceeds --max-positions");
  const auto steps = args.integer("steps", std::uint64_t{1}, max_count),
             batch_size = args.integer("batch", std::uint64_t{1}, max_count);
  const auto seed = args.integer("seed", std::uint64_t{0}, max_u64);
  const double lr = non_negative(args, "lr");
  require_model_fits(config, 4, "--d-model, --ffn, --layers and --max-positions");
  require_data_fits(
      double(steps) * double(batch_size) * (window * window_token_bytes + window_bytes),
      "--steps " + std::to_string(steps) + " × --batch " + std::to_string(batch_size) +
          " windows of --window " + std::to_string(window) + " tokens");
  // Where the checkpoint goes: a directory this save may replace, in a writable parent.
  opt::check_checkpoint_target(out);
  zo_examples::require_writable_directory(zo_examples::resolved_output(out).parent_path(),
                                          "--out " + out.string());

  zo::eigen_store<float> store;
  opt::register_parameters(store, config, seed);
  const opt::opt_model model(config, store);
  const opt::batch corpus = reviews::language_modelling_windows(seed, steps * batch_size, window);
  const opt::batch held_out = reviews::language_modelling_windows(seed + 1000, 256, window);

  zo::adam<zo::linear_schedule> adam(zo::linear_schedule(lr, steps), 0.9, 0.999, 1e-8, 0.0);
  progress_line progress("pretrain", steps);
  const auto start = clock_type::now();
  const double initial = model.loss(held_out);
  opt::lm_objective objective(model, {});
  opt::gradient_buffers<float> gradients(store, model.parameter_blocks());
  for (std::uint64_t step = 0; step < steps; ++step) {
    const auto first = corpus.begin() + static_cast<std::ptrdiff_t>(step * batch_size);
    objective.set_batch(opt::batch(first, first + static_cast<std::ptrdiff_t>(batch_size)));
    const double loss = first_order_step(store, gradients, adam, objective, step);
    progress.update(step + 1, loss, step + 1 == steps);
  }
  progress.finish();
  const double final_loss = model.loss(held_out);
  opt::save_checkpoint(
      out, config, store,
      {{"zo.pretrain", "Adam on the generated review corpus, " + std::to_string(steps) +
                           " steps of " + std::to_string(batch_size) + " windows"}});
  std::printf("pretrained in %s: held-out LM loss %.3f -> %.3f (uniform: %.3f); wrote %s\n",
              duration_text(seconds_since(start)).c_str(), initial, final_loss,
              std::log(double(config.vocab_size)), out.c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// finetune

// The methods with a zeroth-order part, which read --eps and --restore (all but adam).
std::vector<std::string> zeroth_order_methods() {
  return {"mezo", "lozo",     "lozo-m", "loho",    "zo-momentum", "zo-adam",
          "lezo", "sign-sgd", "fzoo",   "subzero", "sparse-mezo", "hizoo"};
}

// The methods whose step rule has a weight decay (all but ZO-SignSGD's and FZOO's).
std::vector<std::string> weight_decay_methods() {
  std::vector<std::string> methods = {"adam"};
  for (const auto& m : zeroth_order_methods()) {
    if (m != "sign-sgd" && m != "fzoo") methods.push_back(m);
  }
  return methods;
}

std::vector<option_spec> finetune_options() {
  return {{"checkpoint", "", "pretrained checkpoint directory"},
          {"method", "mezo",
           "mezo, lozo, lozo-m, loho, zo-momentum, zo-adam, lezo, sign-sgd, fzoo, subzero, "
           "sparse-mezo, hizoo or adam (full first-order baseline); docs/variants.md says what "
           "each composes"},
          {"out", "", "output prefix: PREFIX.csv (curves) and PREFIX.json (summary)"},
          {"steps", "0", "optimizer steps (0: derived from --forward-budget)"},
          {"forward-budget", "0",
           "forward passes (examples through the model) to spend, counting 2 per example for a "
           "zeroth-order step, N + 1 for FZOO, 3 for HiZOO (L0, L+, L-), 3 for LoHO (2 + its "
           "first-order pass) and 1 for Adam"},
          {"batch", "16", "examples per step (MeZO: 16)"},
          {"lr", "", "learning rate (default: 1e-5 for adam, 1e-6 for the others)"},
          {"eps", "1e-3", "perturbation scale ε (MeZO, LOZO: 1e-3)", zeroth_order_methods()},
          {"weight-decay", "0", "weight decay", weight_decay_methods()},
          {"rank", "2", "LOZO and SubZero rank r", {"lozo", "lozo-m", "subzero"}},
          {"interval",
           "50",
           "LOZO: steps V is kept for (ν); SubZero: steps U and V are kept for",
           {"lozo", "lozo-m", "subzero"}},
          {"beta", "0.9", "LOZO-M and ZO-SGD momentum, in [0, 1)", {"lozo-m", "zo-momentum"}},
          {"lezo-layers",
           "1",
           "LeZO: layers perturbed and updated at each step (the others get no pass)",
           {"lezo"}},
          {"sparse-fraction",
           "0.5",
           "Sparse-MeZO: the fraction of each tensor's entries, those of smallest magnitude in the "
           "checkpoint, that are perturbed and updated (needs --restore exact)",
           {"sparse-mezo"}},
          {"directions",
           "8",
           "FZOO: directions N a step, measured one-sided around one base loss",
           {"fzoo"}},
          {"hessian-smoothing",
           "1e-6",
           "HiZOO: weight α of each step's curvature samples in the Hessian diagonal estimate "
           "(above 0, at most 1; 1e-3 and more stalled on the example, docs/variants.md)",
           {"hizoo"}},
          {"loho-layers", "2", "LoHO: the deepest k layers are trained first-order", {"loho"}},
          {"loho-budget-mib",
           "0",
           "LoHO: instead of --loho-layers, the largest k whose predicted memory (parameters, and "
           "the first-order layers' activations, gradients and Adam moments) fits this many MiB",
           {"loho"}},
          {"fo-lr", "1e-5", "LoHO: Adam learning rate of the first-order layers", {"loho"}},
          {"clip", "1.0", "LoHO: first-order gradient-norm clip (0: off)", {"loho"}},
          {"restore", "",
           "exact (snapshot, no rounding residue) or arithmetic (the reference's undo; no "
           "memory); default arithmetic with --dtype f32, exact (the only one) with bf16 and f16",
           zeroth_order_methods()},
          {"dtype", "f32",
           "the parameters' dtype: f32, bf16 or f16 (half the parameter memory; the forward "
           "computes in float, and the optimizer rounds updates stochastically); loho and adam "
           "take f32 only"},
          {"train-examples", "1000", "training set size (MeZO: 1000)"},
          {"test-examples", "1000", "held-out test set size"},
          {"eval-interval", "0", "steps between held-out evaluations (0: 20 evaluations in all)"},
          {"data-seed", "7", "seed of the task's data"},
          {"seed", "0", "seed of the directions and batch order"},
          {"generator", "philox4x32-8",
           "generator of the directions: philox4x32-8 or philox4x32-10 (zo 0.1's)",
           zeroth_order_methods()},
          {"threads", "0", "OpenMP threads (0: the OpenMP default)"},
          {"save-every", "0",
           "steps between saves of the resume state PREFIX.resume/ (weights, optimizer state, "
           "position; 0: none)"},
          {"resume", "no",
           "yes: continue from PREFIX.resume/ (the options must be those of the saved run; "
           "without a saved state the run starts at step 0)"},
          {"mpi-timeout", "60",
           "under mpirun: seconds a collective may wait for the other ranks before the job ends "
           "with an error"}};
}

// The variants on Gaussian directions that differ from MeZO in one role (docs/variants.md):
// body(rule, selector) with ZO-SGD with momentum, ZO-Adam, ZO-SignSGD, or LeZO's random layer
// subset.
template <class Body>
void run_dense_variant(const std::string& method, Body&& body, double lr, double beta, double decay,
                       std::size_t lezo_layers, std::uint64_t seed) {
  if (method == "zo-momentum") {
    body(zo::zo_momentum<>(lr, beta, decay), zo::all_blocks{});
  } else if (method == "zo-adam") {
    body(zo::zo_adam<>(lr, 0.9, 0.999, 1e-8, decay), zo::all_blocks{});
  } else if (method == "sign-sgd") {
    body(zo::sign_sgd<>(lr), zo::all_blocks{});
  } else {
    body(zo::sgd<>(lr, decay), zo::random_layer_subset(lezo_layers, seed));
  }
}

// Bytes an optimizer needs to resume besides the parameters: the size of its saved state.
template <class Optimizer>
std::size_t state_bytes(const Optimizer& optimizer) {
  std::ostringstream out;
  optimizer.save(out);
  return out.str().size();
}

struct curve_point {
  std::uint64_t step = 0, forward_passes = 0;
  double train_loss = 0, test_accuracy = 0, test_loss = 0, seconds = 0;
};

int finetune(const arguments& args) {
  set_threads(args);
  const std::string method = args.text("method");
  const fs::path prefix = args.text("out");
  zo_examples::require(!prefix.empty(), "finetune needs --out PREFIX");
  const auto zo_methods = zeroth_order_methods();
  zo_examples::require(
      method == "adam" ||
          std::find(zo_methods.begin(), zo_methods.end(), method) != zo_methods.end(),
      "unknown --method '" + method +
          "' (mezo, lozo, lozo-m, loho, zo-momentum, zo-adam, lezo, sign-sgd, fzoo, subzero, "
          "sparse-mezo, hizoo or adam)");
  // An option this method never reads is a mistake, not something to ignore.
  args.refuse_unread(method);
  zo_examples::require(!args.text("checkpoint").empty(), "finetune needs --checkpoint DIR");
  // FZOO's N directions (at least 2: its step divides by the spread of their losses).
  const std::size_t directions =
      method == "fzoo" ? args.integer<std::size_t>("directions", 2, zo::max_samples_per_step) : 0;
  const std::uint64_t passes_per_example = method == "fzoo"                        ? directions + 1
                                           : method == "loho" || method == "hizoo" ? 3
                                           : method == "adam"                      ? 1
                                                                                   : 2;
  const auto batch_size = args.integer("batch", std::uint64_t{1}, max_count);
  std::uint64_t steps = args.integer("steps", std::uint64_t{0}, max_count);
  if (steps == 0) {
    const auto budget = args.integer("forward-budget", std::uint64_t{0}, max_u64);
    zo_examples::require(budget > 0, "finetune needs --steps or --forward-budget");
    steps = budget / (passes_per_example * batch_size);
    zo_examples::require(steps > 0, "--forward-budget is less than one step's forward passes");
    zo_examples::require(steps <= max_count, "--forward-budget " + args.text("forward-budget") +
                                                 " makes " + std::to_string(steps) +
                                                 " steps, over the 2^32 a run can take");
  } else {
    zo_examples::require(!args.given("forward-budget"),
                         "--forward-budget is read only when --steps is 0 (or not given); give "
                         "one of them");
  }
  // Everything the options decide is checked here, before the checkpoint or the data are
  // loaded: the ranges the optimizers require, naming the option.
  const double lr = args.given("lr") ? non_negative(args, "lr") : method == "adam" ? 1e-5 : 1e-6;
  const double eps = positive_number(args, "eps"), decay = non_negative(args, "weight-decay");
  // LOZO's rank (at most the smallest side of the model's matrices, checked once the
  // checkpoint's configuration is read) and interval.
  std::size_t rank = 0, interval = 0;
  if (method == "lozo" || method == "lozo-m" || method == "subzero") {
    rank = args.integer<std::size_t>("rank", 1, max_width);
    interval = args.integer<std::size_t>("interval", 1, max_count);
  }
  double beta = 0;
  if (method == "lozo-m" || method == "zo-momentum") {
    beta = args.number("beta");
    zo_examples::require(beta >= 0 && beta < 1,
                         "--beta must be at least 0 and below 1, got " + args.text("beta"));
  }
  // LoHO: the first-order layers' Adam rate and clip, and either the deepest --loho-layers
  // (at most the model's layers, checked once its configuration is read) or a memory budget.
  double fo_lr = 0, clip = 0, budget_mib = 0;
  std::size_t loho_layers = 0;
  // LeZO's layers a step (at most the model's, checked once its configuration is read).
  const std::size_t lezo_layers =
      method == "lezo" ? args.integer<std::size_t>("lezo-layers", 1, max_layers + 2) : 0;
  if (method == "loho") {
    fo_lr = non_negative(args, "fo-lr");
    clip = non_negative(args, "clip");
    budget_mib = args.number("loho-budget-mib", 0, 1 << 30);
    if (budget_mib == 0) {
      loho_layers = args.integer<std::size_t>("loho-layers", 1, max_layers + 2);
    } else {
      zo_examples::require(!args.given("loho-layers"),
                           "--loho-layers is read only when --loho-budget-mib is 0; give one of "
                           "them");
    }
  }
  const auto train_examples = args.integer("train-examples", std::uint64_t{1}, max_count),
             test_examples = args.integer("test-examples", std::uint64_t{1}, max_count);
  zo_examples::require(batch_size <= train_examples, "--batch " + std::to_string(batch_size) +
                                                         " exceeds --train-examples " +
                                                         std::to_string(train_examples));
  require_data_fits(double(train_examples) * sentiment_example_bytes,
                    "--train-examples " + std::to_string(train_examples));
  require_data_fits(double(test_examples) * sentiment_example_bytes,
                    "--test-examples " + std::to_string(test_examples));
  const std::string dtype = args.text("dtype");
  zo_examples::require(dtype == "f32" || dtype == "bf16" || dtype == "f16",
                       "--dtype must be f32, bf16 or f16, got '" + dtype + "'");
  const bool sixteen_bit = dtype != "f32";
  // The run's name in the curves, the summary and the report: "mezo", "mezo (bf16)".
  const std::string label = sixteen_bit ? method + " (" + dtype + ")" : method;
  // The first-order parts keep gradients and Adam moments of float parameters; the 16-bit
  // parameters are for the zeroth-order methods.
  zo_examples::require(!sixteen_bit || (method != "loho" && method != "adam"),
                       "--dtype " + dtype + " is not supported by --method " + method +
                           " (its first-order part works on float parameters); use --dtype "
                           "f32, or a zeroth-order method such as mezo");
  const std::string restore_name = args.given("restore") ? args.text("restore")
                                   : sixteen_bit         ? "exact"
                                                         : "arithmetic";
  zo_examples::require(restore_name == "exact" || restore_name == "arithmetic",
                       "--restore must be exact or arithmetic, got '" + restore_name + "'");
  // Perturbed 16-bit weights are rounded: subtracting the perturbation again does not give the
  // weights back, so only the snapshot restores them (zo refuses the arithmetic restore too).
  zo_examples::require(!sixteen_bit || restore_name == "exact",
                       "--restore arithmetic cannot restore --dtype " + dtype +
                           " weights: a perturbed 16-bit weight is rounded, so undoing the "
                           "perturbation does not give it back; use --restore exact (the "
                           "default with 16-bit weights)");
  // Sparse-MeZO's mask is read from the base point, and HiZOO's directions change with every
  // update: only the exact restore's snapshot serves either.
  const double sparse_fraction =
      method == "sparse-mezo" ? unit_fraction(args, "sparse-fraction") : 0;
  const double hessian_smoothing = method == "hizoo" ? unit_fraction(args, "hessian-smoothing") : 0;
  zo_examples::require(restore_name == "exact" || (method != "sparse-mezo" && method != "hizoo"),
                       "--method " + method + " needs --restore exact");
  const auto seed = args.integer("seed", std::uint64_t{0}, max_u64);
  const auto generator = zo::generator_named(args.text("generator"));
  zo_examples::require(
      generator.has_value(),
      "--generator must be philox4x32-8 or philox4x32-10, got '" + args.text("generator") + "'");
  const zo::zo_options zo_options{
      .seed = seed,
      .generator = *generator,
      .restore = restore_name == "exact" ? zo::restore_mode::exact : zo::restore_mode::arithmetic};
  const auto eval_every = args.integer("eval-interval", std::uint64_t{0}, max_count);
  const std::uint64_t eval_interval =
      eval_every > 0 ? eval_every : std::max<std::uint64_t>(1, steps / 20);
  const auto data_seed = args.integer("data-seed", std::uint64_t{0}, max_u64);
  // The resume state PREFIX.resume/: saved every --save-every steps, read with --resume yes.
  const auto save_every = args.integer("save-every", std::uint64_t{0}, max_count);
  const std::string resume_text = args.text("resume");
  zo_examples::require(resume_text == "yes" || resume_text == "no",
                       "--resume must be yes or no, got '" + resume_text + "'");
  const bool resume = resume_text == "yes";
  mpi_timeout_seconds(args);  // checked in every run, read only under mpirun
  // The options the model bounds, from the checkpoint's configuration alone (the weights and
  // the data are loaded later).
  if (rank > 0 || loho_layers > 0 || lezo_layers > 0) {
    const opt::opt_config shape = opt::read_config(args.text("checkpoint"));
    std::size_t smallest = max_u64;
    for (const auto& spec : opt::parameter_specs(shape)) {
      if (spec.rows > 1 && spec.cols > 1)
        smallest = std::min<std::size_t>(smallest, std::min(spec.rows, spec.cols));
    }
    zo_examples::require(rank <= smallest, "--rank " + std::to_string(rank) + " exceeds " +
                                               std::to_string(smallest) +
                                               ", the smallest side of the model's matrices");
    const auto layers = static_cast<std::size_t>(shape.layer_count());
    zo_examples::require(loho_layers <= layers,
                         "--loho-layers " + std::to_string(loho_layers) + " exceeds the " +
                             std::to_string(layers) +
                             " layers of the checkpoint's model (its decoder layers, the "
                             "embeddings and the final norm)");
    zo_examples::require(lezo_layers <= layers, "--lezo-layers " + std::to_string(lezo_layers) +
                                                    " exceeds the " + std::to_string(layers) +
                                                    " layers of the checkpoint's model");
  }

  // Under mpirun every rank draws the same batches and evaluates its own contiguous shard.
  const team& group = the_team(args);
  zo_examples::require(group.size == 1 || (save_every == 0 && !resume),
                       "--save-every and --resume are not supported under mpirun");
  zo_examples::require(batch_size >= static_cast<std::uint64_t>(group.size),
                       "the batch of " + std::to_string(batch_size) +
                           " examples cannot be shared by " + std::to_string(group.size) +
                           " ranks");
  // The outputs (rank 0 writes them): none may overwrite an input, their directory must be
  // writable, and no other run may be writing the same prefix (PREFIX.lock, held until the end).
  const fs::path checkpoint = args.text("checkpoint");
  const std::string csv_path = prefix.string() + ".csv", json_path = prefix.string() + ".json";
  std::optional<zo_examples::prefix_lock> lock;
  if (group.root()) {
    zo_examples::refuse_overwriting_inputs(
        {{csv_path, "the curves (--out)"},
         {json_path, "the summary (--out)"},
         {prefix.string() + ".lock", "the lock file of --out"},
         {prefix.string() + ".resume", "the resume state of --out"}},
        {{checkpoint, "the checkpoint (--checkpoint)"},
         {checkpoint / "config.json", "the checkpoint's"},
         {checkpoint / "model.safetensors", "the checkpoint's"}});
    zo_examples::require_writable_output(csv_path, "--out " + prefix.string());
    zo_examples::require_writable_output(json_path, "--out " + prefix.string());
    lock.emplace(prefix.string() + ".lock", prefix.string());
  }
  // The options a resumed run must share with the saved one: all but these three.
  const fs::path resume_dir = prefix.string() + ".resume";
  nlohmann::json run_options = nlohmann::json::object();
  for (const auto& spec : finetune_options()) {
    if (spec.name != "save-every" && spec.name != "resume" && spec.name != "mpi-timeout")
      run_options[spec.name] = args.text(spec.name);
  }
  std::optional<opt::resume_state> resumed;
  if (resume) {
    resumed = opt::read_resume_state(resume_dir);
    if (!resumed) {
      std::fprintf(stderr, "%s: no resume state in %s; starting at step 0\n", method.c_str(),
                   resume_dir.c_str());
    } else {
      const auto saved = resumed->position.find("options");
      for (const auto& [name, value] : run_options.items()) {
        const bool found = saved != resumed->position.end() && saved->is_object() &&
                           saved->contains(name) && saved->at(name).is_string();
        zo_examples::require(
            found && saved->at(name) == value,
            "--resume: the run saved in " + resume_dir.string() + " was started with --" + name +
                " '" + (found ? saved->at(name).get<std::string>() : "?") + "', this one has '" +
                value.get<std::string>() + "'; give the saved run's options, or remove " +
                resume_dir.string() + " to start afresh");
      }
    }
  }

  // The rest runs over parameters of the chosen element type: float, or 16 bits, which the
  // forward widens one tensor at a time and the optimizers step in 16 bits.
  auto train_in = [&]<class Element>() -> int {
    constexpr bool sixteen_bit_element = zo::is_16bit<Element>;
    opt::owning_store_of<Element> store;
    // What the optimizers step: the store, or the zo::view_store a 16-bit store is.
    typename opt::basic_opt_model<Element>::store_type& parameters = store;
    // A resumed run starts from the saved weights (of the same model as --checkpoint).
    const auto loaded = opt::load_checkpoint(
        resumed ? resume_dir / resumed->position.at("weights").get<std::string>() : checkpoint,
        store);
    zo_examples::require(!resumed || opt::config_json(loaded.config) ==
                                         opt::config_json(opt::read_config(checkpoint)),
                         "--resume: the saved weights in " + resume_dir.string() +
                             " are not of the model of --checkpoint " + checkpoint.string());
    const opt::basic_opt_model<Element> model(loaded.config, store);
    const opt::batch train = reviews::sentiment_examples(data_seed, train_examples);
    const opt::batch test = reviews::sentiment_examples(data_seed + 1, test_examples);
    batch_sampler sampler(train, batch_size, seed + 1);
    const std::size_t shard_begin = group.rank * batch_size / group.size,
                      shard_end = (group.rank + 1) * batch_size / group.size;
    group.set_shard(shard_end - shard_begin, batch_size);
    opt::basic_objective<Element> objective(model, {}, reviews::label_word_loss());

    std::vector<curve_point> curve;
    const auto start = clock_type::now();
    double loss_sum = 0, seconds_before = 0;  // seconds_before: the saved run's
    std::uint64_t loss_count = 0, first_step = 1, adam_step = 0;
    // Steps that changed nothing: a non-finite loss, or an update the optimizer refused because it
    // would have made weights non-finite (refused_updates counts those among them).
    std::uint64_t skipped_steps = 0, refused_updates = 0;
    if (resumed) {
      try {
        const auto& p = resumed->position;
        sampler.restore(p.at("sampler"));
        for (const auto& row : p.at("curve")) {
          curve.push_back({row.at(0).get<std::uint64_t>(), row.at(1).get<std::uint64_t>(),
                           opt::bits_double(row.at(2).get<std::uint64_t>()),
                           opt::bits_double(row.at(3).get<std::uint64_t>()),
                           opt::bits_double(row.at(4).get<std::uint64_t>()),
                           opt::bits_double(row.at(5).get<std::uint64_t>())});
        }
        loss_sum = opt::bits_double(p.at("loss_sum").get<std::uint64_t>());
        loss_count = p.at("loss_count").get<std::uint64_t>();
        skipped_steps = p.at("skipped_steps").get<std::uint64_t>();
        refused_updates = p.at("refused_updates").get<std::uint64_t>();
        adam_step = p.at("adam_step").get<std::uint64_t>();
        seconds_before = p.at("seconds").get<double>();
        first_step = p.at("step").get<std::uint64_t>() + 1;
        zo_examples::require(!curve.empty() && first_step >= 2 && first_step <= steps,
                             "its step is out of range");
      } catch (const std::exception& e) {
        throw zo::invalid_argument("the resume state in " + resume_dir.string() +
                                   " is damaged: " + e.what());
      }
    }
    auto record = [&](std::uint64_t step) {
      // Only rank 0 evaluates and reports: the replicas are identical.
      if (!group.root()) return;
      const evaluation e = evaluate(model, test);
      curve.push_back({step, step * batch_size * passes_per_example,
                       loss_count > 0 ? loss_sum / double(loss_count) : e.loss, e.accuracy, e.loss,
                       seconds_before + seconds_since(start)});
      loss_sum = 0;
      loss_count = 0;
    };
    if (!resumed) record(0);
    const double zero_shot = group.root() ? curve.front().test_accuracy : 0;
    if (group.root()) {
      std::fprintf(
          stderr, "%s: zero-shot held-out accuracy %.3f; %llu steps of %llu examples%s\n",
          method.c_str(), zero_shot, static_cast<unsigned long long>(steps),
          static_cast<unsigned long long>(batch_size),
          group.size > 1 ? (" over " + std::to_string(group.size) + " ranks").c_str() : "");
      if (resumed) {
        std::fprintf(stderr, "%s: resuming at step %llu from %s\n", method.c_str(),
                     static_cast<unsigned long long>(first_step), resume_dir.c_str());
      }
    }

    progress_line progress(method, steps);
    const auto train_start = clock_type::now();
    const std::uint64_t bytes_before = group.bytes_sent();
    std::size_t optimizer_state = 0;
    auto counted = [&](const zo::step_report& report) {
      if (report.skipped()) ++skipped_steps;
      if (report.status == zo::step_status::skipped_nonfinite_update) ++refused_updates;
      return report.loss;
    };
    // The resume state after `step`: the weights, the optimizer's state and the run's position.
    auto save_resume = [&](std::uint64_t step, const auto& optimizer) {
      std::ostringstream state;
      optimizer.save(state);
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& p : curve) {
        rows.push_back({p.step, p.forward_passes, opt::double_bits(p.train_loss),
                        opt::double_bits(p.test_accuracy), opt::double_bits(p.test_loss),
                        opt::double_bits(p.seconds)});
      }
      opt::save_resume_state(resume_dir, loaded.config, store,
                             {{"step", step},
                              {"options", run_options},
                              {"sampler", sampler.state()},
                              {"curve", rows},
                              {"loss_sum", opt::double_bits(loss_sum)},
                              {"loss_count", loss_count},
                              {"skipped_steps", skipped_steps},
                              {"refused_updates", refused_updates},
                              {"adam_step", adam_step},
                              {"seconds", seconds_before + seconds_since(start)}},
                             state.str());
    };
    // One step at a time, so the loop can draw the batch, log, evaluate and save between steps.
    auto run = [&](auto& optimizer, auto&& one_step) {
      if (resumed) {
        std::istringstream in(resumed->optimizer);
        optimizer.load(in);
      }
      for (std::uint64_t step = first_step; step <= steps; ++step) {
        objective.set_batch(sampler.next(shard_begin, shard_end));
        const double loss = one_step();
        if (std::isfinite(loss)) {
          loss_sum += loss;
          ++loss_count;
        }
        if (group.root()) progress.update(step, loss, step == steps, skipped_steps);
        if (step % eval_interval == 0 || step == steps) {
          group.verify_replicas(store, step);
          record(step);
        }
        if (save_every > 0 && step % save_every == 0 && step < steps) save_resume(step, optimizer);
      }
      if (group.root()) progress.finish();
    };
    // The zeroth-order methods over the estimator of this run: central differences, or under
    // mpirun zo::mpi::data_parallel around them (one gather of losses per step).
    auto with_estimator = [&](auto&& body) {
      return group.with_estimator(zo::central_difference(eps), body);
    };
    // The first-order parts' loss and gradients: the objective's own, or under mpirun every
    // rank's gathered and summed in rank order.
    auto with_gradients = [&](auto&& body) { return group.with_gradients(store, objective, body); };
    if (method == "mezo") {
      with_estimator([&]<class Estimator>(Estimator estimator) {
        zo::zo_optimizer<zo::gaussian_perturbation, Estimator, zo::sgd<>> optimizer(
            {}, estimator, zo::sgd<>(lr, decay), {}, zo_options);
        run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
        optimizer_state = state_bytes(optimizer);
      });
    } else if (method == "zo-momentum" || method == "zo-adam" || method == "lezo" ||
               method == "sign-sgd") {
      run_dense_variant(
          method,
          [&]<class Rule, class Selector>(Rule rule, Selector selector) {
            with_estimator([&]<class Estimator>(Estimator estimator) {
              zo::zo_optimizer<zo::gaussian_perturbation, Estimator, Rule, Selector> optimizer(
                  {}, estimator, rule, selector, zo_options);
              run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
              optimizer_state = state_bytes(optimizer);
            });
          },
          lr, beta, decay, lezo_layers, seed);
    } else if (method == "sparse-mezo") {
      // The thresholds come from the checkpoint's weights, also when resuming from others, so a
      // resumed run masks as the uninterrupted one did.
      opt::owning_store_of<Element> pretrained;
      if (resumed) opt::load_checkpoint(checkpoint, pretrained);
      const zo::small_magnitude_perturbation sparse(zo::small_magnitude_thresholds(
          resumed ? static_cast<decltype(parameters)>(pretrained) : parameters, sparse_fraction));
      with_estimator([&]<class Estimator>(Estimator estimator) {
        zo::zo_optimizer<zo::small_magnitude_perturbation, Estimator, zo::sgd<>> optimizer(
            sparse, estimator, zo::sgd<>(lr, decay), {}, zo_options);
        run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
        optimizer_state = state_bytes(optimizer);
      });
    } else if (method == "subzero") {
      with_estimator([&]<class Estimator>(Estimator estimator) {
        zo::zo_optimizer<zo::subzero_perturbation, Estimator, zo::sgd<>> optimizer(
            zo::subzero_perturbation(rank, interval), estimator, zo::sgd<>(lr, decay), {},
            zo_options);
        run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
        optimizer_state = state_bytes(optimizer);
      });
    } else if (method == "fzoo") {
      group.with_estimator(
          zo::q_sample<zo::one_sided>(directions, zo::one_sided(eps)),
          [&]<class Estimator>(Estimator estimator) {
            zo::zo_optimizer<zo::rademacher_perturbation, Estimator, zo::fzoo_sgd<>> optimizer(
                {}, estimator, zo::fzoo_sgd<>(lr), {}, zo_options);
            run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
            optimizer_state = state_bytes(optimizer);
          });
    } else if (method == "hizoo") {
      // Not data-parallel: zo::mpi's estimators repeat a central or one-sided difference, and
      // HiZOO's three evaluations are neither.
      zo_examples::require(group.size == 1, "--method hizoo does not run under mpirun");
      const zo::hizoo_sgd<> rule(lr, hessian_smoothing, decay);
      zo::hizoo optimizer(zo::hessian_scaled_perturbation(rule.diagonal()),
                          zo::curvature_difference(eps), rule, {}, zo_options);
      run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
      optimizer_state = state_bytes(optimizer);
    } else if (method == "lozo" || method == "lozo-m") {
      const zo::low_rank_perturbation low_rank(rank, interval);
      with_estimator([&]<class Estimator>(Estimator estimator) {
        if (method == "lozo") {
          zo::zo_optimizer<zo::low_rank_perturbation, Estimator, zo::sgd<>> optimizer(
              low_rank, estimator, zo::sgd<>(lr, decay), {}, zo_options);
          run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
          optimizer_state = state_bytes(optimizer);
        } else {
          zo::zo_optimizer<zo::low_rank_perturbation, Estimator, zo::low_rank_momentum<>> optimizer(
              low_rank, estimator, zo::low_rank_momentum<>(lr, beta, decay), {}, zo_options);
          run(optimizer, [&] { return counted(optimizer.step(parameters, objective)); });
          optimizer_state = state_bytes(optimizer);
        }
      });
    } else if (method == "loho") {
      // Refused with the options for 16-bit parameters.
      if constexpr (!sixteen_bit_element) {
        // LoHO's first-order layers: the deepest k, or as many as a memory budget allows.
        auto with_selector = [&](auto&& body) {
          if (budget_mib == 0) return body(zo::deepest_layers(loho_layers));
          const int longest = static_cast<int>(
              std::max_element(train.begin(), train.end(), [](const auto& a, const auto& b) {
                return a.tokens.size() < b.tokens.size();
              })->tokens.size());
          const zo::memory_budget selector(
              static_cast<std::size_t>(budget_mib * 1048576.0),
              opt::memory_costs(loaded.config, shard_end - shard_begin, longest));
          if (group.root()) {
            std::fprintf(
                stderr,
                "loho: %zu first-order layers fit the budget of %.1f MiB (predicted %.1f MiB)\n",
                selector.k(), budget_mib, selector.predicted_bytes() / 1048576.0);
          }
          body(selector);
        };
        with_estimator([&]<class Estimator>(Estimator estimator) {
          with_selector([&]<class Selector>(Selector selector) {
            using zo_part = zo::zo_optimizer<zo::gaussian_perturbation, Estimator, zo::sgd<>>;
            zo::hybrid<zo_part, zo::adam<>, Selector> optimizer(
                zo_part({}, estimator, zo::sgd<>(lr, decay), {}, zo_options), zo::adam<>(fo_lr),
                selector, zo::hybrid_options{.clip_norm = clip});
            with_gradients([&](auto& f) {
              run(optimizer, [&] { return counted(optimizer.step(store, f)); });
            });
            optimizer_state = state_bytes(optimizer);
          });
        });
      }
    } else if constexpr (!sixteen_bit_element) {
      zo::adam<> adam(lr, 0.9, 0.999, 1e-8, decay);
      opt::gradient_buffers<float> gradients(store, model.parameter_blocks());
      with_gradients([&](auto& f) {
        run(adam, [&] { return first_order_step(store, gradients, adam, f, adam_step++); });
      });
      optimizer_state = state_bytes(adam);
    }
    const double bytes_per_step = double(group.bytes_sent() - bytes_before) / double(steps);
    group.verify_replicas(store, steps);
    const double train_seconds = seconds_since(train_start);
    if (!group.root()) return 0;  // rank 0 evaluated and reports
    const curve_point& last = curve.back();
    // Each file replaces the previous one as a whole (a temporary file, fsync'ed and renamed); the
    // curves first, so a summary always names curves of its own run.
    {
      std::ostringstream csv;
      csv << "method,step,forward_passes,train_loss,test_accuracy,test_loss,seconds\n";
      for (const auto& p : curve) {
        csv << label << ',' << p.step << ',' << p.forward_passes << ',' << p.train_loss << ','
            << p.test_accuracy << ',' << p.test_loss << ',' << p.seconds << '\n';
      }
      zo_examples::write_file_atomically(csv_path, csv.str());
    }
    std::size_t parameter_count = 0;
    for (std::size_t b : model.parameter_blocks())
      parameter_count += store.block(b).size();
    const nlohmann::json summary = {{"method", method},
                                    {"dtype", dtype},
                                    {"label", label},
                                    {"parameter_bytes", parameter_count * sizeof(Element)},
                                    {"steps", steps},
                                    {"batch", batch_size},
                                    {"forward_passes", steps * batch_size * passes_per_example},
                                    {"lr", lr},
                                    {"eps", eps},
                                    {"restore", restore_name},
                                    {"zero_shot_accuracy", zero_shot},
                                    {"test_accuracy", last.test_accuracy},
                                    {"test_loss", last.test_loss},
                                    {"skipped_steps", skipped_steps},
                                    {"refused_updates", refused_updates},
                                    {"train_seconds", train_seconds},
                                    {"peak_resident_bytes", peak_resident_bytes()},
                                    {"optimizer_state_bytes", optimizer_state},
                                    {"parameter_count", parameter_count},
                                    {"test_examples", test.size()},
                                    {"ranks", group.size},
                                    {"bytes_sent_per_step_per_rank", bytes_per_step},
                                    {"csv", csv_path}};
    zo_examples::write_file_atomically(json_path, summary.dump(2) + '\n');
    // The run is done: its resume state is of no more use.
    if (save_every > 0 || resume) {
      std::error_code ec;
      fs::remove_all(resume_dir, ec);
      zo_examples::require(
          !ec, "cannot remove the resume state " + resume_dir.string() + ": " + ec.message());
    }
    std::printf("%s: held-out accuracy %.3f -> %.3f in %s (%llu steps), peak RSS %.1f MiB\n",
                label.c_str(), zero_shot, last.test_accuracy, duration_text(train_seconds).c_str(),
                static_cast<unsigned long long>(steps), peak_resident_bytes() / 1048576.0);
    return 0;
  };
  if (dtype == "bf16") return train_in.template operator()<zo::bfloat16>();
  if (dtype == "f16") return train_in.template operator()<zo::float16>();
  return train_in.template operator()<float>();
}

// ---------------------------------------------------------------------------------------------
// memory

std::vector<option_spec> memory_options() {
  return {{"checkpoint", "", "checkpoint directory whose configuration is measured"},
          {"scale", "4",
           "the probe's model is the checkpoint's with d_model, d_ffn and heads × scale and twice "
           "the layers (random weights: memory does not depend on them), so that parameters, "
           "not the program, dominate the resident size"},
          {"batch", "16", "examples per step"},
          {"steps", "2", "steps of each kind measured"},
          {"dtype", "f32",
           "f32: inference and MeZO steps with both restores; bf16 or f16: inference with float "
           "and with 16-bit parameters, and a MeZO step on the 16-bit ones (exact restore)"},
          {"threads", "0", "OpenMP threads (0: the OpenMP default)"}};
}

// One phase of the probe in a child process of its own, so that a phase's peak is its own
// without resetting the peak through /proc/self/clear_refs, which many containers and chroots
// do not let a process write. The parent forks before it has run any OpenMP region or built any
// model, so every child starts from the same small process. `phase` builds the probe's model,
// runs its step once (so allocations that persist across steps, and OpenMP's thread stacks, are
// in place) and `steps` times more, and returns the resident size before the measured steps
// (0 where /proc/self/status cannot be read); the child sends it and its peak resident size
// (VmHWM, or getrusage's where /proc is missing) back through a pipe.
struct phase_memory {
  std::size_t before = 0, peak = 0;
};

template <class Phase>
phase_memory measure_in_child(const char* name, Phase&& phase) {
  int channel[2];
  zo_examples::require(::pipe(channel) == 0, std::string("memory: pipe failed for ") + name);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  zo_examples::require(child >= 0, std::string("memory: fork failed for ") + name);
  if (child == 0) {
    ::close(channel[0]);
    int status = 0;
    try {
      phase_memory m;
      m.before = phase();
      m.peak = peak_resident_bytes();
      status = ::write(channel[1], &m, sizeof m) == sizeof m ? 0 : 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zo-finetune memory: %s: %s\n", name, e.what());
      status = 1;
    }
    ::_exit(status);
  }
  ::close(channel[1]);
  phase_memory m;
  const bool reported = ::read(channel[0], &m, sizeof m) == sizeof m;
  ::close(channel[0]);
  int status = 0;
  const pid_t waited = ::waitpid(child, &status, 0);
  zo_examples::require(waited == child && WIFEXITED(status) && WEXITSTATUS(status) == 0 && reported,
                       std::string("memory: the probe of '") + name + "' failed");
  return m;
}

int memory(const arguments& args) {
  set_threads(args);
  const int scale = args.integer("scale", 1, max_scale);
  const auto batch_size = args.integer("batch", std::uint64_t{1}, max_count),
             steps = args.integer("steps", std::uint64_t{1}, max_count);
  require_data_fits(double(batch_size) * sentiment_example_bytes,
                    "--batch " + std::to_string(batch_size));
  zo_examples::require(!args.text("checkpoint").empty(), "memory needs --checkpoint DIR");
  opt::opt_config config = opt::read_config(args.text("checkpoint"));
  // The probe's sizes, each within the 2^30 a configuration allows (and so within an int).
  for (auto [size, factor, name] :
       {std::tuple{&config.d_model, scale, "d_model"}, std::tuple{&config.d_ffn, scale, "d_ffn"},
        std::tuple{&config.n_heads, scale, "n_heads"},
        std::tuple{&config.n_layers, 2, "n_layers"}}) {
    const long long scaled = static_cast<long long>(*size) * factor;
    zo_examples::require(scaled <= (1 << 30), std::string("the probe's ") + name + " would be " +
                                                  std::to_string(scaled) + " (the checkpoint's × " +
                                                  std::to_string(factor) +
                                                  "), over 2^30: --scale " + args.text("scale") +
                                                  " is too large for this checkpoint");
    *size = static_cast<int>(scaled);
  }
  config.validate();
  // The exact-restore phase holds the weights and their snapshot.
  require_model_fits(config, 2, "--scale " + args.text("scale") + " of the checkpoint's model");
  std::size_t parameter_bytes = 0;
  for (const auto& spec : opt::parameter_specs(config))
    parameter_bytes += static_cast<std::size_t>(spec.rows) * spec.cols * sizeof(float);

  const std::string dtype = args.text("dtype");
  zo_examples::require(dtype == "f32" || dtype == "bf16" || dtype == "f16",
                       "--dtype must be f32, bf16 or f16, got '" + dtype + "'");
  // A phase over parameters of element type Element.
  auto phase = [&]<class Element>(auto step) {
    return [&, step]() mutable {
      opt::owning_store_of<Element> store;
      opt::register_parameters(store, config, 1);
      typename opt::basic_opt_model<Element>::store_type& parameters = store;
      const opt::basic_opt_model<Element> model(config, parameters);
      opt::basic_objective<Element> objective(model, reviews::sentiment_examples(3, batch_size),
                                              reviews::label_word_loss());
      step(parameters, objective);
      const std::size_t before = resident_bytes();
      for (std::uint64_t s = 0; s < steps; ++s)
        step(parameters, objective);
      return before;
    };
  };
  auto measure = [&]<class Element = float>(const char* name, auto&& step) {
    const phase_memory m = measure_in_child(name, phase.template operator()<Element>(step));
    std::printf("  %-34s peak RSS %8.1f MiB", name, m.peak / 1048576.0);
    if (m.before > 0) {
      std::printf(" (%+.1f MiB over the %.1f MiB before it)",
                  (double(m.peak) - double(m.before)) / 1048576.0, m.before / 1048576.0);
    }
    std::printf("\n");
    return m.peak;
  };
  std::printf(
      "memory of one step, batch %llu, model d_model %d, %d layers, %.1f MiB of float "
      "parameters (each phase in a process of its own):\n",
      static_cast<unsigned long long>(batch_size), config.d_model, config.n_layers,
      parameter_bytes / 1048576.0);
  auto forward = [](auto&, auto& objective) { objective.loss(); };
  auto mezo_step = [](zo::restore_mode restore) {
    return [optimizer = zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-6),
                                 {.seed = 1, .restore = restore})](
               auto& store, auto& objective) mutable { optimizer.step(store, objective); };
  };
  if (dtype != "f32") {
    auto sixteen_bit = [&]<class Element>() {
      const std::string inference_name = "inference, " + dtype + " parameters",
                        step_name = "MeZO step, " + dtype + ", exact restore";
      const std::size_t float_inference = measure("inference, f32 parameters", forward);
      const std::size_t inference =
          measure.template operator()<Element>(inference_name.c_str(), forward);
      const std::size_t step = measure.template operator()<Element>(
          step_name.c_str(), mezo_step(zo::restore_mode::exact));
      std::printf(
          "%s inference / f32 inference peak: %.3f; MeZO step (%s, exact restore: one %s snapshot "
          "of the parameters) / %s inference peak: %.3f\n",
          dtype.c_str(), double(inference) / double(float_inference), dtype.c_str(), dtype.c_str(),
          dtype.c_str(), double(step) / double(inference));
    };
    if (dtype == "bf16") {
      sixteen_bit.template operator()<zo::bfloat16>();
    } else {
      sixteen_bit.template operator()<zo::float16>();
    }
    return 0;
  }
  const std::size_t inference = measure("inference (one forward)", forward);
  const std::size_t zo_step =
      measure("MeZO step, arithmetic restore", mezo_step(zo::restore_mode::arithmetic));
  const std::size_t exact_step =
      measure("MeZO step, exact restore", mezo_step(zo::restore_mode::exact));
  const double ratio = double(zo_step) / double(inference);
  std::printf(
      "MeZO step / inference peak: %.3f (arithmetic restore, the demo's), %.3f (exact "
      "restore: one snapshot of the parameters)\n",
      ratio, double(exact_step) / double(inference));
  std::printf("within 10%%: %s\n", ratio <= 1.10 ? "yes" : "NO");
  return ratio <= 1.10 ? 0 : 3;
}

// ---------------------------------------------------------------------------------------------
// report

std::string mib(double bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f MiB", bytes / 1048576.0);
  return buffer;
}

// A run's name in the table and the plot, as its curves name it: "mezo", "mezo (bf16)".
std::string run_label(const nlohmann::json& run) {
  return run.value("label", run.at("method").get<std::string>());
}

int report(const arguments& args) {
  const fs::path out = args.text("out");
  zo_examples::require(!out.empty(), "report needs --out DIR");
  zo_examples::require(!args.positional().empty(), "report needs the runs' JSON summaries");
  // Every summary is read and every field the report uses checked before anything is written;
  // a problem names the file and the field.
  std::vector<nlohmann::json> runs;
  std::vector<zo_examples::named_path> inputs;
  for (const auto& path : args.positional()) {
    std::ifstream in(path);
    zo_examples::require(static_cast<bool>(in), "cannot open " + path);
    nlohmann::json run;
    try {
      run = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw zo::invalid_argument(path + " is not a run summary (invalid JSON): " + e.what());
    }
    zo_examples::require(run.is_object(), path + " is not a run summary (not a JSON object)");
    auto field = [&](const char* name, bool (nlohmann::json::*is)() const noexcept,
                     const char* kind) {
      zo_examples::require(run.contains(name),
                           path + " is not a run summary: it has no field \"" + name + "\"");
      zo_examples::require((run.at(name).*is)(), path + ": the field \"" + name + "\" must be " +
                                                     kind + ", got " + run.at(name).dump());
    };
    field("method", &nlohmann::json::is_string, "a string");
    field("csv", &nlohmann::json::is_string, "a string (the curves' file)");
    for (const char* name :
         {"test_accuracy", "zero_shot_accuracy", "train_seconds", "peak_resident_bytes"})
      field(name, &nlohmann::json::is_number, "a number");
    for (const char* name : {"forward_passes", "steps", "optimizer_state_bytes"})
      field(name, &nlohmann::json::is_number_unsigned, "a non-negative integer");
    // Summaries written before 16-bit runs have no label (their method is their name).
    if (run.contains("label")) field("label", &nlohmann::json::is_string, "a string");
    // Summaries written before skipped steps were counted have no such field.
    if (run.contains("skipped_steps"))
      field("skipped_steps", &nlohmann::json::is_number_unsigned, "a non-negative integer");
    inputs.push_back({path, "the summary"});
    inputs.push_back({run.at("csv").get<std::string>(), "the curves named by " + path});
    runs.push_back(std::move(run));
  }
  const fs::path csv_path = out / "curves.csv", md_path = out / "results.md",
                 png = out / "comparison.png";
  zo_examples::refuse_overwriting_inputs({{csv_path, "the report's curves"},
                                          {md_path, "the report's table"},
                                          {png, "the report's plot"}},
                                         inputs);
  zo_examples::require_writable_directory(zo_examples::resolved_output(out),
                                          "--out " + out.string());
  // The curves of every run in one CSV.
  {
    std::ostringstream csv;
    bool header = true;
    for (const auto& run : runs) {
      const std::string path = run.at("csv").get<std::string>();
      std::ifstream in(path);
      zo_examples::require(static_cast<bool>(in), "cannot open the curves " + path);
      std::string line;
      std::getline(in, line);
      if (header) csv << line << '\n';
      header = false;
      while (std::getline(in, line))
        csv << line << '\n';
      zo_examples::require(!in.bad(), "cannot read the curves " + path);
    }
    zo_examples::write_file_atomically(csv_path, csv.str());
  }
  std::ostringstream table;
  table << "| method | held-out accuracy | zero-shot | forward passes | steps | wall time | "
           "peak RSS | optimizer state |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& run : runs) {
    // A run with skipped steps says how many beside its steps.
    std::string steps = std::to_string(run.at("steps").get<unsigned long long>());
    if (const auto skipped = run.value("skipped_steps", 0ull); skipped > 0)
      steps += " (" + std::to_string(skipped) + " skipped)";
    char row[512];
    std::snprintf(row, sizeof row, "| %s | %.1f%% | %.1f%% | %llu | %s | %s | %s | %llu B |\n",
                  run_label(run).c_str(), 100 * run.at("test_accuracy").get<double>(),
                  100 * run.at("zero_shot_accuracy").get<double>(),
                  run.at("forward_passes").get<unsigned long long>(), steps.c_str(),
                  duration_text(run.at("train_seconds").get<double>()).c_str(),
                  mib(run.at("peak_resident_bytes").get<double>()).c_str(),
                  run.at("optimizer_state_bytes").get<unsigned long long>());
    table << row;
  }
  zo_examples::write_file_atomically(md_path, table.str());
  // The plot: held-out accuracy and training loss against forward passes, one line per method.
  // gnuplot writes it to a temporary file in the --out directory (checked writable above; not
  // next to where comparison.png may link), which is read back, checked (not empty) and then
  // written in place as a whole.
  const fs::path png_temporary =
      zo_examples::unique_sibling(zo_examples::resolved_output(out) / "comparison.png", "tmp");
  std::ostringstream script;
  // gnuplot's default colours repeat after eight lines; the comparison of every method has
  // thirteen.
  script << "set linetype 9 lc rgb '#000080'\nset linetype 10 lc rgb '#8b4513'\n"
         << "set linetype 11 lc rgb '#ff1493'\nset linetype 12 lc rgb '#556b2f'\n"
         << "set linetype 13 lc rgb '#7f7f7f'\nset linetype cycle 13\n";
  script << "set datafile separator ','\nset terminal pngcairo size 1200,500 font ',10'\n"
         << "set output '" << png_temporary.string() << "'\nset multiplot layout 1,2\n"
         << "set xlabel 'forward passes (examples)'\nset key bottom right\n"
         << "set ylabel 'held-out accuracy'\nset title 'Sentiment task, held-out accuracy'\nplot ";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string name = run_label(runs[i]);
    script << (i ? ", " : "") << "'" << csv_path.string() << "' using 3:(strcol(1) eq '" << name
           << "' ? $5 : 1/0) with linespoints title '" << name << "'";
  }
  script << "\nset ylabel 'training loss (label words)'\nset key top right\n"
         << "set title 'Training loss, mean over each evaluation interval'\nplot ";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string name = run_label(runs[i]);
    script << (i ? ", " : "") << "'" << csv_path.string() << "' using 3:(strcol(1) eq '" << name
           << "' ? $4 : 1/0) with lines title '" << name << "'";
  }
  script << "\nunset multiplot\n";
  // gnuplot's standard output is discarded: where it cannot open its output it writes the
  // image there instead.
  FILE* gnuplot = popen("gnuplot > /dev/null", "w");
  zo_examples::require(gnuplot != nullptr, "cannot run gnuplot (Debian: gnuplot-nox)");
  // Where gnuplot is missing, the shell exits before reading the script, and the write would end
  // this process with SIGPIPE instead of the error below.
  const auto previous_handler = std::signal(SIGPIPE, SIG_IGN);
  std::fputs(script.str().c_str(), gnuplot);
  const int status = pclose(gnuplot);
  std::signal(SIGPIPE, previous_handler);
  std::string plot;
  try {
    zo_examples::require(status == 0, "gnuplot failed (exit status " + std::to_string(status) +
                                          "); is gnuplot (Debian: gnuplot-nox) installed?");
    std::error_code ec;
    zo_examples::require(
        fs::file_size(png_temporary, ec) > 0 && !ec,
        "cannot write " + png.string() + ": gnuplot wrote no plot to " + png_temporary.string());
    plot = zo_examples::read_file(png_temporary);
  } catch (...) {
    std::error_code ignored;
    fs::remove(png_temporary, ignored);
    throw;
  }
  fs::remove(png_temporary);
  zo_examples::write_file_atomically(png, plot);
  std::printf("%s\ncurves: %s\nplot: %s\n", table.str().c_str(), csv_path.c_str(), png.c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------

struct command {
  const char* name;
  std::vector<option_spec> (*options)();
  int (*run)(const arguments&);
  const char* summary;
};

const std::vector<command>& commands() {
  static const std::vector<command> list = {
      {"pretrain", pretrain_options, pretrain,
       "pretrain the example model with Adam on the generated review corpus"},
      {"finetune", finetune_options, finetune,
       "fine-tune a checkpoint on the sentiment task, writing curves and a summary"},
      {"memory", memory_options, memory,
       "measure the peak memory of a MeZO step against an inference step"},
      {"report",
       [] {
         return std::vector<option_spec>{{"out", "", "directory to write to"}};
       },
       report, "table, combined CSV and plot of finished runs"}};
  return list;
}

void usage(std::ostream& out) {
  out << "usage: zo-finetune COMMAND [--option value]...\n\n";
  for (const auto& c : commands()) {
    out << c.name << ": " << c.summary << "\n";
    arguments::print(out, c.options());
    out << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help") {
    usage(std::cout);
    return argc < 2 ? 2 : 0;
  }
#ifdef ZO_FINETUNE_MPI
  // MPI only when mpirun started this process: a plain run needs no MPI runtime.
  std::optional<zo::mpi::environment> mpi;
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) mpi.emplace(argc, argv);
#endif
  // A write past the file-size limit (ulimit -f) fails with EFBIG and is reported like any other
  // failed write, rather than killing the process in the middle of it.
  std::signal(SIGXFSZ, SIG_IGN);
  for (const auto& c : commands()) {
    if (argv[1] != std::string(c.name)) continue;
    try {
      const arguments args(c.options(), argc, argv, 2);
      // Only report takes file names; anywhere else a bare word is a mistake, not a default.
      if (std::string(c.name) != "report" && !args.positional().empty())
        throw zo::invalid_argument("unexpected argument '" + args.positional().front() + "'");
      const int status = c.run(args);
      if (std::fflush(stdout) != 0 || std::ferror(stdout))
        throw std::runtime_error("cannot write to standard output");
      return status;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zo-finetune %s: error: %s\n", c.name, e.what());
#ifdef ZO_FINETUNE_MPI
      // One rank's failure ends the job rather than leaving the others waiting.
      if (mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
      return 1;
    }
  }
  std::fprintf(stderr, "zo-finetune: unknown command '%s'\n", argv[1]);
  usage(std::cerr);
  return 2;
}
