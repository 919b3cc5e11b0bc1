#pragma once
// What `s0 generate` and the Python module's Model.generate share, so both give the same
// tokens for the same request: prompt text -> ids (raw, or one user turn through the chat
// template with the generation prompt), the id range check, the adapters attached in one
// order (S0 states, LoRA, state offset), and the JSON record of one generation.
#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "s0/generate/generate.h"
#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"

namespace s0::generate {

// `chat` null: the text is encoded as is; else it is rendered as one user turn (generation
// prompt on, enable_thinking = `thinking`). Special tokens are added as the tokenizer does.
std::vector<int64_t> encode_prompt(const text::Tokenizer& tok, const text::ChatTemplate* chat,
                                   const std::string& text, bool thinking);

// Throws s0::Error "<what>: token id N out of range [0, V)" for an id the model lacks.
void check_prompt_ids(const models::CausalLM& model, const std::vector<int64_t>& ids,
                      const std::string& what);

// The adapters named by directory, loaded and checked against `model`, stacked in the CLI's
// order (states at `alpha` or the set's own, LoRA, offset, prefix); empty strings are
// skipped; null when none. An alpha without states is an error.
std::shared_ptr<const models::Adapter> load_adapters(const models::CausalLM& model,
                                                     const std::string& states_dir,
                                                     std::optional<double> alpha,
                                                     const std::string& lora_dir,
                                                     const std::string& offset_dir,
                                                     const std::string& prefix_dir = "");

// One generation as `s0 generate` prints it: prompt index, tokens, finish_reason, speeds, and
// the decoded text (special tokens skipped) when a tokenizer is given.
nlohmann::json generation_record(size_t index, size_t prompt_tokens, const Generation& g,
                                 const text::Tokenizer* tok);

}  // namespace s0::generate
