// The `s0` Python module (import s0): the extension `s0._s0`, re-exported by
// python/s0/__init__.py. Every object wraps the C++ library; nothing here computes on its own.
#include <Python.h>
#include <c10/util/Exception.h>

#include "common.h"
#include "s0/io/atomic_file.h"

namespace s0py {

// ------------------------------------------------------------------ Model's lazy parts

const s0::text::Tokenizer& Model::tokenizer() {
  if (!tok_) tok_ = s0::text::Tokenizer::from_model_dir(dir);
  return *tok_;
}

bool Model::has_tokenizer() {
  if (tok_) return true;
  try {
    tokenizer();
    return true;
  } catch (const s0::Error&) {
    return false;  // no (usable) tokenizer.json: token ids only, as the CLI without text
  }
}

const s0::text::ChatTemplate& Model::chat_template() {
  if (!chat_) chat_ = s0::text::ChatTemplate::from_model_dir(dir);
  return *chat_;
}

// ------------------------------------------------------------------ GIL and Ctrl-C

namespace {
void check_signals() {
  py::gil_scoped_acquire gil;
  // Runs the Python signal handlers (in the main thread only); a KeyboardInterrupt or any
  // exception a handler raises comes back as error_already_set, which unwinds the C++ loop
  // and is raised again by pybind11 when the call returns.
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}
}  // namespace

Released::Released() : hook_(check_signals) {}
Released::~Released() = default;

// ------------------------------------------------------------------ JSON <-> Python

py::object to_py(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return py::none();
    case nlohmann::json::value_t::boolean:
      return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float:
      return py::float_(j.get<double>());
    case nlohmann::json::value_t::string:
      return py::str(j.get_ref<const std::string&>());
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& x : j) l.append(to_py(x));
      return l;
    }
    case nlohmann::json::value_t::object: {
      py::dict d;
      for (const auto& [k, v] : j.items()) d[py::str(k)] = to_py(v);
      return d;
    }
    default:
      return py::none();
  }
}

nlohmann::json to_json(const py::handle& o) {
  if (o.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(o)) return o.cast<bool>();
  if (py::isinstance<py::int_>(o)) return o.cast<int64_t>();
  if (py::isinstance<py::float_>(o)) return o.cast<double>();
  if (py::isinstance<py::str>(o)) return o.cast<std::string>();
  if (py::isinstance<py::dict>(o)) {
    nlohmann::json j = nlohmann::json::object();
    for (auto [k, v] : o.cast<py::dict>()) {
      if (!py::isinstance<py::str>(k)) throw s0::Error("dictionary keys must be strings");
      j[k.cast<std::string>()] = to_json(v);
    }
    return j;
  }
  if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o)) {
    nlohmann::json j = nlohmann::json::array();
    for (auto x : o) j.push_back(to_json(x));
    return j;
  }
  // NumPy scalars and the like.
  if (py::hasattr(o, "item")) return to_json(o.attr("item")());
  throw s0::Error("cannot convert a " + std::string(py::str(py::type::of(o).attr("__name__"))) +
                  " to JSON");
}

// ------------------------------------------------------------------ tensors <-> NumPy

py::array to_numpy(const s0::Tensor& t0, bool writeable) {
  s0::Tensor t = t0.detach().to(at::kCPU);
  if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble &&
      t.scalar_type() != at::kLong)
    t = t.to(at::kFloat);
  t = t.contiguous();
  py::dtype dt = t.scalar_type() == at::kFloat    ? py::dtype::of<float>()
                 : t.scalar_type() == at::kDouble ? py::dtype::of<double>()
                                                  : py::dtype::of<int64_t>();
  std::vector<py::ssize_t> shape, strides;
  for (int64_t d = 0; d < t.dim(); ++d) {
    shape.push_back(t.size(d));
    strides.push_back(t.stride(d) * static_cast<int64_t>(t.element_size()));
  }
  auto* keep = new s0::Tensor(t);
  py::capsule owner(keep, [](void* p) { delete static_cast<s0::Tensor*>(p); });
  py::array a(dt, shape, strides, t.data_ptr(), owner);
  if (!writeable) a.attr("setflags")(py::arg("write") = false);
  return a;
}

s0::Tensor float_tensor(const py::handle& o) {
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(o);
  if (!a) throw s0::Error("expected an array of numbers");
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  return at::from_blob(const_cast<float*>(a.data()), shape, at::kFloat).clone();
}

std::optional<std::string> path_like(const py::handle& o) {
  if (py::isinstance<py::str>(o)) return o.cast<std::string>();
  if (!o.is_none() && py::hasattr(o, "__fspath__"))
    return py::str(o.attr("__fspath__")()).cast<std::string>();
  return std::nullopt;
}

std::string opt_str(const py::handle& o, const char* what) {
  if (o.is_none()) return "";
  if (!py::isinstance<py::str>(o)) throw s0::Error(std::string(what) + " must be a str");
  return o.cast<std::string>();
}

}  // namespace s0py

PYBIND11_MODULE(_s0, m) {
  namespace py = pybind11;
  m.doc() =
      "s0: S0 tuning (learned initial recurrent states) for hybrid recurrent-attention language "
      "models";
  // Errors: a file that does not exist -> FileNotFoundError; every other error a user can
  // cause (bad arguments, malformed files, mismatches) -> ValueError; anything else
  // (libtorch, internal) -> RuntimeError. Nothing aborts the interpreter.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const s0::FileNotFound& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const s0::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    } catch (const nlohmann::json::exception& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  s0py::bind_model(m);
  s0py::bind_states(m);
  s0py::bind_train(m);
  s0py::bind_pipeline(m);
}
