#include "s0/models/qwen35.h"

#include <cmath>

#include "s0/models/weights.h"
#include "s0/nn/activations.h"
#include "s0/nn/attention.h"
#include "s0/nn/causal_conv.h"
#include "s0/nn/cross_entropy.h"
#include "s0/nn/gated_delta_rule.h"
#include "s0/nn/l2_heads.h"
#include "s0/nn/linear.h"
#include "s0/nn/norms.h"
#include "s0/util/error.h"

namespace s0::models {

Qwen35Model::Qwen35Model(const io::ModelDir& dir, at::ScalarType dtype)
    : cfg_(Qwen35Config::from_json(dir.config(), dir.config_path())),
      dtype_(dtype),
      rdt_(dtype == at::kDouble ? at::kDouble : at::kFloat) {
  if (dtype != at::kBFloat16 && dtype != at::kFloat && dtype != at::kDouble)
    throw Error("Qwen3.5: weight dtype must be bf16, f32 or f64");
  // Expected shapes of every tensor; a missing tensor or a shape mismatch names both.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& t : qwen35_tensor_shapes(cfg_)) shapes[t.name] = t.shape;
  auto W = [&](const std::string& name) { return load_weight(dir, name, shapes.at(name), dtype_); };
  auto F32 = [&](const std::string& name) {
    // HF rounds every parameter to the model dtype at load; keep that rounding, compute in fp32.
    return load_weight(dir, name, shapes.at(name), dtype_).to(rdt_);
  };

  embed_ = W("embed_tokens.weight");
  norm_ = W("norm.weight");
  lm_head_ = cfg_.tie_word_embeddings ? embed_ : W("lm_head.weight");
  inv_freq_ = nn::rope_inv_freq(cfg_.rotary_dim(), cfg_.rope_theta).to(rdt_);
  layers_.resize(cfg_.num_hidden_layers);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    L.linear = cfg_.is_linear(l);
    L.in_norm = W(p + "input_layernorm.weight");
    L.post_norm = W(p + "post_attention_layernorm.weight");
    L.gate = W(p + "mlp.gate_proj.weight");
    L.up = W(p + "mlp.up_proj.weight");
    L.down = W(p + "mlp.down_proj.weight");
    if (L.linear) {
      const std::string a = p + "linear_attn.";
      L.gdn.in_qkv = W(a + "in_proj_qkv.weight");
      L.gdn.in_z = W(a + "in_proj_z.weight");
      L.gdn.in_b = W(a + "in_proj_b.weight");
      L.gdn.in_a = W(a + "in_proj_a.weight");
      L.gdn.conv = F32(a + "conv1d.weight").squeeze(1).contiguous();
      L.gdn.neg_A = -F32(a + "A_log").exp();
      L.gdn.dt_bias = F32(a + "dt_bias");
      L.gdn.norm = W(a + "norm.weight");
      L.gdn.out = W(a + "out_proj.weight");
    } else {
      const std::string a = p + "self_attn.";
      L.attn.q = W(a + "q_proj.weight");
      L.attn.k = W(a + "k_proj.weight");
      L.attn.v = W(a + "v_proj.weight");
      L.attn.o = W(a + "o_proj.weight");
      L.attn.q_norm = W(a + "q_norm.weight");
      L.attn.k_norm = W(a + "k_norm.weight");
    }
  }
}

