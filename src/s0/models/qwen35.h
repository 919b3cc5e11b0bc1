#pragma once
// Qwen3.5 dense text model: GatedDeltaNet (linear attention) layers and gated full-attention
// layers in a hybrid stack, SwiGLU MLPs, (1+w) RMSNorms. Math per shared spec qwen35.md.
#include <vector>

#include "s0/io/model_dir.h"
#include "s0/models/blocks.h"
#include "s0/models/model.h"
#include "s0/models/qwen35_config.h"

namespace s0::models {

class Qwen35Model : public CausalLM {
 public:
  Qwen35Model(const io::ModelDir& dir, at::ScalarType dtype);

  const Qwen35Config& config() const { return cfg_; }

  std::string model_type() const override { return "qwen3_5"; }
  std::string recurrent_arch() const override { return "gated_delta_net"; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t num_layers() const override { return cfg_.num_hidden_layers; }
  std::vector<int64_t> eos_token_ids() const override { return cfg_.eos_token_ids; }
  std::vector<int64_t> recurrent_layers() const override { return cfg_.linear_layers(); }
  std::vector<int64_t> state_shape() const override {
    return {cfg_.linear_num_value_heads, cfg_.linear_key_head_dim, cfg_.linear_value_head_dim};
  }
  std::vector<int64_t> attention_layers() const override;
  std::vector<int64_t> kv_shape() const override { return {cfg_.num_key_value_heads, cfg_.head_dim}; }
  at::ScalarType dtype() const override { return dtype_; }

  Tensor logits(const Tensor& hidden) const override;
  nn::RowsCrossEntropy rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const override;
  Tensor embed(const Tensor& ids) const override;
  using CausalLM::layer;
  using CausalLM::mixer_core;
  Tensor layer(int64_t l, const Tensor& h, const SeqGroups& groups) const override;
  bool splits_layers() const override { return true; }
  Tensor mixer_core(int64_t l, const Tensor& h, const SeqGroups& groups) const override;
  Tensor mixer_out_weight(int64_t l) const override;
  Tensor mlp_core(int64_t l, const Tensor& x) const override;
  Tensor mlp_down_weight(int64_t l) const override;
  Tensor final_norm(const Tensor& h) const override;
  std::vector<const NamedLinear*> linears() const override;
  std::vector<Tensor*> table_and_head() override { return {&embed_, &lm_head_}; }
  // For the project's own pretraining tool (tools/pretrain_builtin.cpp), not for S0 training
  // (weights stay frozen there): every weight tensor as held here, by its canonical name
  // (qwen35_tensor_shapes). Held forms differ from the file for two: "...conv1d.weight" is
  // [C, Kc] and "...A_log" holds neg_A = -exp(A_log). lm_head aliases the embedding when tied
  // and is then not listed.
  std::vector<std::pair<std::string, Tensor*>> mutable_weights();

 private:
  // A linear layer's weight and its module name (the adapter door's hook name); no bias.
  using Linear = NamedLinear;
  struct GdnWeights {
    Linear in_qkv, in_z, in_b, in_a, out;
    Tensor conv /*[C, Kc] f32*/, neg_A /*f32*/, dt_bias /*f32*/, norm;
  };
  struct AttnWeights {
    Linear q, k, v, o;
    Tensor q_norm, k_norm;
  };
  struct Layer {
    bool linear = true;
    Tensor in_norm, post_norm;
    Linear gate, up, down;
    GdnWeights gdn;
    AttnWeights attn;
  };

  Tensor gated_delta_net(int64_t l, const Layer& w, const Tensor& x, const SeqGroups& groups) const;
  Tensor gated_attention(const Layer& w, const Tensor& x, const SeqGroups& groups) const;
  Tensor mlp_core(int64_t l, const Tensor& x, const SeqGroups& groups) const;
  const Linear& mixer_out(int64_t l) const;
  // Where the weight a table entry (qwen35_tensor_shapes) names is held; sets the module
  // name of a linear layer's slot.
  Tensor* slot(const TensorShape& t);

  Qwen35Config cfg_;
  at::ScalarType dtype_;
  at::ScalarType rdt_;  // recurrent/norm math: float32 (float64 for float64 test models)
  Tensor embed_, norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
};

}  // namespace s0::models
