#pragma once
// The paper's baselines trained by the same loop and objective as S0 (ParamTrainer,
// completion-only cross-entropy): LoRA factors, per-layer state offsets and prefix tuning.
#include <functional>
#include <string>
#include <vector>

#include "s0/adapters/lora.h"
#include "s0/adapters/prefix.h"
#include "s0/adapters/state_offset.h"
#include "s0/train/trainer.h"

namespace s0::train {

// LoRA on `lora.target_modules` (empty: the family's defaults), A initialised from cfg.seed.
// Only the factors are trained (cfg.l2 applies to them; the paper uses 0). Writes the PEFT
// layout to `out_dir` (decoder_prefix: the base checkpoint's, see adapters::decoder_prefix).
adapters::LoraSet train_lora(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                             adapters::LoraConfig lora, const std::string& out_dir, bool resume,
                             const std::function<void(const StepReport&)>& on_step = {},
                             const std::string& decoder_prefix = "model.");

// A zero-initialised offset per recurrent layer cfg.layers selects. Writes `out_dir`.
adapters::OffsetSet train_offset(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                                 const std::string& out_dir, bool resume,
                                 const std::function<void(const StepReport&)>& on_step = {});

// Prefix tuning (PEFT semantics, adapters/prefix.h): `prefix.num_virtual_tokens` virtual
// tokens, through PEFT's projection MLP when prefix.prefix_projection, initialised from
// cfg.seed. Works on any model with attention layers. Writes the PEFT layout (the prompt
// embeddings) to `out_dir`.
adapters::PrefixSet train_prefix(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                                 adapters::PrefixConfig prefix, const std::string& out_dir, bool resume,
                                 const std::function<void(const StepReport&)>& on_step = {});

}  // namespace s0::train
