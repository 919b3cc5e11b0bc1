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
      if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        g.finish_reason = "eos";
        break;
      }
      if (!opt.stop_strings.empty()) {
        std::string text = opt.decode(g.tokens);
        bool hit = std::any_of(opt.stop_strings.begin(), opt.stop_strings.end(),
                               [&](const std::string& s) { return !s.empty() && text.find(s) != std::string::npos; });
        if (hit) {
          g.finish_reason = "stop";
          break;
        }
      }
      if (t + 1 == opt.max_new_tokens) break;
      step.fill_(tok);
      logits = model.forward(step, cache, true).to(at::kFloat).contiguous();
    }
    g.decode_seconds = now() - t0;
  }
  return out;
}

}  // namespace s0::generate
