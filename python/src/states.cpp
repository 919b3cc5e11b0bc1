// s0.StateSet (S0 state sets in the reference layout), s0.Lora (PEFT layout), s0.StateOffset:
// load/save/inspect, tensors as NumPy arrays.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "s0/adapters/lora.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"

namespace s0py {

namespace {

using s0::Error;
using StateSetPtr = std::shared_ptr<s0::adapters::StateSet>;
using LoraPtr = std::shared_ptr<s0::adapters::LoraSet>;
using OffsetPtr = std::shared_ptr<s0::adapters::OffsetSet>;

std::string need_path(const py::handle& o, const char* what) {
  auto p = path_like(o);
  if (!p) throw Error(std::string(what) + " must be a path (str or os.PathLike)");
  return *p;
}

// A state for `layer` of `set` from an array: shape and finiteness checked.
s0::Tensor checked_state(const s0::adapters::StateSet& set, int64_t layer, const py::handle& a) {
  s0::Tensor t = float_tensor(a);
  if (!set.state_shape.empty() && t.sizes().vec() != set.state_shape) {
    std::string want, got;
    for (auto d : set.state_shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
    for (auto d : t.sizes()) got += (got.empty() ? "" : ", ") + std::to_string(d);
    throw Error("layer " + std::to_string(layer) + ": expected a state of shape [" + want +
                "], got [" + got + "]");
  }
  if (!set.recurrent_layers.empty() &&
      std::find(set.recurrent_layers.begin(), set.recurrent_layers.end(), layer) ==
          set.recurrent_layers.end())
    throw Error("layer " + std::to_string(layer) + " is not a recurrent layer of this state set");
  s0::adapters::require_finite(t, "layer " + std::to_string(layer));
  return t;
}

}  // namespace

void bind_states(py::module_& mod) {
  py::class_<s0::adapters::StateSet, StateSetPtr>(
      mod, "StateSet",
      "An S0 state set: one float32 initial state per recurrent layer, in the reference library's "
      "layout "
      "(states.safetensors, config.json, meta.json)")
      .def_static(
          "load",
          [](const py::object& dir, const py::object& model) {
            const std::string d = need_path(dir, "dir");
            ModelPtr m = model.is_none() ? nullptr : model.cast<ModelPtr>();
            Released r;
            if (!m)
              return std::make_shared<s0::adapters::StateSet>(s0::adapters::load_state_set(d));
            return std::make_shared<s0::adapters::StateSet>(
                s0::adapters::load_state_set(d, *m->lm));
          },
          py::arg("dir"), py::arg("model") = py::none(),
          "Reads a state-set directory (checked against `model` when given)")
      .def_static(
          "zeros",
          [](const ModelPtr& m) {
            auto s = std::make_shared<s0::adapters::StateSet>();
            s->arch = m->lm->recurrent_arch();
            s->state_shape = m->lm->state_shape();
            s->recurrent_layers = m->lm->recurrent_layers();
            return s;
          },
          py::arg("model"),
          "An empty (all-zero) state set for `model`'s recurrent layers; fill it with set[layer] = "
          "array")
      .def_static(
          "from_arrays",
          [](const ModelPtr& m, const py::dict& arrays, const py::object& alpha, bool normalize) {
            auto s = std::make_shared<s0::adapters::StateSet>();
            s->arch = m->lm->recurrent_arch();
            s->state_shape = m->lm->state_shape();
            s->recurrent_layers = m->lm->recurrent_layers();
            for (auto [k, v] : arrays) {
              const int64_t l = k.cast<int64_t>();
              s->states[l] = checked_state(*s, l, v);
            }
            s->config["alpha"] =
                alpha.is_none() ? nlohmann::json(nullptr) : nlohmann::json(alpha.cast<double>());
            s->config["normalize"] = normalize;
            return s;
          },
          py::arg("model"), py::arg("arrays"), py::arg("alpha") = py::none(),
          py::arg("normalize") = false,
          "A state set for `model` from {layer: array} (copied, float32)")
      .def(
          "save",
          [](const s0::adapters::StateSet& s, const py::object& dir) {
            const std::string d = need_path(dir, "dir");
            Released r;
            s0::adapters::save_state_set(d, s);
          },
          py::arg("dir"), "Writes the reference layout to `dir` (atomically per file)")
      .def(
          "inspect",
          [](const s0::adapters::StateSet& s, const std::string& dir) {
            return to_py(s0::adapters::inspect_json(s, dir));
          },
          py::arg("dir") = "", "What `s0 states inspect` prints, as a dict")
      .def_readonly("arch", &s0::adapters::StateSet::arch)
      .def_readonly("state_shape", &s0::adapters::StateSet::state_shape)
      .def_readonly("recurrent_layers", &s0::adapters::StateSet::recurrent_layers)
      .def_property_readonly(
          "layers",
          [](const s0::adapters::StateSet& s) {
            std::vector<int64_t> l;
            for (const auto& [k, v] : s.states) l.push_back(k);
            return l;
          },
          "Layers holding a (non-zero) state")
      .def_property(
          "alpha", [](const s0::adapters::StateSet& s) { return s.alpha(); },
          [](s0::adapters::StateSet& s, const py::object& a) {
            if (a.is_none()) {
              s.config["alpha"] = nullptr;
              return;
            }
            const double v = a.cast<double>();
            if (!std::isfinite(v)) throw Error("alpha must be a finite number");
            s.config["alpha"] = v;
          },
          "Inference scale (None sets the architecture default: 0.07 GatedDeltaNet, 0.65 Mamba-2)")
      .def_property(
          "normalize", [](const s0::adapters::StateSet& s) { return s.normalize(); },
          [](s0::adapters::StateSet& s, bool v) { s.config["normalize"] = v; },
          "Inject alpha * S / ||S|| instead of alpha * S")
      .def_property_readonly("config",
                             [](const s0::adapters::StateSet& s) { return to_py(s.config); })
      .def_property_readonly("num_bytes", &s0::adapters::StateSet::num_bytes)
      .def(
          "__getitem__",
          [](const s0::adapters::StateSet& s, int64_t layer) {
            auto it = s.states.find(layer);
            if (it != s.states.end()) return to_numpy(it->second, /*writeable=*/false);
            if (std::find(s.recurrent_layers.begin(), s.recurrent_layers.end(), layer) !=
                s.recurrent_layers.end())
              return to_numpy(at::zeros(s.state_shape, at::kFloat), false);
            throw py::key_error("layer " + std::to_string(layer) +
                                " is not a recurrent layer of this state set");
          },
          py::arg("layer"),
          "The unscaled state of `layer` (a read-only float32 array sharing the set's memory)")
      .def(
          "__setitem__",
          [](s0::adapters::StateSet& s, int64_t layer, const py::object& a) {
            s.states[layer] = checked_state(s, layer, a);
          },
          py::arg("layer"), py::arg("array"),
          "Replaces the state of `layer` (copied, float32; shape and finiteness checked)")
      .def("__contains__",
           [](const s0::adapters::StateSet& s, int64_t l) { return s.states.count(l) > 0; })
      .def("__len__", [](const s0::adapters::StateSet& s) { return s.states.size(); })
      .def_property_readonly(
          "states",
          [](const s0::adapters::StateSet& s) {
            py::dict d;
            for (const auto& [l, t] : s.states) d[py::int_(l)] = to_numpy(t, false);
            return d;
          },
          "{layer: unscaled state} (read-only arrays sharing the set's memory)")
      .def(
          "scaled",
          [](const s0::adapters::StateSet& s, const py::object& alpha) {
            std::optional<double> a;
            if (!alpha.is_none()) a = alpha.cast<double>();
            py::dict d;
            for (const auto& [l, t] : s.scaled(a)) d[py::int_(l)] = to_numpy(t);
            return d;
          },
          py::arg("alpha") = py::none(),
          "{layer: the state injected at inference} (alpha * S, or normalised)")
      .def("__repr__", [](const s0::adapters::StateSet& s) {
        return "<s0.StateSet " + s.arch + ", " + std::to_string(s.states.size()) +
               " layers, alpha " + std::to_string(s.alpha()) + ">";
      });

  py::class_<s0::adapters::LoraSet, LoraPtr>(mod, "Lora",
                                             "A LoRA adapter (Hugging Face PEFT layout)")
      .def_static(
          "load",
          [](const py::object& dir, const py::object& model) {
            const std::string d = need_path(dir, "dir");
            ModelPtr m = model.is_none() ? nullptr : model.cast<ModelPtr>();
            Released r;
            if (!m) return std::make_shared<s0::adapters::LoraSet>(s0::adapters::load_lora(d));
            return std::make_shared<s0::adapters::LoraSet>(s0::adapters::load_lora(d, *m->lm));
          },
          py::arg("dir"), py::arg("model") = py::none())
      .def(
          "save",
          [](const s0::adapters::LoraSet& s, const py::object& dir,
             const std::string& decoder_prefix) {
            const std::string d = need_path(dir, "dir");
            Released r;
            s0::adapters::save_lora(d, s, decoder_prefix);
          },
          py::arg("dir"), py::arg("decoder_prefix") = "model.")
      .def(
          "inspect",
          [](const s0::adapters::LoraSet& s, const std::string& dir) {
            return to_py(s0::adapters::inspect_json(s, dir));
          },
          py::arg("dir") = "", "What `s0 lora inspect` prints, as a dict")
      .def_property_readonly("r", [](const s0::adapters::LoraSet& s) { return s.config.r; })
      .def_property_readonly("lora_alpha",
                             [](const s0::adapters::LoraSet& s) { return s.config.lora_alpha; })
      .def_property_readonly("scale",
                             [](const s0::adapters::LoraSet& s) { return s.config.scale(); })
      .def_property_readonly("target_modules",
                             [](const s0::adapters::LoraSet& s) { return s.config.target_modules; })
      .def_property_readonly("num_params", &s0::adapters::LoraSet::num_params)
      .def_property_readonly("num_bytes", &s0::adapters::LoraSet::num_bytes)
      .def_property_readonly(
          "modules",
          [](const s0::adapters::LoraSet& s) {
            py::dict d;
            for (const auto& [name, f] : s.modules)
              d[py::str(name)] = py::make_tuple(to_numpy(f.A, false), to_numpy(f.B, false));
            return d;
          },
          "{module name: (A [r, in], B [out, r])} (read-only arrays)");

  py::class_<s0::adapters::OffsetSet, OffsetPtr>(mod, "StateOffset",
                                                 "A state offset (one tensor per recurrent layer)")
      .def_static(
          "load",
          [](const py::object& dir, const py::object& model) {
            const std::string d = need_path(dir, "dir");
            ModelPtr m = model.is_none() ? nullptr : model.cast<ModelPtr>();
            Released r;
            if (!m)
              return std::make_shared<s0::adapters::OffsetSet>(s0::adapters::load_offset_set(d));
            return std::make_shared<s0::adapters::OffsetSet>(
                s0::adapters::load_offset_set(d, *m->lm));
          },
          py::arg("dir"), py::arg("model") = py::none())
      .def(
          "save",
          [](const s0::adapters::OffsetSet& s, const py::object& dir) {
            const std::string d = need_path(dir, "dir");
            Released r;
            s0::adapters::save_offset_set(d, s);
          },
          py::arg("dir"))
      .def_readonly("arch", &s0::adapters::OffsetSet::arch)
      .def_readonly("state_shape", &s0::adapters::OffsetSet::state_shape)
      .def_property_readonly("scale", &s0::adapters::OffsetSet::scale)
      .def_property_readonly("num_params", &s0::adapters::OffsetSet::num_params)
      .def_property_readonly("num_bytes", &s0::adapters::OffsetSet::num_bytes)
      .def_property_readonly("offsets", [](const s0::adapters::OffsetSet& s) {
        py::dict d;
        for (const auto& [l, t] : s.offsets) d[py::int_(l)] = to_numpy(t, false);
        return d;
      });
}

}  // namespace s0py