Tensor Qwen35Model::gated_delta_net(const Layer& w, const Tensor& x, LayerCache& c) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t Hk = cfg_.linear_num_key_heads, Hv = cfg_.linear_num_value_heads;
  const int64_t dk = cfg_.linear_key_head_dim, dv = cfg_.linear_value_head_dim;
  const int64_t kd = cfg_.linear_key_dim();

  // Projections, then the causal conv + SiLU over the q|k|v channels.
  Tensor mixed = nn::causal_conv_silu(nn::linear(x, w.gdn.in_qkv), w.gdn.conv, c.conv, c.conv);
  auto qkv = mixed.split_with_sizes({kd, kd, Hv * dv}, 2);  // one backward (cat), not three
  Tensor z = nn::linear(x, w.gdn.in_z).view({B, L, Hv, dv});
  Tensor beta = at::sigmoid(nn::linear(x, w.gdn.in_b)).to(rdt_);  // sigmoid in model dtype
  Tensor g = w.gdn.neg_A * at::softplus(nn::linear(x, w.gdn.in_a).to(rdt_) + w.gdn.dt_bias);

  // Kernel inputs in fp32, head-major [B, H, L, d]: L2-normalised q, k (q scaled by
  // dk^-0.5), value-head grouping.
  Tensor q = nn::l2_norm_heads(qkv[0].view({B, L, Hk, dk}), 1.0 / std::sqrt(static_cast<double>(dk)));
  Tensor k = nn::l2_norm_heads(qkv[1].view({B, L, Hk, dk}), 1.0);
  Tensor v = qkv[2].view({B, L, Hv, dv}).transpose(1, 2).to(rdt_);
  if (Hv > Hk) {
    q = q.repeat_interleave(Hv / Hk, 1);
    k = k.repeat_interleave(Hv / Hk, 1);
  }
  g = g.transpose(1, 2), beta = beta.transpose(1, 2);  // [B, Hv, L]

  Tensor o;
  if (L == 1 && !grad_enabled()) {
    if (!c.state.defined()) c.state = at::zeros({B, Hv, dk, dv}, q.options());
    o = nn::gated_delta_rule_step_(c.state, q, k, v, g, beta);
  } else {
    auto r = nn::gated_delta_rule_chunked(q, k, v, g, beta, c.state, 64);
    o = r.out;
    c.state = r.state;
  }
  return nn::gated_rms_norm_heads(o, z, w.gdn.norm, cfg_.rms_norm_eps);  // out_proj: see layer()
}

Tensor Qwen35Model::gated_attention(const Layer& w, const Tensor& x, LayerCache& c,
                                    int64_t past) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  // q_proj rows are per head [query (hd) | gate (hd)].
  Tensor qg = nn::linear(x, w.attn.q).view({B, L, H, 2 * hd});
  auto parts = qg.split(hd, 3);  // [query | gate] per head
  Tensor q = nn::rms_norm_1p(parts[0], w.attn.q_norm, cfg_.rms_norm_eps);
  Tensor gate = parts[1].reshape({B, L, H * hd});
  Tensor k = nn::rms_norm_1p(nn::linear(x, w.attn.k).view({B, L, KV, hd}), w.attn.k_norm,
                             cfg_.rms_norm_eps);
  Tensor v = nn::linear(x, w.attn.v).view({B, L, KV, hd});
  q = nn::apply_rope(q, inv_freq_, past).transpose(1, 2).contiguous();  // [B, H, L, hd]
  k = nn::apply_rope(k, inv_freq_, past).transpose(1, 2);               // [B, KV, L, hd]
  v = v.transpose(1, 2);
  Tensor k_all, v_all;
  nn::kv_append(c.k, c.v, k, v, past, k_all, v_all);
  Tensor ctx = nn::causal_attention(q, k_all, v_all, past, 1.0 / std::sqrt(static_cast<double>(hd)));
  return ctx * at::sigmoid(gate);  // o_proj: see layer()
}

Tensor Qwen35Model::embed(const Tensor& ids) const {
  return embed_.index_select(0, ids.reshape(-1)).view({ids.size(0), ids.size(1), cfg_.hidden_size});
}

Tensor Qwen35Model::mixer_core(int64_t l, const Tensor& h, LayerCache& c, int64_t past) const {
  const Layer& w = layers_.at(l);
  Tensor a = nn::rms_norm_1p(h, w.in_norm, cfg_.rms_norm_eps);
  return w.linear ? gated_delta_net(w, a, c) : gated_attention(w, a, c, past);
}

Tensor Qwen35Model::mixer_out_weight(int64_t l) const {
  const Layer& w = layers_.at(l);
  return w.linear ? w.gdn.out : w.attn.o;
}

Tensor Qwen35Model::mlp_core(int64_t l, const Tensor& x) const {
  const Layer& w = layers_.at(l);
  Tensor m = nn::rms_norm_1p(x, w.post_norm, cfg_.rms_norm_eps);
  return nn::silu_mul(nn::linear(m, w.gate), nn::linear(m, w.up));
}

Tensor Qwen35Model::mlp_down_weight(int64_t l) const { return layers_.at(l).down; }

Tensor Qwen35Model::layer(int64_t l, const Tensor& h, LayerCache& c, int64_t past) const {
  Tensor x = h + nn::linear(mixer_core(l, h, c, past), mixer_out_weight(l));
  return x + nn::linear(mlp_core(l, x), mlp_down_weight(l));
}

