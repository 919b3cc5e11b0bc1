#include "s0/generate/generate.h"

#include <map>

#include "s0/generate/engine.h"
#include "s0/util/error.h"

namespace s0::generate {

namespace {

EngineOptions engine_options(const GenerateOptions& opt, int64_t max_batch) {
  EngineOptions e;
  e.max_batch = max_batch;
  e.prefill_chunk = opt.prefill_chunk;
  if (!opt.stop_strings.empty()) {
    if (opt.tokenizer) e.detokenizer = detokenizer_for(*opt.tokenizer);
    else if (opt.decode) e.detokenizer = detokenizer_for(opt.decode);
    else throw Error("stop strings need a tokenizer to decode the generated text");
  }
  return e;
}

Request request(const GenerateOptions& opt, const std::vector<int64_t>& prompt, uint64_t seed_offset,
                const models::StateMap* states, uint64_t tag) {
  if (opt.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  Request r;
  r.prompt = prompt;
  r.adapter = states ? std::make_shared<models::InitialStates>(*states) : opt.adapter;
  r.sampling = opt.sampling;
  r.sampling.seed += seed_offset;
  r.max_new_tokens = opt.max_new_tokens;
  r.eos_ids = opt.eos_ids;
  r.stop_strings = opt.stop_strings;
  r.tag = tag;
  return r;
}

// Runs the engine, collecting every sequence's tokens into out[key(event)].
void drive(Engine& engine, std::vector<Generation>& out, const GenerateOptions& opt,
           const std::function<size_t(const Event&)>& key,
           const std::function<void(size_t, const Generation&)>& on_done = {}) {
  engine.run([&](const Event& e) {
    const size_t i = key(e);
    Generation& g = out[i];
    if (e.token >= 0) {
      g.tokens.push_back(e.token);
      if (opt.on_token) opt.on_token(i, e.token);
    }
    if (e.finished) {
      if (e.finish_reason == "error") throw Error(e.error);
      g.finish_reason = e.finish_reason;
      g.prefill_seconds = e.prefill_seconds;
      g.decode_seconds = e.decode_seconds;
      if (on_done) on_done(i, g);
    }
  });
}

}  // namespace

std::vector<Generation> generate(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& opt, const models::StateMap* states) {
  return generate_batched(model, prompts, opt, states, /*max_batch=*/1);
}

std::vector<std::vector<Generation>> sample_n_many(models::CausalLM& model,
                                                   const std::vector<std::vector<int64_t>>& prompts, int64_t n,
                                                   const std::vector<uint64_t>& seeds, const GenerateOptions& opt,
                                                   const models::StateMap* states, int64_t max_batch) {
  if (n < 1) throw Error("the number of samples must be >= 1");
  if (seeds.size() != prompts.size()) throw Error("sample_n_many: one seed per prompt");
  Engine engine(model, engine_options(opt, std::max(max_batch, n)));
  GenerateOptions o = opt;
  if (states) o.adapter = std::make_shared<models::InitialStates>(*states);  // shared, not copied per prompt
  for (size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) throw Error("prompt " + std::to_string(p) + " is empty");
    Request r = request(o, prompts[p], 0, nullptr, p);
    r.sampling.seed = seeds[p];
    r.n = n;
    engine.submit(std::move(r));
  }
  std::vector<Generation> flat(prompts.size() * static_cast<size_t>(n));
  drive(engine, flat, opt, [n](const Event& e) {
    return static_cast<size_t>(e.tag) * static_cast<size_t>(n) + static_cast<size_t>(e.index);
  });
  std::vector<std::vector<Generation>> out(prompts.size());
  for (size_t p = 0; p < prompts.size(); ++p)
    out[p].assign(std::make_move_iterator(flat.begin() + static_cast<std::ptrdiff_t>(p) * n),
                  std::make_move_iterator(flat.begin() + static_cast<std::ptrdiff_t>(p + 1) * n));
  return out;
}

std::vector<Generation> sample_n(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                 const GenerateOptions& opt, const models::StateMap* states) {
  return std::move(sample_n_many(model, {prompt}, n, {opt.sampling.seed}, opt, states, n)[0]);
}

std::vector<Generation> generate_batched(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                        const GenerateOptions& opt, const models::StateMap* states, int64_t max_batch,
                                        const std::function<void(size_t, const Generation&)>& on_done) {
  Engine engine(model, engine_options(opt, max_batch));
  // One adapter object for all prompts (the states are shared, not copied per prompt).
  GenerateOptions o = opt;
  if (states) o.adapter = std::make_shared<models::InitialStates>(*states);
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw Error("prompt " + std::to_string(i) + " is empty");
    engine.submit(request(o, prompts[i], i, nullptr, i));
  }
  std::vector<Generation> out(prompts.size());
  drive(engine, out, opt, [](const Event& e) { return static_cast<size_t>(e.tag); }, on_done);
  return out;
}

}  // namespace s0::generate
