// s0.Trainer (S0Trainer-compatible): the reference library's config names and defaults,
// train(examples) with (text, prompt_len) pairs or {"prompt", "completion"} / {"messages"}
// dicts, activate/deactivate, save/load in the reference layout; the baselines (LoRA, state
// offset) through method=.
#include <filesystem>
#include <random>

#include "common.h"
#include "s0/adapters/lora.h"
#include "s0/adapters/state_offset.h"
#include "s0/train/baselines.h"
#include "s0/train/data.h"
#include "s0/train/trainer.h"

namespace s0py {

namespace {

using s0::Error;
namespace fs = std::filesystem;

// The settings of a run: the reference's seven keys (n_steps, lr, l2_lambda, alpha, normalize,
// grad_clip, max_length), s0's own (layers, alpha_in_training, seed, batch, recompute,
// keep_projections) and the baselines' (rank, lora_alpha, targets). The CLI's flag names
// (steps, l2, clip) are accepted as aliases.
struct Settings {
  std::string method = "s0";
  s0::train::TrainConfig cfg;
  bool l2_given = false;
  s0::adapters::LoraConfig lora;
  double lora_alpha = -1;
  nlohmann::json given = nlohmann::json::object();  // what the caller set (reported by .config)
};

void apply(Settings& s, const std::string& key, const py::handle& v) {
  auto num = [&]() { return v.cast<double>(); };
  auto integer = [&]() { return v.cast<int64_t>(); };
  if (key == "n_steps" || key == "steps")
    s.cfg.steps = integer();
  else if (key == "lr")
    s.cfg.lr = num();
  else if (key == "l2_lambda" || key == "l2")
    s.cfg.l2 = num(), s.l2_given = true;
  else if (key == "alpha")
    s.cfg.alpha = v.is_none() ? std::nullopt : std::optional<double>(num());
  else if (key == "normalize")
    s.cfg.normalize = v.cast<bool>();
  else if (key == "grad_clip" || key == "clip")
    s.cfg.grad_clip = num();
  else if (key == "max_length")
    s.cfg.max_length = integer();
  else if (key == "layers")
    s.cfg.layers = v.cast<std::string>();
  else if (key == "alpha_in_training")
    s.cfg.alpha_in_training = v.cast<bool>();
  else if (key == "seed")
    s.cfg.seed = v.cast<uint64_t>();
  else if (key == "batch")
    s.cfg.batch = integer();
  else if (key == "recompute")
    s.cfg.recompute = v.cast<bool>();
  else if (key == "keep_projections")
    s.cfg.keep_projections = v.cast<bool>();
  else if (key == "rank")
    s.lora.r = integer();
  else if (key == "lora_alpha")
    s.lora_alpha = num();
  else if (key == "targets") {
    s.lora.target_modules.clear();
    if (py::isinstance<py::str>(v)) {
      const std::string t = v.cast<std::string>();
      for (size_t a = 0; a < t.size();) {
        size_t b = t.find(',', a);
        if (b == std::string::npos) b = t.size();
        if (b > a) s.lora.target_modules.push_back(t.substr(a, b - a));
        a = b + 1;
      }
    } else if (!v.is_none()) {
      for (auto x : v) s.lora.target_modules.push_back(x.cast<std::string>());
    }
  } else {
    throw Error(
        "unknown training setting '" + key +
        "' (known: n_steps, lr, l2_lambda, alpha, normalize, grad_clip, max_length, layers, "
        "alpha_in_training, seed, batch, recompute, keep_projections, rank, lora_alpha, targets)");
  }
  s.given[key] = to_json(v);
}

struct TempDir {
  std::string path;
  TempDir() {
    std::random_device rd;
    for (int i = 0; i < 100 && path.empty(); ++i) {
      fs::path p = fs::temp_directory_path() / ("s0-train-" + std::to_string(rd()));
      if (fs::create_directory(p)) path = p.string();
    }
    if (path.empty()) throw Error("cannot create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

class Trainer {
 public:
  Trainer(ModelPtr model, const py::object& config, const std::string& method, bool chat,
          const py::object& out, const py::kwargs& kwargs)
      : model_(std::move(model)), chat_(chat) {
    if (method != "s0" && method != "lora" && method != "offset")
      throw Error("method must be 's0', 'lora' or 'offset', not '" + method + "'");
    s_.method = method;
    if (!config.is_none()) {
      py::dict d = py::hasattr(config, "items") ? config.cast<py::dict>()
                                                : config.attr("__dict__").cast<py::dict>();
      for (auto [k, v] : d) apply(s_, k.cast<std::string>(), v);
    }
    for (auto [k, v] : kwargs) apply(s_, k.cast<std::string>(), v);
    if (method != "s0" && !s_.l2_given) s_.cfg.l2 = 0;  // the baselines' own default (as the CLI)
    if (method == "lora") {  // the paper's LoRA schedule for what the caller left unset (as the CLI)
      const auto paper = s0::adapters::paper_lora_schedule(*model_->lm);
      if (!s_.given.contains("steps") && !s_.given.contains("n_steps")) s_.cfg.steps = paper.steps;
      if (!s_.given.contains("batch")) s_.cfg.batch = paper.batch;
      if (!s_.given.contains("lr")) s_.cfg.lr = paper.lr;
    }
    if (auto p = path_like(out))
      out_ = *p;
    else if (!out.is_none())
      throw Error("out must be a path");
    // Refuse a bad layer spec now rather than at train().
    if (method != "lora")
      s0::adapters::select_layers(s_.cfg.layers, model_->lm->recurrent_layers());
  }

  py::dict train(const py::object& examples, bool resume, const py::object& progress) {
    Model& m = *model_;
    const s0::text::ChatTemplate* chat = chat_ ? &m.chat_template() : nullptr;
    s0::train::DataOptions dopt;
    dopt.max_length = s_.cfg.max_length;
    if (dopt.max_length < 2) throw Error("max_length must be at least 2");
    std::vector<s0::train::Example> data;
    int64_t truncated = 0, i = 0;
    for (auto x : examples) {
      const std::string where = "example " + std::to_string(i++);
      bool cut = false;
      if (py::isinstance<py::dict>(x)) {
        data.push_back(
            s0::train::example_from_json(to_json(x), m.tokenizer(), chat, dopt, where, &cut));
      } else if ((py::isinstance<py::tuple>(x) || py::isinstance<py::list>(x)) && py::len(x) == 2 &&
                 py::isinstance<py::str>(x[py::int_(0)]) &&
                 py::isinstance<py::int_>(x[py::int_(1)])) {
        data.push_back(s0::train::example_from_text(x[py::int_(0)].cast<std::string>(),
                                                    x[py::int_(1)].cast<int64_t>(), m.tokenizer(),
                                                    dopt, where, &cut));
      } else {
        throw Error(where +
                    ": expected a (text, prompt_len) pair or a {\"prompt\", \"completion\"} dict");
      }
      truncated += cut ? 1 : 0;
    }
    if (data.empty()) throw Error("train: no examples");
    const auto num_examples = static_cast<int64_t>(data.size());
    std::optional<TempDir> tmp;
    std::string dir = out_;
    if (dir.empty()) {
      if (resume) throw Error("resume needs an output directory (out=...)");
      tmp.emplace();
      dir = tmp->path;
    }
    history_ = py::list();
    std::vector<nlohmann::json> steps;
    auto on_step = [&](const s0::train::StepReport& r) {
      steps.push_back(s0::train::to_json(r));
      if (!progress.is_none()) {
        py::gil_scoped_acquire gil;
        progress(to_py(steps.back()));
      }
    };
    auto cfg = s_.cfg;
    py::dict result;
    {
      Released rel;
      std::lock_guard<std::mutex> lock(m.mu);
      if (s_.method == "s0") {
        s0::train::Trainer t(*m.lm, std::move(data), cfg);
        states_ = std::make_shared<s0::adapters::StateSet>(t.train(dir, resume, on_step));
      } else if (s_.method == "lora") {
        s0::adapters::LoraConfig lc = s_.lora;
        lc.lora_alpha = s_.lora_alpha > 0 ? s_.lora_alpha : 2.0 * static_cast<double>(lc.r);
        lc.base_model = m.dir;
        lora_ = std::make_shared<s0::adapters::LoraSet>(
            s0::train::train_lora(*m.lm, std::move(data), cfg, lc, dir, resume, on_step,
                                  s0::adapters::decoder_prefix(m.dir)));
      } else {
        offset_ = std::make_shared<s0::adapters::OffsetSet>(
            s0::train::train_offset(*m.lm, std::move(data), cfg, dir, resume, on_step));
      }
    }
    py::list hist;
    for (const auto& j : steps) hist.append(to_py(j));
    history_ = hist;
    nlohmann::json fl =
        states_ && s_.method == "s0" ? states_->config.value("final_loss", nlohmann::json())
        : s_.method == "lora"        ? lora_->s0_info.value("final_loss", nlohmann::json())
                                     : offset_->config.value("final_loss", nlohmann::json());
    result["final_loss"] = to_py(fl);
    // The reference's avg_state_norm: the mean Frobenius norm of the trained tensors per layer
    // (S0 states; for offsets the offsets; LoRA has none).
    double sum = 0;
    size_t n = 0;
    if (s_.method == "s0")
      for (const auto& [l, t] : states_->states) sum += t.norm().item<double>(), ++n;
    if (s_.method == "offset")
      for (const auto& [l, t] : offset_->offsets) sum += t.norm().item<double>(), ++n;
    result["avg_state_norm"] =
        s_.method == "lora" ? py::object(py::none()) : py::object(py::float_(n ? sum / n : 0.0));
    if (s_.method == "s0")
      result["layers"] =
          py::cast(s0::adapters::select_layers(cfg.layers, m.lm->recurrent_layers()));
    result["method"] = s_.method;
    result["steps"] = cfg.steps;
    result["num_examples"] = num_examples;
    result["truncated"] = truncated;
    result["out"] = out_.empty() ? py::object(py::none()) : py::object(py::str(out_));
    result["history"] = hist;
    return result;
  }

  py::object trained() const {
    if (states_) return py::cast(states_);
    if (lora_) return py::cast(lora_);
    if (offset_) return py::cast(offset_);
    return py::none();
  }

  void activate(const py::object& states, const py::object& alpha) {
    py::object what = states.is_none() ? trained() : states;
    if (what.is_none())
      throw Error(
          "activate: nothing trained or loaded yet (call train() or load(), or pass states)");
    py::object m = py::cast(model_);
    if (py::isinstance<s0::adapters::LoraSet>(what))
      m.attr("activate")(py::arg("lora") = what);
    else if (py::isinstance<s0::adapters::OffsetSet>(what))
      m.attr("activate")(py::arg("offset") = what);
    else
      m.attr("activate")(py::arg("states") = what, py::arg("alpha") = alpha);
  }

  void deactivate() { py::cast(model_).attr("deactivate")(); }

  void save(const py::object& dir) {
    auto d = path_like(dir);
    if (!d) throw Error("dir must be a path");
    if (states_) {
      Released r;
      s0::adapters::save_state_set(*d, *states_);
    } else if (lora_) {
      Released r;
      s0::adapters::save_lora(*d, *lora_, s0::adapters::decoder_prefix(model_->dir));
    } else if (offset_) {
      Released r;
      s0::adapters::save_offset_set(*d, *offset_);
    } else {
      throw Error("save: nothing trained or loaded yet");
    }
  }

  py::object load(const py::object& dir) {
    auto d = path_like(dir);
    if (!d) throw Error("dir must be a path");
    {
      Released r;
      if (s_.method == "lora")
        lora_ = std::make_shared<s0::adapters::LoraSet>(s0::adapters::load_lora(*d, *model_->lm));
      else if (s_.method == "offset")
        offset_ = std::make_shared<s0::adapters::OffsetSet>(
            s0::adapters::load_offset_set(*d, *model_->lm));
      else
        states_ =
            std::make_shared<s0::adapters::StateSet>(s0::adapters::load_state_set(*d, *model_->lm));
    }
    return trained();
  }

  py::dict config() const {
    const auto& c = s_.cfg;
    py::dict d;
    d["n_steps"] = c.steps;
    d["lr"] = c.lr;
    d["l2_lambda"] = c.l2;
    d["alpha"] = c.alpha ? py::object(py::float_(*c.alpha)) : py::object(py::none());
    d["normalize"] = c.normalize;
    d["grad_clip"] = c.grad_clip;
    d["max_length"] = c.max_length;
    d["layers"] = c.layers;
    d["alpha_in_training"] = c.alpha_in_training;
    d["seed"] = c.seed;
    d["batch"] = c.batch;
    d["recompute"] = c.recompute;
    d["keep_projections"] = c.keep_projections;
    d["method"] = s_.method;
    if (s_.method == "lora") {
      d["rank"] = s_.lora.r;
      d["lora_alpha"] = s_.lora_alpha > 0 ? s_.lora_alpha : 2.0 * static_cast<double>(s_.lora.r);
      d["targets"] = s_.lora.target_modules;
    }
    return d;
  }

  py::list history() const { return history_; }
  ModelPtr model() const { return model_; }

 private:
  ModelPtr model_;
  bool chat_;
  std::string out_;
  Settings s_;
  py::list history_;
  std::shared_ptr<s0::adapters::StateSet> states_;
  std::shared_ptr<s0::adapters::LoraSet> lora_;
  std::shared_ptr<s0::adapters::OffsetSet> offset_;
};

}  // namespace

void bind_train(py::module_& mod) {
  py::class_<Trainer, std::shared_ptr<Trainer>>(
      mod, "Trainer",
      "S0 training on a frozen model (the reference library's S0Trainer: n_steps=20, lr=1e-3, "
      "l2_lambda=5e-4, "
      "alpha=None, normalize=False, grad_clip=1.0, max_length=2048), or a baseline with "
      "method='lora'/'offset'")
      .def(py::init<ModelPtr, const py::object&, const std::string&, bool, const py::object&,
                    const py::kwargs&>(),
           py::arg("model"), py::arg("config") = py::none(), py::kw_only(),
           py::arg("method") = "s0", py::arg("chat") = false, py::arg("out") = py::none(),
           "config: a dict (or an object with those attributes) of settings; keyword arguments "
           "override it. "
           "chat: render {prompt, completion} dicts through the chat template (as `s0 train "
           "--chat`). out: "
           "checkpoint/output directory (default: a temporary one, removed after training).")
      .def("train", &Trainer::train, py::arg("examples"), py::kw_only(), py::arg("resume") = false,
           py::arg("progress") = py::none(),
           "Trains on examples: (text, prompt_len) pairs (prompt_len = prompt tokens of text, "
           "which is tokenized "
           "with special tokens) and/or {'prompt', 'completion'} / {'messages'} dicts (as JSONL "
           "lines). Returns "
           "{final_loss, avg_state_norm, history (one dict per step, as `s0 train` logs), ...}. "
           "progress(step_dict) "
           "is called after every step.")
      .def_property_readonly("states", &Trainer::trained,
                             "What was trained or loaded (StateSet, Lora or StateOffset)")
      .def_property_readonly("history", &Trainer::history)
      .def_property_readonly("config", &Trainer::config)
      .def_property_readonly("model", &Trainer::model)
      .def("activate", &Trainer::activate, py::arg("states") = py::none(),
           py::arg("alpha") = py::none(),
           "Attaches the trained (or given) states to the model: later generate/logits calls use "
           "them")
      .def("deactivate", &Trainer::deactivate, "Back to the base model")
      .def("save", &Trainer::save, py::arg("dir"),
           "Writes the trained adapter (state sets: the reference layout)")
      .def("load", &Trainer::load, py::arg("dir"),
           "Reads an adapter directory, checked against the model");
}

}  // namespace s0py
