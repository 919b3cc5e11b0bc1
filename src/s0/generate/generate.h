#pragma once
// Generation: the convenience forms of the decode engine (engine.h), which does the work
// for all of them. Each prompt gets its own cache (started from the given S0 states, the
// options' adapter, or zeros); the prompt is prefilled, then one token per step until an
// eos id, a stop string, or max_new_tokens. A prompt's tokens are the same whichever form
// generates it (and whatever else is generated beside it).
#include <functional>
#include <string>
#include <vector>

#include "s0/generate/sampler.h"
#include "s0/generate/text_stream.h"
#include "s0/models/model.h"

namespace s0::generate {

struct GenerateOptions {
  SamplingParams sampling;  // prompt i samples with seed + i
  int64_t max_new_tokens = 64;
  std::vector<int64_t> eos_ids;             // empty: the model's eos ids
  std::vector<std::string> stop_strings;    // needs `tokenizer` or `decode`
  const text::Tokenizer* tokenizer = nullptr;  // streams text for stop strings (special tokens skipped)
  std::function<std::string(const std::vector<int64_t>&)> decode;  // or: ids -> text
  std::shared_ptr<const models::Adapter> adapter;  // used when no StateMap is passed
  int64_t prefill_chunk = 512;              // prompt tokens per prefill piece
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
// copied n times, and each step decodes the still-active samples as one batch. Sample i
// draws with seed + i and equals generate() with that seed; `on_token` gets the sample index.
std::vector<Generation> sample_n(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                 const GenerateOptions& opt, const models::StateMap* states = nullptr);

// n samples of each of several prompts, decoded together: each prompt is prefilled once and
// its n samples admitted together while at most `max_batch` sequences are active (a prompt
// waits until its n fit, or runs alone when n > max_batch). Prompt p's sample i draws with
// seeds[p] + i and equals sample_n(model, prompts[p], n, opt with seed seeds[p])[i] (decode
// steps are bitwise per row). out[p][i]; `on_token` gets p * n + i.
std::vector<std::vector<Generation>> sample_n_many(models::CausalLM& model,
                                                   const std::vector<std::vector<int64_t>>& prompts, int64_t n,
                                                   const std::vector<uint64_t>& seeds, const GenerateOptions& opt,
                                                   const models::StateMap* states = nullptr, int64_t max_batch = 64);

// Several prompts decoded together (continuous batching): up to `max_batch` sequences are
// active, a finished one is replaced by the next prompt. Prompt i samples with seed + i; the
// tokens equal generate()'s for every prompt. `on_done(i, generation)` is called as each
// prompt finishes.
std::vector<Generation> generate_batched(
    models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& opt,
    const models::StateMap* states = nullptr, int64_t max_batch = 16,
    const std::function<void(size_t, const Generation&)>& on_done = {});

}  // namespace s0::generate
