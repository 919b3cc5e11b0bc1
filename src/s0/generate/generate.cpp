#include "s0/generate/generate.h"

#include <algorithm>
#include <chrono>

#include "s0/util/error.h"

namespace s0::generate {

namespace {
double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
// Whether `tok`, just appended to g.tokens, ends the generation (eos id or a stop string);
// sets the finish reason when it does.
bool ends_generation(Generation& g, int64_t tok, const std::vector<int64_t>& eos, const GenerateOptions& opt) {
  if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
    g.finish_reason = "eos";
    return true;
  }
  if (opt.stop_strings.empty()) return false;
  const std::string text = opt.decode(g.tokens);
  for (const auto& s : opt.stop_strings)
    if (!s.empty() && text.find(s) != std::string::npos) {
      g.finish_reason = "stop";
      return true;
    }
  return false;
}

}  // namespace

std::vector<Generation> generate(models::CausalLM& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& opt, const models::StateMap* states) {
  if (opt.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  if (!opt.stop_strings.empty() && !opt.decode)
    throw Error("stop strings need a tokenizer to decode the generated text");
  const std::vector<int64_t> eos = opt.eos_ids.empty() ? model.eos_token_ids() : opt.eos_ids;
  NoGrad no_grad;
  std::vector<Generation> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& prompt = prompts[i];
    if (prompt.empty()) throw Error("prompt " + std::to_string(i) + " is empty");
    Generation& g = out[i];
    g.finish_reason = "length";
    SamplingParams sp = opt.sampling;
    sp.seed += i;
    Sampler sampler(sp);
    models::Cache cache = model.new_cache(1, states);

    double t0 = now();
    Tensor ids = at::tensor(prompt, at::kLong).view({1, -1});
    Tensor logits = model.forward(ids, cache, /*last_only=*/true).to(at::kFloat).contiguous();
    g.prefill_seconds = now() - t0;
    t0 = now();
    Tensor step = at::empty({1, 1}, at::kLong);
    for (int64_t t = 0; t < opt.max_new_tokens; ++t) {
      int64_t tok = sampler.sample(logits.data_ptr<float>(), logits.size(-1));
      g.tokens.push_back(tok);
      if (opt.on_token) opt.on_token(i, tok);
      if (ends_generation(g, tok, eos, opt)) break;
      if (t + 1 == opt.max_new_tokens) break;
      step.fill_(tok);
      logits = model.forward(step, cache, true).to(at::kFloat).contiguous();
    }
    g.decode_seconds = now() - t0;
  }
  return out;
}

namespace {

// Keeps rows `idx` of every per-sequence tensor of the cache (all are batch-first).
void select_rows(models::Cache& cache, const Tensor& idx) {
  for (auto& lc : cache.layers)
    for (Tensor* t : {&lc.conv, &lc.state, &lc.k, &lc.v})
      if (t->defined()) *t = t->index_select(0, idx);
  cache.batch = idx.size(0);
}

}  // namespace

