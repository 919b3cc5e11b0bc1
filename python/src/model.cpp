// s0.Model: load, tokenize/detokenize, apply_chat_template, logits, generate (lists or a
// streaming iterator), activate/deactivate.
#include <deque>

#include "common.h"
#include "s0/adapters/lora.h"
#include "s0/adapters/stack.h"
#include "s0/adapters/state_offset.h"
#include "s0/generate/engine.h"
#include "s0/generate/generate.h"
#include "s0/generate/prompting.h"
#include "s0/models/init_model.h"

namespace s0py {

namespace {

using s0::Error;
using AdapterPtr = std::shared_ptr<const s0::models::Adapter>;

// The adapters a call names (each a directory or a loaded object), stacked in the CLI's order
// (states, LoRA, offset); none named: what activate() attached.
AdapterPtr resolve_adapters(Model& m, const py::object& states, const py::object& alpha,
                            const py::object& lora, const py::object& offset) {
  std::optional<double> a;
  if (!alpha.is_none()) a = alpha.cast<double>();
  if (states.is_none() && lora.is_none() && offset.is_none()) {
    if (a) throw Error("alpha needs states");
    return m.active;
  }
  std::vector<AdapterPtr> attached;
  if (auto dir = path_like(states)) {
    attached.push_back(s0::adapters::load_state_set(*dir, *m.lm).adapter(a));
  } else if (!states.is_none()) {
    auto set = states.cast<std::shared_ptr<s0::adapters::StateSet>>();
    attached.push_back(set->adapter(a));
  } else if (a) {
    throw Error("alpha needs states");
  }
  if (auto dir = path_like(lora)) {
    attached.push_back(s0::adapters::load_lora(*dir, *m.lm).adapter());
  } else if (!lora.is_none()) {
    auto set = lora.cast<std::shared_ptr<s0::adapters::LoraSet>>();
    s0::adapters::check_lora(*set, *m.lm, "lora");
    attached.push_back(set->adapter());
  }
  if (auto dir = path_like(offset)) {
    attached.push_back(s0::adapters::load_offset_set(*dir, *m.lm).adapter());
  } else if (!offset.is_none()) {
    attached.push_back(offset.cast<std::shared_ptr<s0::adapters::OffsetSet>>()->adapter());
  }
  return s0::adapters::stack(attached);
}

std::vector<int64_t> id_list(const py::handle& o, const char* what) {
  if (py::isinstance<py::str>(o))
    throw Error(std::string(what) + " must be a list of token ids, not a str");
  std::vector<int64_t> ids;
  for (auto x : o) ids.push_back(x.cast<int64_t>());
  return ids;
}

// A list of prompts in the CLI's order: every id prompt, then every text prompt. `single`
// tells whether the caller gave one prompt (not a list), which returns one result.
struct Prompts {
  std::vector<std::vector<int64_t>> ids;
  bool single = false, text = false;
};

Prompts make_prompts(Model& m, const py::object& prompt, const py::object& prompt_ids, bool chat,
                     bool thinking) {
  Prompts p;
  int given = 0;
  if (!prompt_ids.is_none()) {
    bool nested = false;
    for (auto x : prompt_ids) {
      nested =
          !py::isinstance<py::int_>(x) && py::hasattr(x, "__iter__") && !py::isinstance<py::str>(x);
      break;
    }
    if (nested) {
      for (auto x : prompt_ids) p.ids.push_back(id_list(x, "prompt_ids"));
    } else {
      p.ids.push_back(id_list(prompt_ids, "prompt_ids"));
      p.single = true;
    }
    ++given;
  }
  if (!prompt.is_none()) {
    const s0::text::ChatTemplate* tmpl = chat ? &m.chat_template() : nullptr;
    if (py::isinstance<py::str>(prompt)) {
      p.ids.push_back(
          s0::generate::encode_prompt(m.tokenizer(), tmpl, prompt.cast<std::string>(), thinking));
      p.single = true;
    } else {
      for (auto x : prompt) {
        if (!py::isinstance<py::str>(x)) throw Error("prompt must be a str or a list of str");
        p.ids.push_back(
            s0::generate::encode_prompt(m.tokenizer(), tmpl, x.cast<std::string>(), thinking));
      }
    }
    p.text = true;
    ++given;
  } else if (chat) {
    throw Error("chat applies to prompt text");
  }
  if (given == 0) throw Error("give a prompt (text) or prompt_ids");
  if (given == 2) p.single = false;
  for (const auto& ids : p.ids) {
    if (ids.empty()) throw Error("a prompt must have at least one token");
    s0::generate::check_prompt_ids(*m.lm, ids, "prompt_ids");
  }
  return p;
}

s0::generate::GenerateOptions make_options(Model& m, int64_t max_new_tokens, double temperature,
                                           int64_t top_k, double top_p, uint64_t seed,
                                           const py::object& stop, bool with_text) {
  s0::generate::GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  opt.sampling = {temperature, top_k, top_p, seed};
  if (!stop.is_none()) {
    if (py::isinstance<py::str>(stop))
      opt.stop_strings.push_back(stop.cast<std::string>());
    else
      for (auto s : stop) opt.stop_strings.push_back(s.cast<std::string>());
  }
  if (with_text || !opt.stop_strings.empty()) opt.tokenizer = &m.tokenizer();
  return opt;
}

// Streaming: one request on its own engine; each next() runs engine steps (GIL released,
// the model's mutex held) until the sequence produces something.
class Stream {
 public:
  Stream(ModelPtr model, std::vector<int64_t> prompt, const s0::generate::GenerateOptions& opt,
         AdapterPtr adapter)
      : model_(std::move(model)), tok_(opt.tokenizer) {
    {  // as generate() (a train() lays the weights back): once per stream, not per step
      Released r;
      std::lock_guard<std::mutex> lock(model_->mu);
      s0::models::use_generation_layout(*model_->lm);
    }
    s0::generate::EngineOptions eo;
    eo.max_batch = 1;
    eo.prefill_chunk = opt.prefill_chunk;
    if (tok_) eo.detokenizer = s0::generate::detokenizer_for(*tok_);
    engine_ = std::make_unique<s0::generate::Engine>(*model_->lm, eo);
    s0::generate::Request r;
    r.prompt = std::move(prompt);
    r.adapter = std::move(adapter);
    r.sampling = opt.sampling;
    r.max_new_tokens = opt.max_new_tokens;
    r.stop_strings = opt.stop_strings;
    engine_->submit(std::move(r));
  }

