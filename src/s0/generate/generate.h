#pragma once
// Generation: each prompt gets its own cache (started from the given S0 states or zeros),
// the prompt is processed in one chunked call, then one token per step until an eos id,
// a stop string, or max_new_tokens.
#include <functional>
#include <string>
#include <vector>

#include "s0/generate/sampler.h"
#include "s0/models/model.h"

namespace s0::generate {

struct GenerateOptions {
  SamplingParams sampling;  // prompt i samples with seed + i
  int64_t max_new_tokens = 64;
  std::vector<int64_t> eos_ids;             // empty: the model's eos ids
  std::vector<std::string> stop_strings;    // needs `decode`
  std::function<std::string(const std::vector<int64_t>&)> decode;  // ids -> text
  // Called for every generated token (prompt index, token id).
  std::function<void(size_t, int64_t)> on_token;
};

struct Generation {
  std::vector<int64_t> tokens;  // generated ids (the eos id that ended it is included)
  std::string finish_reason;    // "eos" | "stop" | "length"
  double prefill_seconds = 0, decode_seconds = 0;
};

std::vector<Generation> generate(models::CausalLM& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& opt,
                                 const models::StateMap* states = nullptr);

// n samples of one prompt, decoded together: the prompt is prefilled once, its cache is
// copied to n rows, and each step runs the still-active rows as one batch (finished rows are
// dropped from the batch). Row i samples with seed + i; `on_token` gets the row index.
// Rows can differ from generate() with the same seed only by batched-GEMM rounding.
std::vector<Generation> sample_n(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                 const GenerateOptions& opt, const models::StateMap* states = nullptr);

// Several prompts decoded together (continuous batching through CausalLM::decode_step):
// each prompt is prefilled alone into its own cache, then every step decodes one token for
// all active sequences at once; up to `max_batch` sequences are active, a finished one is
// replaced by the next prompt. Prompt i samples with seed + i; the tokens equal generate()'s
// for every prompt (decode_step is bitwise equal per row). `on_done(i, generation)` is called
// as each prompt finishes.
std::vector<Generation> generate_batched(
    models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& opt,
    const models::StateMap* states = nullptr, int64_t max_batch = 16,
    const std::function<void(size_t, const Generation&)>& on_done = {});

}  // namespace s0::generate
