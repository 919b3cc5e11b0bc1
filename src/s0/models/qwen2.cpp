#include "s0/models/qwen2.h"

#include <cmath>

#include "s0/models/weights.h"
#include "s0/nn/activations.h"
#include "s0/nn/attention.h"
#include "s0/nn/cross_entropy.h"
#include "s0/nn/linear.h"
#include "s0/nn/norms.h"
#include "s0/util/error.h"

namespace s0::models {

Qwen2Model::Qwen2Model(const io::ModelDir& dir, at::ScalarType dtype)
    : cfg_(Qwen2Config::from_json(dir.config(), dir.config_path())),
      dtype_(dtype),
      rdt_(dtype == at::kDouble ? at::kDouble : at::kFloat) {
  if (dtype != at::kBFloat16 && dtype != at::kFloat && dtype != at::kDouble)
    throw Error("Qwen2: weight dtype must be bf16, f32 or f64");
  layers_.resize(cfg_.num_hidden_layers);
  WeightArena arena;
  for (const auto& t : qwen2_tensor_shapes(cfg_))
    *slot(t.name) = load_weight(dir, t.name, t.shape, dtype_, &arena);
  // Tied: lm_head is the embedding (a checkpoint may still carry a copy; it is not read).
  if (cfg_.tie_word_embeddings) lm_head_ = embed_;
  inv_freq_ = nn::rope_inv_freq(cfg_.head_dim, cfg_.rope_theta).to(rdt_);
}

Tensor* Qwen2Model::slot(const std::string& n) {
  if (n == "embed_tokens.weight") return &embed_;
  if (n == "norm.weight") return &norm_;
  if (n == "lm_head.weight") return &lm_head_;
  const size_t dot = n.find('.', 7);
  if (n.rfind("layers.", 0) != 0 || dot == std::string::npos)
    throw Error("Qwen2: unknown tensor " + n);
  Layer& L = layers_.at(std::stoll(n.substr(7, dot - 7)));
  const std::string rest = n.substr(dot + 1);
  if (rest == "input_layernorm.weight") return &L.in_norm;
  if (rest == "post_attention_layernorm.weight") return &L.post_norm;
  const std::pair<const char*, NamedLinear*> linears[] = {
      {"self_attn.q_proj", &L.q}, {"self_attn.k_proj", &L.k}, {"self_attn.v_proj", &L.v},
      {"self_attn.o_proj", &L.o}, {"mlp.gate_proj", &L.gate}, {"mlp.up_proj", &L.up},
      {"mlp.down_proj", &L.down}};
  for (const auto& [module, lin] : linears) {
    const std::string m = module;
    if (rest == m + ".weight" || rest == m + ".bias") {
      lin->name = n.substr(0, dot + 1) + m;
      return rest == m + ".weight" ? &lin->w : &lin->b;
    }
  }
  throw Error("Qwen2: unknown tensor " + n);
}

std::vector<int64_t> Qwen2Model::attention_layers() const {
  std::vector<int64_t> out(cfg_.num_hidden_layers);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) out[l] = l;
  return out;
}

Tensor Qwen2Model::attention(const Layer& w, const Tensor& x, const SeqGroups& gs) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  // Biases are added before RoPE (spec 3).
  Tensor q = w.q(x, gs).view({B, L, H, hd});
  Tensor k = w.k(x, gs).view({B, L, KV, hd});
  Tensor v = w.v(x, gs).view({B, L, KV, hd});
  return rope_attention(q, k, v, inv_freq_, gs, 1.0 / std::sqrt(static_cast<double>(hd)));
}

Tensor Qwen2Model::layer(int64_t l, const Tensor& h, const SeqGroups& gs) const {
  const Layer& w = layers_.at(l);
  Tensor x = h + w.o(attention(w, nn::rms_norm(h, w.in_norm, cfg_.rms_norm_eps), gs), gs);
  Tensor m = nn::rms_norm(x, w.post_norm, cfg_.rms_norm_eps);
  return x + w.down(nn::silu_mul(w.gate(m, gs), w.up(m, gs)), gs);
}

Tensor Qwen2Model::embed(const Tensor& ids) const {
  return nn::embedding(embed_, ids);
}

Tensor Qwen2Model::final_norm(const Tensor& h) const {
  return nn::rms_norm(h, norm_, cfg_.rms_norm_eps);
}

Tensor Qwen2Model::logits(const Tensor& hidden) const { return project(hidden, lm_head_).to(rdt_); }

nn::RowsCrossEntropy Qwen2Model::rows_cross_entropy(const Tensor& rows, const Tensor& labels,
                                                    double scale) const {
  if (!rows.device().is_cpu() || rows.scalar_type() != lm_head_.scalar_type())
    return CausalLM::rows_cross_entropy(rows, labels, scale);
  return nn::cross_entropy_rows(rows, lm_head_, labels, scale, 256);
}

std::vector<const NamedLinear*> Qwen2Model::linears() const {
  std::vector<const NamedLinear*> out;
  for (const Layer& w : layers_) out.insert(out.end(), {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down});
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Qwen2Model::mutable_weights() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const auto& t : qwen2_tensor_shapes(cfg_)) out.push_back({t.name, slot(t.name)});
  return out;
}

}  // namespace s0::models