std::vector<Generation> sample_n(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                 const GenerateOptions& opt, const models::StateMap* states) {
  if (n < 1) throw Error("the number of samples must be >= 1");
  if (opt.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  if (prompt.empty()) throw Error("prompt is empty");
  if (!opt.stop_strings.empty() && !opt.decode)
    throw Error("stop strings need a tokenizer to decode the generated text");
  const std::vector<int64_t> eos = opt.eos_ids.empty() ? model.eos_token_ids() : opt.eos_ids;
  NoGrad no_grad;
  std::vector<Generation> out(static_cast<size_t>(n));
  std::vector<Sampler> samplers;
  for (int64_t i = 0; i < n; ++i) {
    SamplingParams sp = opt.sampling;
    sp.seed += static_cast<uint64_t>(i);
    samplers.emplace_back(sp);
    out[static_cast<size_t>(i)].finish_reason = "length";
  }
  double t0 = now();
  models::Cache cache = model.new_cache(1, states);
  Tensor ids = at::tensor(prompt, at::kLong).view({1, -1});
  Tensor logits = model.forward(ids, cache, /*last_only=*/true).to(at::kFloat).reshape({1, -1});
  select_rows(cache, at::zeros({n}, at::kLong));  // n copies of the prompt's cache
  logits = logits.expand({n, logits.size(1)}).contiguous();
  const double prefill = now() - t0;
  t0 = now();
  std::vector<int64_t> active(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) active[static_cast<size_t>(i)] = i;
  const int64_t V = logits.size(1);
  for (int64_t t = 0; t < opt.max_new_tokens && !active.empty(); ++t) {
    std::vector<int64_t> next, keep_rows, keep;
    const float* lp = logits.data_ptr<float>();
    for (size_t r = 0; r < active.size(); ++r) {
      const int64_t i = active[r];
      Generation& g = out[static_cast<size_t>(i)];
      int64_t tok = samplers[static_cast<size_t>(i)].sample(lp + static_cast<int64_t>(r) * V, V);
      g.tokens.push_back(tok);
      if (opt.on_token) opt.on_token(static_cast<size_t>(i), tok);
      if (!ends_generation(g, tok, eos, opt)) {
        keep_rows.push_back(static_cast<int64_t>(r));
        keep.push_back(i);
        next.push_back(tok);
      }
    }
    if (keep.empty() || t + 1 == opt.max_new_tokens) break;
    if (keep.size() != active.size()) select_rows(cache, at::tensor(keep_rows, at::kLong));
    active = std::move(keep);
    Tensor step = at::tensor(next, at::kLong).view({-1, 1});
    logits = model.forward(step, cache, true).to(at::kFloat).reshape({static_cast<int64_t>(active.size()), -1}).contiguous();
  }
  const double decode = now() - t0;
  for (auto& g : out) g.prefill_seconds = prefill, g.decode_seconds = decode;
  return out;
}

std::vector<Generation> generate_batched(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                        const GenerateOptions& opt, const models::StateMap* states, int64_t max_batch,
                                        const std::function<void(size_t, const Generation&)>& on_done) {
  if (opt.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  if (max_batch < 1) throw Error("max_batch must be >= 1");
  if (!opt.stop_strings.empty() && !opt.decode)
    throw Error("stop strings need a tokenizer to decode the generated text");
  for (size_t i = 0; i < prompts.size(); ++i)
    if (prompts[i].empty()) throw Error("prompt " + std::to_string(i) + " is empty");
  const std::vector<int64_t> eos = opt.eos_ids.empty() ? model.eos_token_ids() : opt.eos_ids;
  NoGrad no_grad;
  std::vector<Generation> out(prompts.size());
  struct Seq {
    size_t i;
    models::Cache cache;
    Sampler sampler;
    double t0;
  };
  std::vector<Seq> active;
  size_t next = 0;
  // Samples a token for sequence `s` from its logits row; true when the sequence is finished.
  auto take = [&](Seq& s, const float* row, int64_t V) {
    Generation& g = out[s.i];
    int64_t tok = s.sampler.sample(row, V);
    g.tokens.push_back(tok);
    if (opt.on_token) opt.on_token(s.i, tok);
    return ends_generation(g, tok, eos, opt) || static_cast<int64_t>(g.tokens.size()) >= opt.max_new_tokens;
  };
  auto finish = [&](Seq& s) {
    out[s.i].decode_seconds = now() - s.t0;
    if (on_done) on_done(s.i, out[s.i]);
  };
  for (;;) {
    // Admit (prefill) new prompts while there is room.
    while (static_cast<int64_t>(active.size()) < max_batch && next < prompts.size()) {
      const size_t i = next++;
      SamplingParams sp = opt.sampling;
      sp.seed += i;
      Seq s{i, model.new_cache(1, states), Sampler(sp), 0};
      Generation& g = out[i];
      g.finish_reason = "length";
      double t0 = now();
      Tensor logits = model.forward(at::tensor(prompts[i], at::kLong).view({1, -1}), s.cache, true)
                          .to(at::kFloat)
                          .contiguous();
      g.prefill_seconds = now() - t0;
      s.t0 = now();
      if (opt.max_new_tokens == 0 || take(s, logits.data_ptr<float>(), logits.size(-1))) {
        finish(s);
        continue;
      }
      active.push_back(std::move(s));
    }
    if (active.empty()) break;
    std::vector<int64_t> ids;
    std::vector<models::Cache*> caches;
    for (auto& s : active) ids.push_back(out[s.i].tokens.back()), caches.push_back(&s.cache);
    Tensor logits = model.decode_step(at::tensor(ids, at::kLong), caches).to(at::kFloat).contiguous();
    const int64_t V = logits.size(-1);
    std::vector<Seq> still;
    for (size_t r = 0; r < active.size(); ++r) {
      if (take(active[r], logits.data_ptr<float>() + static_cast<int64_t>(r) * V, V)) finish(active[r]);
      else still.push_back(std::move(active[r]));
    }
    active = std::move(still);
  }
  return out;
}

}  // namespace s0::generate
