#pragma once
// Qwen2 / Qwen2.5: a plain pre-norm Transformer (GQA attention with q/k/v biases and full
// NeoX RoPE, SwiGLU MLP, plain RMSNorm), the pure-Transformer control of the paper's
// prefix-tuning experiment. Math per shared spec qwen2.md section 3. It has no recurrent
// layer: S0 and state offsets do not apply; LoRA and prefix tuning do.
#include <vector>

#include "s0/io/model_dir.h"
#include "s0/models/blocks.h"
#include "s0/models/model.h"
#include "s0/models/qwen2_config.h"

namespace s0::models {

class Qwen2Model : public CausalLM {
 public:
  Qwen2Model(const io::ModelDir& dir, at::ScalarType dtype);

  const Qwen2Config& config() const { return cfg_; }

  std::string model_type() const override { return "qwen2"; }
  std::string recurrent_arch() const override { return "none"; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t num_layers() const override { return cfg_.num_hidden_layers; }
  std::vector<int64_t> eos_token_ids() const override { return cfg_.eos_token_ids; }
  std::vector<int64_t> recurrent_layers() const override { return {}; }
  std::vector<int64_t> state_shape() const override { return {}; }
  std::vector<int64_t> attention_layers() const override;  // every layer
  std::vector<int64_t> kv_shape() const override {
    return {cfg_.num_key_value_heads, cfg_.head_dim};
  }
  at::ScalarType dtype() const override { return dtype_; }

  Tensor logits(const Tensor& hidden) const override;
  nn::RowsCrossEntropy rows_cross_entropy(const Tensor& rows, const Tensor& labels,
                                          double scale) const override;
  Tensor embed(const Tensor& ids) const override;
  using CausalLM::layer;
  Tensor layer(int64_t l, const Tensor& h, const SeqGroups& groups) const override;
  Tensor final_norm(const Tensor& h) const override;
  std::vector<const NamedLinear*> linears() const override;
  std::vector<Tensor*> table_and_head() override { return {&embed_, &lm_head_}; }
  // For the project's pretraining tool (tools/pretrain_builtin.cpp): every tensor as held,
  // by its canonical name (qwen2_tensor_shapes); lm_head aliases the embedding when tied and
  // is then not listed.
  std::vector<std::pair<std::string, Tensor*>> mutable_weights();

 private:
  struct Layer {
    Tensor in_norm, post_norm;
    NamedLinear q, k, v, o;  // q/k/v with biases
    NamedLinear gate, up, down;
  };
  Tensor attention(const Layer& w, const Tensor& x, const SeqGroups& groups) const;
  Tensor* slot(const std::string& name);

  Qwen2Config cfg_;
  at::ScalarType dtype_;
  at::ScalarType rdt_;  // logits dtype: float32 (float64 for float64 test models)
  Tensor embed_, norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
};

}  // namespace s0::models
