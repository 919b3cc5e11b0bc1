#pragma once
// The file names of a Hugging Face PEFT adapter directory (LoRA and prefix tuning alike).
namespace s0::adapters::peft {

inline constexpr const char* kConfig = "adapter_config.json";
inline constexpr const char* kWeights = "adapter_model.safetensors";

}  // namespace s0::adapters::peft
