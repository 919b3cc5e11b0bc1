#pragma once
// LoRA (Hu et al. 2021) on a frozen model, the paper's main baseline (METHOD.md section 3):
// each target linear layer y = x W^T becomes y + (lora_alpha / r) * (x A^T) B^T, with
// A [r, in] Kaiming-uniform (bound 1/sqrt(in), PEFT's default) and B [out, r] zeros, so an
// untrained adapter is exactly the base model. Factors are float32; the delta is computed
// in float32, added to the layer's output and rounded to the model dtype.
//
// On disk: the Hugging Face PEFT layout, so PEFT/vLLM load what s0 trains and s0 loads what
// PEFT trains (a directory):
//   adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}
//   adapter_model.safetensors  "base_model.model.<decoder prefix><module>.lora_A.weight" [r, in]
//                              "base_model.model.<decoder prefix><module>.lora_B.weight" [out, r]
// where <decoder prefix> is the checkpoint's own ("model." or "model.language_model.").
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"

namespace s0::adapters {

struct LoraFactors {
  Tensor A;  // [r, in] float32
  Tensor B;  // [out, r] float32
};

struct LoraConfig {
  int64_t r = 24;
  double lora_alpha = 48;  // 2r, the paper's setting
  bool use_rslora = false;  // scale lora_alpha / sqrt(r) instead of lora_alpha / r
  std::vector<std::string> target_modules;  // module-name suffixes ("q_proj") or full names
  std::string base_model;                   // base_model_name_or_path
  double scale() const;
};

// The paper's default targets: Qwen3.5 = q/k/v/o of the full-attention layers; Falcon-H1 =
// q/k/v and the Mamba in_proj of every layer.
std::vector<std::string> default_lora_targets(const models::CausalLM& model);

// The paper's LoRA schedule (METHOD.md): Adam, one example per optimiser step (batch 1, cycling
// through the data), 50 steps, lr 5e-4 on Qwen models and 1e-4 on Falcon-H1. `s0 train --method
// lora` and an experiment's lora methods use it for whatever the user does not set.
struct LoraSchedule {
  int64_t steps = 50;
  int64_t batch = 1;
  double lr = 5e-4;
};
LoraSchedule paper_lora_schedule(const models::CausalLM& model);

// The model's linear layers a target list selects (PEFT's rule: a module matches a target t
// when its name equals t or ends with "." + t). Throws when nothing matches or a target
// matches no layer (naming it and the model's linear layer kinds).
std::vector<std::string> match_lora_targets(const models::CausalLM& model, const std::vector<std::string>& targets);

struct LoraSet {
  LoraConfig config;
  std::map<std::string, LoraFactors> modules;  // by module name ("layers.3.self_attn.q_proj")
  nlohmann::json s0_info = nlohmann::json::object();  // training settings, kept in s0.json

  int64_t num_params() const;
  int64_t num_bytes() const { return num_params() * 4; }
  // What a sequence carries through the adapter door (linear-output hook).
  std::shared_ptr<const models::Adapter> adapter() const;
};

// What `s0 lora inspect` prints: dir, r, lora_alpha, scale, target_modules, base_model,
// params, bytes, and per module the factor shapes and ||scale * B A||.
nlohmann::json inspect_json(const LoraSet& set, const std::string& dir);

// A fresh adapter (A Kaiming-uniform from `seed`, B zeros) for the matched target layers.
LoraSet init_lora(const models::CausalLM& model, LoraConfig cfg, uint64_t seed);

// Checks a set against a model: every module is one of its linear layers, with matching
// factor shapes. Throws s0::Error saying what differs.
void check_lora(const LoraSet& set, const models::CausalLM& model, const std::string& where);

// Writes the PEFT layout atomically per file. `decoder_prefix` is the prefix of the base
// checkpoint's decoder tensors ("model." by default).
void save_lora(const std::string& dir, const LoraSet& set, const std::string& decoder_prefix = "model.");
// Reads a PEFT LoRA directory (ours or PEFT's). Refuses what it cannot apply exactly
// (DoRA, fan_in_fan_out, bias training, rank/alpha patterns, non-finite values).
LoraSet load_lora(const std::string& dir);
LoraSet load_lora(const std::string& dir, const models::CausalLM& model);

// The decoder prefix of a model directory's tensors ("model." or "model.language_model.").
std::string decoder_prefix(const std::string& model_dir);

// Writes `out_dir`: a copy of `model_dir` whose target weights are W + scale * B A (computed
// in float32, rounded to the file's dtype); every other file is copied unchanged.
void merge_lora(const std::string& model_dir, const LoraSet& set, const std::string& out_dir);

}  // namespace s0::adapters
