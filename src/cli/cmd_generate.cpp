#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/generate/generate.h"
#include "s0/generate/prompting.h"
#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {


Action add_generate(CLI::App& app) {
  struct Opts {
    std::string model, dtype = "bf16", states, lora, offset, prefix;
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
  app.add_option("--prefix", o->prefix, "Prefix-tuning adapter directory (PEFT layout; combines with the others)");
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
    std::optional<text::ChatTemplate> tmpl;
    if (o->chat) tmpl = text::ChatTemplate::from_model_dir(o->model);
    for (const auto& p : o->prompts) prompts.push_back(generate::encode_prompt(*tok, tmpl ? &*tmpl : nullptr, p, o->thinking));
    models::configure_runtime(o->threads);
    auto model = models::load_model(o->model, models::parse_dtype(o->dtype));
    models::use_generation_layout(*model);
    for (const auto& p : prompts) generate::check_prompt_ids(*model, p, "--prompt-ids");
    // Everything attached goes through the adapter door as one stack.
    generate::GenerateOptions opt;
    opt.adapter = generate::load_adapters(*model, o->states, o->alpha >= 0 ? std::optional<double>(o->alpha) : std::nullopt,
                                          o->lora, o->offset, o->prefix);
    opt.max_new_tokens = o->max_new;
    opt.sampling = {o->temperature, o->top_k, o->top_p, o->seed};
    opt.stop_strings = o->stop;
    if (tok) opt.tokenizer = &*tok;
    auto gens = generate::generate(*model, prompts, opt);
    for (size_t i = 0; i < gens.size(); ++i)
      std::printf("%s\n", generate::generation_record(i, prompts[i].size(), gens[i], tok ? &*tok : nullptr).dump().c_str());
    return 0;
  };
}

}  // namespace s0::cli
