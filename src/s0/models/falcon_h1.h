#pragma once
// Falcon-H1: every decoder layer runs GQA attention and a Mamba-2 mixer side by side on the
// same normed input and sums them, then a SwiGLU MLP; muP multipliers throughout. Math per
// shared spec falcon_h1.md section 3. S0 enters through every layer's SSM state [H, P, N].
#include <vector>

#include "s0/io/model_dir.h"
#include "s0/models/blocks.h"
#include "s0/models/falcon_h1_config.h"
#include "s0/models/model.h"

namespace s0::models {

class FalconH1Model : public CausalLM {
 public:
  FalconH1Model(const io::ModelDir& dir, at::ScalarType dtype);

  const FalconH1Config& config() const { return cfg_; }

  std::string model_type() const override { return "falcon_h1"; }
  std::string recurrent_arch() const override { return "mamba2"; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t num_layers() const override { return cfg_.num_hidden_layers; }
  std::vector<int64_t> eos_token_ids() const override { return cfg_.eos_token_ids; }
  std::vector<int64_t> recurrent_layers() const override;  // every layer
  std::vector<int64_t> state_shape() const override {
    return {cfg_.mamba_n_heads, cfg_.mamba_d_head, cfg_.mamba_d_state};
  }
  std::vector<int64_t> attention_layers() const override { return recurrent_layers(); }  // every layer
  std::vector<int64_t> kv_shape() const override { return {cfg_.num_key_value_heads, cfg_.head_dim}; }
  at::ScalarType dtype() const override { return dtype_; }

  Tensor logits(const Tensor& hidden) const override;
  nn::RowsCrossEntropy rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const override;
  Tensor embed(const Tensor& ids) const override;
  using CausalLM::layer;
  Tensor layer(int64_t l, const Tensor& h, const SeqGroups& groups) const override;
  Tensor final_norm(const Tensor& h) const override;
  std::vector<const NamedLinear*> linears() const override;
  std::vector<Tensor*> table_and_head() override { return {&embed_, &lm_head_}; }

 private:
  using Linear = NamedLinear;  // b undefined when the config says no bias
  struct Layer {
    Tensor in_norm, pre_ff_norm;
    Linear q, k, v, o;                       // attention
    Linear in_proj, out_proj;                // Mamba-2
    Tensor conv /*[Cdim, K] f32*/, conv_b /*[Cdim] f32 or undefined*/;
    Tensor neg_A, dt_bias, D /*[H] f32*/, norm /*[Dssm] or undefined*/;
    Linear gate, up, down;                   // MLP
  };

  // The mixers between their projections (layer() runs those, the two input projections in
  // one call, the two output projections with the residual adds): attention from q, k
  // (already times key_multiplier), v to the context before o_proj; Mamba-2 from zxbcdt
  // (in_proj's output times the muP vector) to the readout before out_proj.
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const SeqGroups& groups) const;
  Tensor mamba(int64_t l, const Layer& w, const Tensor& zxbcdt, const SeqGroups& groups) const;
  // Steps 3-7 of the Mamba-2 mixer for one group's rows (conv, dt, SSD, D skip, gate).
  Tensor mamba_core(int64_t l, const Layer& w, const Tensor& zxbcdt, const SeqGroup& group) const;
  // x + MLP(m), m the normed x.
  Tensor mlp(const Layer& w, const Tensor& x, const Tensor& m, const SeqGroups& groups) const;

  FalconH1Config cfg_;
  at::ScalarType dtype_;
  at::ScalarType rdt_;  // recurrent/norm math: float32 (float64 for float64 test models)
  Tensor embed_, norm_, lm_head_, inv_freq_, mup_;
  std::vector<Layer> layers_;
};

}  // namespace s0::models
