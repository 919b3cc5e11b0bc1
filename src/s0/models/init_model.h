#pragma once
// Writes a complete Hugging Face style model directory with random weights: config.json,
// generation_config.json, model.safetensors (or shards + index), tokenizer.json and
// tokenizer_config.json. Streaming (one tensor chunk in memory at a time), torch-free, so
// the real-size presets are written at disk speed.
#include <cstdint>
#include <string>

#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen35_config.h"

namespace s0::models {

struct InitOptions {
  uint64_t seed = 0;
  std::string dtype = "bf16";   // "bf16" | "f32"
  uint64_t shard_bytes = 0;     // > 0: shard when the weights exceed this size
};

void write_random_qwen35(const std::string& dir, const Qwen35Config& cfg, const InitOptions& opt);
void write_random_falcon_h1(const std::string& dir, const FalconH1Config& cfg, const InitOptions& opt);

// Falcon-H1 style tokenizer.json: the 256 byte tokens from id 16, <|pad|> 0,
// <|begin_of_text|> 1, <|end_of_text|> 11, <|im_start|> 12, <|im_end|> 13; Llama-3 split
// regex, ignore_merges.
std::string falcon_h1_tokenizer_json();

// A byte-level BPE tokenizer.json with the 256 byte tokens (GPT-2 byte<->unicode mapping),
// no merges, and the ChatML special tokens at ids `first_special`, +1, +2
// (<|endoftext|>, <|im_start|>, <|im_end|>).
std::string byte_level_tokenizer_json(int64_t first_special);

}  // namespace s0::models