std::vector<std::pair<std::string, Tensor*>> Qwen35Model::mutable_weights() {
  std::vector<std::pair<std::string, Tensor*>> out = {{"embed_tokens.weight", &embed_}, {"norm.weight", &norm_}};
  if (!cfg_.tie_word_embeddings) out.push_back({"lm_head.weight", &lm_head_});
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", &L.in_norm});
    out.push_back({p + "post_attention_layernorm.weight", &L.post_norm});
    out.push_back({p + "mlp.gate_proj.weight", &L.gate});
    out.push_back({p + "mlp.up_proj.weight", &L.up});
    out.push_back({p + "mlp.down_proj.weight", &L.down});
    if (L.linear) {
      const std::string a = p + "linear_attn.";
      out.push_back({a + "in_proj_qkv.weight", &L.gdn.in_qkv});
      out.push_back({a + "in_proj_z.weight", &L.gdn.in_z});
      out.push_back({a + "in_proj_b.weight", &L.gdn.in_b});
      out.push_back({a + "in_proj_a.weight", &L.gdn.in_a});
      out.push_back({a + "conv1d.weight", &L.gdn.conv});
      out.push_back({a + "A_log", &L.gdn.neg_A});
      out.push_back({a + "dt_bias", &L.gdn.dt_bias});
      out.push_back({a + "norm.weight", &L.gdn.norm});
      out.push_back({a + "out_proj.weight", &L.gdn.out});
    } else {
      const std::string a = p + "self_attn.";
      out.push_back({a + "q_proj.weight", &L.attn.q});
      out.push_back({a + "k_proj.weight", &L.attn.k});
      out.push_back({a + "v_proj.weight", &L.attn.v});
      out.push_back({a + "o_proj.weight", &L.attn.o});
      out.push_back({a + "q_norm.weight", &L.attn.q_norm});
      out.push_back({a + "k_norm.weight", &L.attn.k_norm});
    }
  }
  return out;
}

Tensor Qwen35Model::final_norm(const Tensor& h) const { return nn::rms_norm_1p(h, norm_, cfg_.rms_norm_eps); }

Tensor Qwen35Model::logits(const Tensor& hidden) const {
  return nn::linear(hidden, lm_head_).to(rdt_);  // float32 (float64 for float64 test models)
}

nn::RowsCrossEntropy Qwen35Model::rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const {
  if (!rows.device().is_cpu() || rows.scalar_type() != lm_head_.scalar_type()) return CausalLM::rows_cross_entropy(rows, labels, scale);
  return nn::cross_entropy_rows(rows, lm_head_, labels, scale, 256);
}

// ---- Batched decode (see decode_step in qwen35.h). Each function mirrors its single-sequence
// counterpart above op for op, with nn::linear_rows for the projections; keep them in step.

Tensor Qwen35Model::gated_delta_net_rows(const Layer& w, const Tensor& x, const std::vector<Cache*>& caches,
                                         int64_t l) const {
  const int64_t B = x.size(0), L = 1;
  const int64_t Hk = cfg_.linear_num_key_heads, Hv = cfg_.linear_num_value_heads;
  const int64_t dk = cfg_.linear_key_head_dim, dv = cfg_.linear_value_head_dim;
  const int64_t kd = cfg_.linear_key_dim();

  Tensor proj = nn::linear_rows(x, w.gdn.in_qkv);  // [B, 1, C]
  const int64_t C = proj.size(2), Kc = w.gdn.conv.size(1);
  std::vector<Tensor> hist(B);
  for (int64_t b = 0; b < B; ++b) {
    const Tensor& h = caches[b]->layers[l].conv;
    hist[b] = h.defined() ? h : at::zeros({1, C, Kc - 1}, proj.options());
  }
  Tensor new_hist;
  Tensor mixed = nn::causal_conv_silu(proj, w.gdn.conv, at::cat(hist, 0), new_hist);
  for (int64_t b = 0; b < B; ++b) caches[b]->layers[l].conv = new_hist.narrow(0, b, 1);

  auto qkv = mixed.split_with_sizes({kd, kd, Hv * dv}, 2);
  Tensor z = nn::linear_rows(x, w.gdn.in_z).view({B, L, Hv, dv});
  // sigmoid/softplus on rows of Hv values: ATen's vector kernels (Sleef) and its scalar
  // tail loop round differently, and which one an element gets depends on where it sits
  // in the tensor, so these two run per sequence, exactly as for a sequence alone.
  Tensor b_in = nn::linear_rows(x, w.gdn.in_b), a_in = nn::linear_rows(x, w.gdn.in_a);
  std::vector<Tensor> betas(B), gs(B);
  for (int64_t b = 0; b < B; ++b) {
    betas[b] = at::sigmoid(b_in.narrow(0, b, 1)).to(rdt_);
    gs[b] = w.gdn.neg_A * at::softplus(a_in.narrow(0, b, 1).to(rdt_) + w.gdn.dt_bias);
  }
  Tensor beta = at::cat(betas, 0), g = at::cat(gs, 0);  // [B, 1, Hv]
  Tensor q = nn::l2_norm_heads(qkv[0].view({B, L, Hk, dk}), 1.0 / std::sqrt(static_cast<double>(dk)));
  Tensor k = nn::l2_norm_heads(qkv[1].view({B, L, Hk, dk}), 1.0);
  Tensor v = qkv[2].view({B, L, Hv, dv}).transpose(1, 2).to(rdt_);  // [B, Hv, 1, d]
  if (Hv > Hk) {
    q = q.repeat_interleave(Hv / Hk, 1);
    k = k.repeat_interleave(Hv / Hk, 1);
  }
  g = g.transpose(1, 2), beta = beta.transpose(1, 2);  // [B, Hv, 1]

  // Each sequence's recurrent state is updated in place in its own cache.
  std::vector<Tensor> outs(B);
  for (int64_t b = 0; b < B; ++b) {
    Tensor& state = caches[b]->layers[l].state;
    if (!state.defined()) state = at::zeros({1, Hv, dk, dv}, q.options());
    outs[b] = nn::gated_delta_rule_step_(state, q.narrow(0, b, 1), k.narrow(0, b, 1), v.narrow(0, b, 1),
                                         g.narrow(0, b, 1), beta.narrow(0, b, 1));
  }
  Tensor o = at::cat(outs, 0);  // [B, Hv, 1, dv]
  return nn::linear_rows(nn::gated_rms_norm_heads(o, z, w.gdn.norm, cfg_.rms_norm_eps), w.gdn.out);
}