  py::dict next() {
    while (pending_.empty()) {
      if (done_) throw py::stop_iteration();
      std::vector<s0::generate::Event> events;
      {
        Released r;
        std::lock_guard<std::mutex> lock(model_->mu);
        s0::poll_interrupt();
        engine_->step(events);
      }
      for (auto& e : events) pending_.push_back(std::move(e));
      if (engine_->idle()) done_ = true;
    }
    s0::generate::Event e = std::move(pending_.front());
    pending_.pop_front();
    if (e.finished && e.finish_reason == "error") {
      done_ = true;
      pending_.clear();
      throw Error(e.error);
    }
    py::dict d;
    d["token"] = e.token >= 0 ? py::object(py::int_(e.token)) : py::object(py::none());
    if (tok_) d["text"] = py::str(e.text);
    d["finished"] = e.finished;
    d["finish_reason"] = e.finished ? py::object(py::str(e.finish_reason)) : py::object(py::none());
    return d;
  }

  void close() {
    done_ = true;
    pending_.clear();
    engine_.reset();
  }

 private:
  ModelPtr model_;
  const s0::text::Tokenizer* tok_;
  std::unique_ptr<s0::generate::Engine> engine_;
  std::deque<s0::generate::Event> pending_;
  bool done_ = false;
};

py::object generate(const ModelPtr& mp, const py::object& prompt, const py::object& prompt_ids,
                    bool chat, bool thinking, const py::object& states, const py::object& alpha,
                    const py::object& lora, const py::object& offset, int64_t max_new_tokens,
                    double temperature, int64_t top_k, double top_p, uint64_t seed,
                    const py::object& stop, bool stream, const py::object& progress) {
  Model& m = *mp;
  Prompts p = make_prompts(m, prompt, prompt_ids, chat, thinking);
  auto opt = make_options(m, max_new_tokens, temperature, top_k, top_p, seed, stop,
                          p.text || m.has_tokenizer());
  opt.adapter = resolve_adapters(m, states, alpha, lora, offset);
  if (stream) {
    if (p.ids.size() != 1) throw Error("stream=True takes one prompt");
    if (max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
    return py::cast(std::make_shared<Stream>(mp, p.ids[0], opt, opt.adapter));
  }
  if (!progress.is_none())
    opt.on_token = [&progress](size_t i, int64_t tok) {
      py::gil_scoped_acquire gil;
      progress(i, tok);
    };
  std::vector<s0::generate::Generation> gens;
  {
    Released r;
    std::lock_guard<std::mutex> lock(m.mu);
    s0::models::use_generation_layout(*m.lm);  // after a train() (which lays the weights back)
    gens = s0::generate::generate(*m.lm, p.ids, opt);
  }
  py::list out;
  for (size_t i = 0; i < gens.size(); ++i)
    out.append(to_py(s0::generate::generation_record(i, p.ids[i].size(), gens[i], opt.tokenizer)));
  if (p.single) return out[0];
  return out;
}

}  // namespace

void bind_model(py::module_& mod) {
  mod.def(
      "init_model",
      [](const py::object& out, const std::string& arch, const std::string& preset, uint64_t seed,
         const std::string& dtype, double shard_gb) {
        auto dir = path_like(out);
        if (!dir) throw Error("out must be a path");
        s0::models::InitOptions opt;
        opt.seed = seed;
        opt.dtype = dtype;
        opt.shard_bytes = static_cast<uint64_t>(shard_gb * 1e9);
        Released r;
        return s0::models::write_random_model(*dir, arch, preset, opt);
      },
      py::arg("out"), py::kw_only(), py::arg("arch") = "qwen35", py::arg("preset") = "tiny",
      py::arg("seed") = 0, py::arg("dtype") = "bf16", py::arg("shard_gb") = 0.0,
      "`s0 init-model`: writes a model directory with random weights (and a tokenizer and chat "
      "template); "
      "returns the parameter count");
  py::class_<Stream, std::shared_ptr<Stream>>(
      mod, "GenerationStream",
      "Iterator over one generation: dicts {token, text, finished, "
      "finish_reason}, one per generated token (the last one has "
      "finished=True)")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Stream::next)
      .def("close", &Stream::close, "Stop generating (the iterator ends)");

