// SPDX-License-Identifier: Apache-2.0
// The extension module zo_torch._zo_torch: zo's optimizers over torch_store, as Python classes
// that zo_torch/__init__.py wraps in torch.optim-style ones. One translation unit, so that the
// package costs one libtorch compile.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>
#include <zo/adapters/torch.hpp>
#include <zo/zo.hpp>

namespace py = pybind11;

namespace {

// The parameters' element type: float, zo::bfloat16 or zo::float16 (zo_torch/__init__.py picks
// the class of the parameters' dtype).
template <class T = float>
zo::basic_torch_store<T> store_of(zo::torch_store::named_tensors parameters,
                                  std::vector<std::string> layer_prefixes) {
  zo::torch_store_options options;
  options.layer_prefixes = std::move(layer_prefixes);
  return zo::basic_torch_store<T>(std::move(parameters), std::move(options));
}

// One optimizer of zo over the tensors Python gave it; the closure is the Python one.
template <class Optimizer, class T = float>
class python_optimizer {
 public:
  python_optimizer(zo::basic_torch_store<T> store, Optimizer optimizer)
      : optimizer_(std::move(store), std::move(optimizer)) {}

  // Autograd's engine refuses to start while the GIL is held (its threads may run Python
  // hooks), so LoHO's backward releases it; the closure itself runs with it held.
  at::Tensor step(const py::function& closure) {
    return optimizer_.step([&] { return closure().template cast<at::Tensor>(); },
                           [](const at::Tensor& loss) {
                             py::gil_scoped_release no_gil;
                             loss.backward();
                           });
  }

  py::bytes state() const {
    std::ostringstream out(std::ios::binary);
    optimizer_.save(out);
    return py::bytes(out.str());
  }
  void load_state(const std::string& bytes) {
    std::istringstream in(bytes, std::ios::binary);
    optimizer_.load(in);
  }

  void log_trajectory(const std::string& path, const std::string& description) {
    optimizer_.log_trajectory(path, description);
  }
  void finish_trajectory() { optimizer_.finish_trajectory(); }

  py::dict last_report() const {
    const zo::step_report& r = optimizer_.last_report();
    py::dict out;
    out["step"] = r.step;
    out["loss"] = r.loss;
    out["learning_rate"] = r.learning_rate;
    out["evaluations"] = r.evaluations;
    out["completed"] = r.status == zo::step_status::completed;
    out["projected_gradients"] =
        std::vector<double>(r.projected_gradients.begin(), r.projected_gradients.end());
    return out;
  }

  std::uint64_t step_count() const { return optimizer_.optimizer().step_count(); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < optimizer_.store().size(); ++i)
      out.emplace_back(optimizer_.store().block(i).name());
    return out;
  }
  std::vector<std::string> left_out() const { return optimizer_.store().left_out(); }

 private:
  zo::torch_optimizer<Optimizer, T> optimizer_;
};

template <class Optimizer, class T = float>
py::class_<python_optimizer<Optimizer, T>> bind(py::module_& m, const std::string& name) {
  using type = python_optimizer<Optimizer, T>;
  return py::class_<type>(m, name.c_str())
      .def("step", &type::step, py::arg("closure"))
      .def("state", &type::state)
      .def("load_state", &type::load_state, py::arg("state"))
      .def("log_trajectory", &type::log_trajectory, py::arg("path"), py::arg("description"))
      .def("finish_trajectory", &type::finish_trajectory)
      .def("last_report", &type::last_report)
      .def("step_count", &type::step_count)
      .def("names", &type::names)
      .def("left_out", &type::left_out);
}

// restore: "exact" (zo's default: a snapshot of the zeroth-order parameters, one extra copy of
// them, and no rounding residue) or "arithmetic" (no memory beyond the parameters; a
// perturbation is undone by adding its negative, as the MeZO reference does).
zo::zo_options options_of(std::uint64_t seed, const std::string& restore) {
  zo::zo_options options;
  options.seed = seed;
  if (restore == "exact") {
    options.restore = zo::restore_mode::exact;
  } else if (restore == "arithmetic") {
    options.restore = zo::restore_mode::arithmetic;
  } else {
    throw py::value_error("zo_torch: restore is \"exact\" or \"arithmetic\", not \"" + restore +
                          "\"");
  }
  return options;
}

