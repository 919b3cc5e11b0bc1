#pragma once
// Writes a complete Hugging Face style model directory with random weights: config.json,
// generation_config.json, model.safetensors (or shards + index), and the tokenizer files
// (tokenizer.json, tokenizer_config.json: s0/text/tokenizer_writer.h). Streaming (one tensor
// chunk in memory at a time), torch-free, so the real-size presets are written at disk speed.
#include <cstdint>
#include <string>

#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen2_config.h"
#include "s0/models/qwen35_config.h"

namespace s0::models {

struct InitOptions {
  uint64_t seed = 0;
  std::string dtype = "bf16";   // "bf16" | "f32"
  uint64_t shard_bytes = 0;     // > 0: shard when the weights exceed this size
};

void write_random_qwen35(const std::string& dir, const Qwen35Config& cfg, const InitOptions& opt);
void write_random_falcon_h1(const std::string& dir, const FalconH1Config& cfg, const InitOptions& opt);
void write_random_qwen2(const std::string& dir, const Qwen2Config& cfg, const InitOptions& opt);

// `s0 init-model`: the preset of family `arch` ("qwen35" | "falcon_h1" | "qwen2") written to `dir`;
// returns the parameter count. An unknown arch or preset is an s0::Error.
int64_t write_random_model(const std::string& dir, const std::string& arch, const std::string& preset,
                           const InitOptions& opt);

}  // namespace s0::models