  py::class_<Model, ModelPtr>(
      mod, "Model", "A model directory loaded for generation and training (weights frozen)")
      .def_static(
          "load",
          [](const std::string& dir, const std::string& dtype, int threads) {
            auto m = std::make_shared<Model>();
            m->dir = dir;
            const auto dt = s0::models::parse_dtype(dtype);
            m->dtype = s0::models::dtype_str(dt);
            {
              Released r;
              s0::models::configure_runtime(threads);
              m->lm = s0::models::load_model(dir, dt);
              s0::models::use_generation_layout(*m->lm);  // k-pairs where they pay (CPUs without AMX)
            }
            return m;
          },
          py::arg("dir"), py::arg("dtype") = "bf16", py::arg("threads") = 0,
          "Loads a Hugging Face model directory in dtype 'bf16' or 'f32'. threads: intra-op "
          "threads "
          "for the whole process (0 = all cores), as the CLI's --threads.")
      .def_readonly("dir", &Model::dir)
      .def_readonly("dtype", &Model::dtype)
      .def_property_readonly("model_type", [](Model& m) { return m.lm->model_type(); })
      .def_property_readonly("recurrent_arch", [](Model& m) { return m.lm->recurrent_arch(); })
      .def_property_readonly("vocab_size", [](Model& m) { return m.lm->vocab_size(); })
      .def_property_readonly("num_layers", [](Model& m) { return m.lm->num_layers(); })
      .def_property_readonly("recurrent_layers", [](Model& m) { return m.lm->recurrent_layers(); })
      .def_property_readonly("state_shape", [](Model& m) { return m.lm->state_shape(); })
      .def_property_readonly("eos_token_ids", [](Model& m) { return m.lm->eos_token_ids(); })
      .def(
          "tokenize",
          [](Model& m, const std::string& text, bool chat, bool thinking, bool add_special_tokens) {
            std::string t = text;
            if (chat)
              t = m.chat_template().render({{"user", text}}, {true, thinking, std::nullopt});
            return m.tokenizer().encode(t, add_special_tokens);
          },
          py::arg("text"), py::arg("chat") = false, py::arg("thinking") = false,
          py::arg("add_special_tokens") = true,
          "Text -> token ids (as `s0 tokenize`; chat: as one user turn through the chat template)")
      .def(
          "detokenize",
          [](Model& m, const py::object& ids, bool skip_special_tokens) {
            auto v = id_list(ids, "ids");
            const auto& tok = m.tokenizer();
            for (auto id : v)
              if (id < 0 || id >= tok.vocab_size())
                throw Error("ids: token id " + std::to_string(id) + " out of range [0, " +
                            std::to_string(tok.vocab_size()) + ")");
            return tok.decode(v, skip_special_tokens);
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false,
          "Token ids -> text (as `s0 detokenize`)")
      .def(
          "apply_chat_template",
          [](Model& m, const py::object& messages, bool add_generation_prompt,
             const py::object& enable_thinking) {
            std::vector<s0::text::ChatMessage> msgs;
            for (auto x : messages) {
              if (!py::isinstance<py::dict>(x))
                throw Error("messages must be dicts with 'role' and 'content'");
              auto d = x.cast<py::dict>();
              if (!d.contains("role") || !d.contains("content") ||
                  !py::isinstance<py::str>(d["role"]) || !py::isinstance<py::str>(d["content"]))
                throw Error("every message needs str 'role' and 'content'");
              msgs.push_back({d["role"].cast<std::string>(), d["content"].cast<std::string>()});
            }
            s0::text::ChatOptions o;
            o.add_generation_prompt = add_generation_prompt;
            if (!enable_thinking.is_none()) o.enable_thinking = enable_thinking.cast<bool>();
            return m.chat_template().render(msgs, o);
          },
          py::arg("messages"), py::arg("add_generation_prompt") = true,
          py::arg("enable_thinking") = py::none(),
          "Renders messages [{'role', 'content'}, ...] with the model's chat template (as "
          "transformers does)")
      .def(
          "logits",
          [](Model& m, const py::object& ids, const py::object& states, const py::object& alpha,
             const py::object& lora, const py::object& offset) {
            auto v = id_list(ids, "ids");
            if (v.empty()) throw Error("ids: at least one token id");
            s0::generate::check_prompt_ids(*m.lm, v, "ids");
            auto adapter = resolve_adapters(m, states, alpha, lora, offset);
            s0::Tensor out;
            {
              Released r;
              std::lock_guard<std::mutex> lock(m.mu);
              s0::NoGrad ng;
              auto cache = m.lm->new_cache(1, adapter);
              out = m.lm->forward(at::tensor(v, at::kLong).view({1, -1}), cache).squeeze(0);
            }
            return to_numpy(out);
          },
          py::arg("ids"), py::arg("states") = py::none(), py::arg("alpha") = py::none(),
          py::arg("lora") = py::none(), py::arg("offset") = py::none(),
          "Next-token logits [len(ids), vocab] (float32 NumPy) for a sequence starting from the "
          "adapters given "
          "(default: the active ones)")
      .def("generate", &generate, py::arg("prompt") = py::none(), py::kw_only(),
           py::arg("prompt_ids") = py::none(), py::arg("chat") = false, py::arg("thinking") = false,
           py::arg("states") = py::none(), py::arg("alpha") = py::none(),
           py::arg("lora") = py::none(), py::arg("offset") = py::none(),
           py::arg("max_new_tokens") = 32, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop") = py::none(),
           py::arg("stream") = false, py::arg("progress") = py::none(),
           "Generates as `s0 generate` does, with its options. prompt: a str or a list of str; "
           "prompt_ids: a list "
           "of ids or a list of lists. Returns the CLI's record {prompt, tokens, finish_reason, "
           "text, ...} (a list "
           "for a list of prompts; prompt i samples with seed + i), or with stream=True an "
           "iterator of "
           "{token, text, finished, finish_reason}. states/lora/offset: directories or loaded "
           "objects "
           "(default: what activate() attached). progress(prompt_index, token) is called for every "
           "token.")
      .def(
          "activate",
          [](Model& m, const py::object& states, const py::object& alpha, const py::object& lora,
             const py::object& offset) {
            if (states.is_none() && lora.is_none() && offset.is_none())
              throw Error("activate: give states, lora or offset");
            m.active = resolve_adapters(m, states, alpha, lora, offset);
            m.active_obj = states.is_none() ? (lora.is_none() ? offset : lora) : states;
          },
          py::arg("states") = py::none(), py::arg("alpha") = py::none(),
          py::arg("lora") = py::none(), py::arg("offset") = py::none(),
          "Attaches adapters (a StateSet or its directory, a LoRA, a state offset) to every later "
          "generate/logits "
          "call that names none")
      .def(
          "deactivate",
          [](Model& m) {
            m.active.reset();
            m.active_obj = py::none();
          },
          "Back to the base model")
      .def_property_readonly("active", [](Model& m) { return m.active_obj; })
      .def("__repr__", [](Model& m) {
        return "<s0.Model " + m.lm->model_type() + " '" + m.dir + "' " + m.dtype + ">";
      });
}

}  // namespace s0py
