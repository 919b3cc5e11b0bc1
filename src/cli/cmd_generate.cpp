#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/lora.h"
#include "s0/adapters/stack.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"
#include "s0/generate/generate.h"
#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {


Action add_generate(CLI::App& app) {
  struct Opts {
    std::string model, dtype = "bf16", states, lora, offset;
    std::vector<std::string> prompt_ids, prompts;
    double alpha = -1, temperature = 0, top_p = 1;
    int64_t top_k = 0, max_new = 32;
    uint64_t seed = 0;
    int threads = 0;
    bool chat = false, thinking = false;
    std::vector<std::string> stop;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "Model directory (Hugging Face layout)")->required();
  app.add_option("--dtype", o->dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--states", o->states, "S0 state-set directory to start every sequence from");
  app.add_option("--alpha", o->alpha, "Scale applied to the states (default: the state set's alpha)");
  app.add_option("--lora", o->lora, "LoRA adapter directory (PEFT layout), applied unmerged (combines with --states)");
  app.add_option("--offset", o->offset, "State-offset directory (combines with --states and --lora)");
  app.add_option("--prompt-ids", o->prompt_ids, "Prompt as comma-separated token ids (repeatable)");
  app.add_option("--prompt", o->prompts, "Prompt text (repeatable); output then includes the decoded text");
  app.add_flag("--chat", o->chat, "Render each --prompt as a user turn through the model's chat template");
  app.add_flag("--thinking", o->thinking, "With --chat: enable_thinking=true (default false)");
  app.add_option("--stop", o->stop, "Stop when the generated text contains this string (repeatable)");
  app.add_option("--max-new-tokens", o->max_new, "Maximum generated tokens")->capture_default_str();
  app.add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-k", o->top_k, "0 = off")->capture_default_str();
  app.add_option("--top-p", o->top_p, "1 = off")->capture_default_str();
  app.add_option("--seed", o->seed, "Sampling seed (prompt i uses seed + i)")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  return [o]() {
    if (o->prompt_ids.empty() && o->prompts.empty()) throw Error("give at least one --prompt or --prompt-ids");
    if (o->chat && o->prompts.empty()) throw Error("--chat applies to --prompt text");
    std::vector<std::vector<int64_t>> prompts;
    for (const auto& p : o->prompt_ids) prompts.push_back(parse_id_list(p, "--prompt-ids"));
    std::optional<text::Tokenizer> tok;
    if (!o->prompts.empty() || !o->stop.empty()) tok = text::Tokenizer::from_model_dir(o->model);
    for (const auto& p : o->prompts) {
      if (o->chat) {
        auto tmpl = text::ChatTemplate::from_model_dir(o->model);
        std::string rendered = tmpl.render({{"user", p}}, {true, o->thinking, std::nullopt});
        prompts.push_back(tok->encode(rendered, true));
      } else {
        prompts.push_back(tok->encode(p, true));
      }
    }
    models::configure_runtime(o->threads);
    auto model = models::load_model(o->model, models::parse_dtype(o->dtype));
    for (const auto& p : prompts)
      for (auto id : p)
        if (id < 0 || id >= model->vocab_size())
          throw Error("--prompt-ids: token id " + std::to_string(id) + " out of range [0, " +
                      std::to_string(model->vocab_size()) + ")");
    // Everything attached goes through the adapter door as one stack.
    std::vector<std::shared_ptr<const models::Adapter>> attached;
    if (!o->states.empty())
      attached.push_back(adapters::load_state_set(o->states, *model)
                             .adapter(o->alpha >= 0 ? std::optional<double>(o->alpha) : std::nullopt));
    else if (o->alpha >= 0)
      throw Error("--alpha needs --states");
    if (!o->lora.empty()) attached.push_back(adapters::load_lora(o->lora, *model).adapter());
    if (!o->offset.empty()) attached.push_back(adapters::load_offset_set(o->offset, *model).adapter());
    generate::GenerateOptions opt;
    opt.adapter = adapters::stack(attached);
    opt.max_new_tokens = o->max_new;
    opt.sampling = {o->temperature, o->top_k, o->top_p, o->seed};
    opt.stop_strings = o->stop;
    if (tok) opt.tokenizer = &*tok;
    auto gens = generate::generate(*model, prompts, opt);
    for (size_t i = 0; i < gens.size(); ++i) {
      const auto& g = gens[i];
      nlohmann::json j = {{"prompt", i},
                          {"tokens", g.tokens},
                          {"finish_reason", g.finish_reason},
                          {"prefill_tokens_per_s", prompts[i].size() / std::max(g.prefill_seconds, 1e-9)},
                          {"decode_tokens_per_s",
                           g.tokens.size() > 1 ? (g.tokens.size() - 1) / std::max(g.decode_seconds, 1e-9) : 0.0}};
      if (tok) j["text"] = tok->decode(g.tokens, /*skip_special_tokens=*/true);
      std::printf("%s\n", j.dump().c_str());
    }
    return 0;
  };
}

}  // namespace s0::cli