Tensor Qwen35Model::gated_attention_rows(const Layer& w, const Tensor& x, const std::vector<Cache*>& caches,
                                         int64_t l) const {
  const int64_t B = x.size(0), L = 1;
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  Tensor qg = nn::linear_rows(x, w.attn.q).view({B, L, H, 2 * hd});
  auto parts = qg.split(hd, 3);
  Tensor q = nn::rms_norm_1p(parts[0], w.attn.q_norm, cfg_.rms_norm_eps);
  Tensor gate = parts[1].reshape({B, L, H * hd});
  Tensor k = nn::rms_norm_1p(nn::linear_rows(x, w.attn.k).view({B, L, KV, hd}), w.attn.k_norm,
                             cfg_.rms_norm_eps);
  Tensor v = nn::linear_rows(x, w.attn.v).view({B, L, KV, hd});
  // RoPE position and KV history are per sequence.
  std::vector<Tensor> ctx(B);
  for (int64_t b = 0; b < B; ++b) {
    LayerCache& c = caches[b]->layers[l];
    const int64_t past = caches[b]->length;
    Tensor qb = nn::apply_rope(q.narrow(0, b, 1), inv_freq_, past).transpose(1, 2).contiguous();
    Tensor kb = nn::apply_rope(k.narrow(0, b, 1), inv_freq_, past).transpose(1, 2);
    Tensor vb = v.narrow(0, b, 1).transpose(1, 2);
    Tensor k_all, v_all;
    nn::kv_append(c.k, c.v, kb, vb, past, k_all, v_all);
    ctx[b] = nn::causal_attention(qb, k_all, v_all, past, 1.0 / std::sqrt(static_cast<double>(hd)));
  }
  return nn::linear_rows(at::cat(ctx, 0) * at::sigmoid(gate), w.attn.o);
}

Tensor Qwen35Model::decode_step(const Tensor& ids, const std::vector<Cache*>& caches) {
  check_decode_step_args(*this, ids, caches);
  NoGrad ng;
  const int64_t B = ids.size(0);
  Tensor h = embed(ids.view({B, 1}));  // [B, 1, D]
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const Layer& w = layers_[l];
    Tensor a = nn::rms_norm_1p(h, w.in_norm, cfg_.rms_norm_eps);
    Tensor x = h + (w.linear ? gated_delta_net_rows(w, a, caches, l) : gated_attention_rows(w, a, caches, l));
    Tensor m = nn::rms_norm_1p(x, w.post_norm, cfg_.rms_norm_eps);
    h = x + nn::linear_rows(nn::silu_mul(nn::linear_rows(m, w.gate), nn::linear_rows(m, w.up)), w.down);
  }
  for (Cache* c : caches) c->length += 1;
  return nn::linear_rows(final_norm(h), lm_head_).to(rdt_).view({B, -1});
}

}  // namespace s0::models