using named = zo::torch_store::named_tensors;
using prefixes = std::vector<std::string>;

// The zeroth-order classes for parameters of type T, named with `suffix` ("" for float32,
// "_bf16", "_f16").
template <class T>
void bind_zeroth_order(py::module_& m, const std::string& suffix) {
  bind<zo::mezo, T>(m, "MeZO" + suffix)
      .def(py::init([](named params, prefixes layers, double lr, double eps, double weight_decay,
                       std::uint64_t seed, const std::string& restore) {
             return python_optimizer<zo::mezo, T>(
                 store_of<T>(std::move(params), std::move(layers)),
                 zo::mezo(zo::central_difference(eps), zo::sgd<>(lr, weight_decay),
                          options_of(seed, restore)));
           }),
           py::arg("params"), py::arg("layer_prefixes"), py::arg("lr"), py::arg("eps"),
           py::arg("weight_decay"), py::arg("seed"), py::arg("restore"));

  bind<zo::lozo, T>(m, "LOZO" + suffix)
      .def(py::init([](named params, prefixes layers, double lr, double eps, std::size_t rank,
                       std::size_t interval, double weight_decay, std::uint64_t seed,
                       const std::string& restore) {
             return python_optimizer<zo::lozo, T>(
                 store_of<T>(std::move(params), std::move(layers)),
                 zo::lozo(zo::low_rank_perturbation(rank, interval), zo::central_difference(eps),
                          zo::sgd<>(lr, weight_decay), {}, options_of(seed, restore)));
           }),
           py::arg("params"), py::arg("layer_prefixes"), py::arg("lr"), py::arg("eps"),
           py::arg("rank"), py::arg("interval"), py::arg("weight_decay"), py::arg("seed"),
           py::arg("restore"));

  bind<zo::lozo_m, T>(m, "LOZOM" + suffix)
      .def(py::init([](named params, prefixes layers, double lr, double eps, std::size_t rank,
                       std::size_t interval, double beta, double weight_decay, std::uint64_t seed,
                       const std::string& restore) {
             return python_optimizer<zo::lozo_m, T>(
                 store_of<T>(std::move(params), std::move(layers)),
                 zo::lozo_m(zo::low_rank_perturbation(rank, interval), zo::central_difference(eps),
                            zo::low_rank_momentum<>(lr, beta, weight_decay), {},
                            options_of(seed, restore)));
           }),
           py::arg("params"), py::arg("layer_prefixes"), py::arg("lr"), py::arg("eps"),
           py::arg("rank"), py::arg("interval"), py::arg("beta"), py::arg("weight_decay"),
           py::arg("seed"), py::arg("restore"));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zo's zeroth-order optimizers over PyTorch parameters (use the classes of zo_torch)";

  bind_zeroth_order<float>(m, "");
  bind_zeroth_order<zo::bfloat16>(m, "_bf16");
  bind_zeroth_order<zo::float16>(m, "_f16");

  bind<zo::loho>(m, "LoHO").def(
      py::init([](named params, prefixes layers, double lr, double eps, double weight_decay,
                  double fo_lr, std::size_t first_order_layers, std::pair<double, double> betas,
                  double adam_eps, double fo_weight_decay, double clip_norm, std::uint64_t seed,
                  const std::string& restore) {
        zo::hybrid_options options;
        options.clip_norm = clip_norm;
        return python_optimizer<zo::loho>(
            store_of(std::move(params), std::move(layers)),
            zo::loho(zo::mezo(zo::central_difference(eps), zo::sgd<>(lr, weight_decay),
                              options_of(seed, restore)),
                     zo::adam<>(fo_lr, betas.first, betas.second, adam_eps, fo_weight_decay),
                     zo::deepest_layers(first_order_layers), options));
      }),
      py::arg("params"), py::arg("layer_prefixes"), py::arg("lr"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("fo_lr"), py::arg("first_order_layers"), py::arg("betas"),
      py::arg("adam_eps"), py::arg("fo_weight_decay"), py::arg("clip_norm"), py::arg("seed"),
      py::arg("restore"));
}
