#include "s0/generate/prompting.h"

#include <algorithm>

#include "s0/adapters/lora.h"
#include "s0/adapters/prefix.h"
#include "s0/adapters/stack.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"
#include "s0/util/error.h"

namespace s0::generate {

std::vector<int64_t> encode_prompt(const text::Tokenizer& tok, const text::ChatTemplate* chat,
                                   const std::string& text, bool thinking) {
  if (!chat) return tok.encode(text, true);
  return tok.encode(chat->render({{"user", text}}, {true, thinking, std::nullopt}), true);
}

void check_prompt_ids(const models::CausalLM& model, const std::vector<int64_t>& ids,
                      const std::string& what) {
  for (auto id : ids)
    if (id < 0 || id >= model.vocab_size())
      throw Error(what + ": token id " + std::to_string(id) + " out of range [0, " +
                  std::to_string(model.vocab_size()) + ")");
}

std::shared_ptr<const models::Adapter> load_adapters(const models::CausalLM& model,
                                                     const std::string& states_dir,
                                                     std::optional<double> alpha,
                                                     const std::string& lora_dir,
                                                     const std::string& offset_dir,
                                                     const std::string& prefix_dir) {
  std::vector<std::shared_ptr<const models::Adapter>> attached;
  if (!states_dir.empty())
    attached.push_back(adapters::load_state_set(states_dir, model).adapter(alpha));
  else if (alpha)
    throw Error("--alpha needs --states");
  if (!lora_dir.empty()) attached.push_back(adapters::load_lora(lora_dir, model).adapter());
  if (!offset_dir.empty())
    attached.push_back(adapters::load_offset_set(offset_dir, model).adapter());
  if (!prefix_dir.empty())
    attached.push_back(adapters::load_prefix(prefix_dir, model).adapter(model.attention_layers()));
  return adapters::stack(attached);
}

nlohmann::json generation_record(size_t index, size_t prompt_tokens, const Generation& g,
                                 const text::Tokenizer* tok) {
  nlohmann::json j = {
      {"prompt", index},
      {"tokens", g.tokens},
      {"finish_reason", g.finish_reason},
      {"prefill_tokens_per_s",
       static_cast<double>(prompt_tokens) / std::max(g.prefill_seconds, 1e-9)},
      {"decode_tokens_per_s", g.tokens.size() > 1 ? static_cast<double>(g.tokens.size() - 1) /
                                                        std::max(g.decode_seconds, 1e-9)
                                                  : 0.0}};
  if (tok) j["text"] = tok->decode(g.tokens, /*skip_special_tokens=*/true);
  return j;
}

}  // namespace s0::generate
