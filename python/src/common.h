#pragma once
// Shared pieces of the Python bindings (python/src/*.cpp): the Model wrapper every object
// uses, JSON <-> Python, tensors <-> NumPy, and the guard that runs a long call with the GIL
// released while Ctrl-C and progress callbacks still reach Python.
//
// Threads: every call that computes on a model releases the GIL first and then takes the
// model's mutex (in that order, so a thread waiting for the model never holds the GIL that the
// running call needs for its callbacks). Two models run in parallel; calls on one model take
// turns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "s0/adapters/state_set.h"
#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"
#include "s0/util/interrupt.h"

namespace s0py {

namespace py = pybind11;

// A loaded model with its tokenizer and chat template (both read on first use) and the
// adapter activate() attached (used by generate/logits when a call names none).
struct Model {
  std::string dir, dtype;
  std::shared_ptr<s0::models::CausalLM> lm;
  std::mutex mu;  // one computation at a time on this model
  std::shared_ptr<const s0::models::Adapter> active;
  py::object active_obj = py::none();  // what activate() was given (for `model.active`)

  const s0::text::Tokenizer& tokenizer();
  const s0::text::ChatTemplate& chat_template();
  bool has_tokenizer();

 private:
  std::optional<s0::text::Tokenizer> tok_;
  std::optional<s0::text::ChatTemplate> chat_;
};
using ModelPtr = std::shared_ptr<Model>;

// While alive: the GIL is released and this thread's long loops poll for Ctrl-C (the Python
// signal handlers run; a KeyboardInterrupt stops the loop and is raised by the call).
class Released {
 public:
  Released();
  ~Released();

 private:
  py::gil_scoped_release release_;
  s0::ScopedInterruptHook hook_;
};

// JSON <-> Python (dict/list/str/int/float/bool/None).
py::object to_py(const nlohmann::json& j);
nlohmann::json to_json(const py::handle& o);

// A tensor as a NumPy array: float32/float64/int64 contiguous tensors are shared without a
// copy (the array keeps the tensor alive); other dtypes are converted to float32 first.
py::array to_numpy(const s0::Tensor& t, bool writeable = true);
// A NumPy array (or anything array-like) as a new float32 tensor (always a copy).
s0::Tensor float_tensor(const py::handle& a);

// A str or os.PathLike as a path; nullopt for anything else.
std::optional<std::string> path_like(const py::handle& o);

// Raises ValueError unless `o` is None or a str; returns "" for None.
std::string opt_str(const py::handle& o, const char* what);

void bind_model(py::module_& m);
void bind_states(py::module_& m);
void bind_train(py::module_& m);
void bind_pipeline(py::module_& m);

}  // namespace s0py
