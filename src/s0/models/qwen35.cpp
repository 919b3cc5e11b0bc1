#include "s0/models/qwen35.h"

#include <cmath>

#include "s0/models/blocks.h"
#include "s0/models/weights.h"
#include "s0/nn/activations.h"
#include "s0/nn/attention.h"
#include "s0/nn/causal_conv.h"
#include "s0/nn/cross_entropy.h"
#include "s0/nn/gated_delta_rule.h"
#include "s0/nn/gdn_step.h"
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
  // Every weight comes from the one table of names and shapes (qwen35_tensor_shapes); a
  // missing tensor or a shape mismatch names both.
  layers_.resize(cfg_.num_hidden_layers);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) layers_[l].linear = cfg_.is_linear(l);
  auto ends_with = [](const std::string& s, const std::string& t) {
    return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  WeightArena arena;
  for (const auto& t : qwen35_tensor_shapes(cfg_)) {
    Tensor x = load_weight(dir, t.name, t.shape, dtype_, &arena);
    // HF rounds every parameter to the model dtype at load; keep that rounding, and hold
    // the recurrence's parameters in fp32 (conv as [C, Kc], A as neg_A = -exp(A_log)).
    if (ends_with(t.name, "conv1d.weight")) x = x.to(rdt_).squeeze(1).contiguous();
    else if (ends_with(t.name, "A_log")) x = -x.to(rdt_).exp();
    else if (ends_with(t.name, "dt_bias")) x = x.to(rdt_);
    *slot(t) = x;
  }
  if (cfg_.tie_word_embeddings) lm_head_ = embed_;
  inv_freq_ = nn::rope_inv_freq(cfg_.rotary_dim(), cfg_.rope_theta).to(rdt_);
}

Tensor* Qwen35Model::slot(const TensorShape& t) {
  const std::string& n = t.name;
  if (n == "embed_tokens.weight") return &embed_;
  if (n == "norm.weight") return &norm_;
  if (n == "lm_head.weight") return &lm_head_;
  const size_t dot = n.find('.', 7);
  if (n.rfind("layers.", 0) != 0 || dot == std::string::npos) throw Error("Qwen3.5: unknown tensor " + n);
  Layer& L = layers_.at(std::stoll(n.substr(7, dot - 7)));
  const std::string rest = n.substr(dot + 1);
  auto lin = [&](Linear& x) {
    x.name = n.substr(0, n.size() - 7);  // without ".weight"
    return &x.w;
  };
  if (rest == "input_layernorm.weight") return &L.in_norm;
  if (rest == "post_attention_layernorm.weight") return &L.post_norm;
  if (rest == "mlp.gate_proj.weight") return lin(L.gate);
  if (rest == "mlp.up_proj.weight") return lin(L.up);
  if (rest == "mlp.down_proj.weight") return lin(L.down);
  if (rest == "linear_attn.in_proj_qkv.weight") return lin(L.gdn.in_qkv);
  if (rest == "linear_attn.in_proj_z.weight") return lin(L.gdn.in_z);
  if (rest == "linear_attn.in_proj_b.weight") return lin(L.gdn.in_b);
  if (rest == "linear_attn.in_proj_a.weight") return lin(L.gdn.in_a);
  if (rest == "linear_attn.out_proj.weight") return lin(L.gdn.out);
  if (rest == "linear_attn.conv1d.weight") return &L.gdn.conv;
  if (rest == "linear_attn.A_log") return &L.gdn.neg_A;
  if (rest == "linear_attn.dt_bias") return &L.gdn.dt_bias;
  if (rest == "linear_attn.norm.weight") return &L.gdn.norm;
  if (rest == "self_attn.q_proj.weight") return lin(L.attn.q);
  if (rest == "self_attn.k_proj.weight") return lin(L.attn.k);
  if (rest == "self_attn.v_proj.weight") return lin(L.attn.v);
  if (rest == "self_attn.o_proj.weight") return lin(L.attn.o);
  if (rest == "self_attn.q_norm.weight") return &L.attn.q_norm;
  if (rest == "self_attn.k_norm.weight") return &L.attn.k_norm;
  throw Error("Qwen3.5: unknown tensor " + n);
}

Tensor Qwen35Model::gated_delta_net(int64_t l, const Layer& w, const Tensor& x, const SeqGroups& gs) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t Hk = cfg_.linear_num_key_heads, Hv = cfg_.linear_num_value_heads;
  const int64_t dk = cfg_.linear_key_head_dim, dv = cfg_.linear_value_head_dim;
  const int64_t kd = cfg_.linear_key_dim();
  const GdnWeights& a = w.gdn;

  // Decode: one fused kernel from the projections to the gated norm (nn/gdn_step.h), unless
  // an adapter wants the readout hook in between.
  if (stepping(x) && nn::gdn_step_supported(x) && !wants_readout_hook(gs)) {
    std::vector<nn::GdnStepCache> caches;
    for (const SeqGroup& g : gs) caches.push_back({&g.cache->conv, &g.cache->state, g.rows});
    auto in = project_many(x, {&a.in_qkv, &a.in_z, &a.in_b, &a.in_a}, gs);
    Tensor o = nn::gdn_decode_step(in[0].view({B, -1}), in[1].view({B, -1}), in[2].view({B, -1}), in[3].view({B, -1}),
                                   a.conv, a.neg_A, a.dt_bias, a.norm, {Hk, Hv, dk, dv}, cfg_.rms_norm_eps, caches);
    return o.view({B, 1, Hv * dv});
  }

  // Projections, then the causal conv + SiLU over the q|k|v channels, continuing each
  // group's conv history.
  Tensor proj = a.in_qkv(x, gs);
  Tensor mixed = per_group(gs, [&](const SeqGroup& g, int64_t r) {
    LayerCache& c = *g.cache;
    return nn::causal_conv_silu(rows_of(proj, g, r), a.conv, c.conv, c.conv);
  });
  auto qkv = mixed.split_with_sizes({kd, kd, Hv * dv}, 2);  // one backward (cat), not three
  Tensor z = a.in_z(x, gs).view({B, L, Hv, dv});
  // sigmoid/softplus on rows of Hv values: ATen's vector kernels (Sleef) and its scalar
  // tail loop round differently, and which one an element gets depends on where it sits
  // in the tensor, so these two run per group, exactly as for a sequence alone.
  Tensor b_in = a.in_b(x, gs), a_in = a.in_a(x, gs);
  Tensor beta = per_group(gs, [&](const SeqGroup& g, int64_t r) {
    return at::sigmoid(rows_of(b_in, g, r)).to(rdt_);  // sigmoid in model dtype
  });
  Tensor gate = per_group(gs, [&](const SeqGroup& g, int64_t r) {
    return a.neg_A * at::softplus(rows_of(a_in, g, r).to(rdt_) + a.dt_bias);
  });

  // Kernel inputs in fp32, head-major [B, H, L, d]: L2-normalised q, k (q scaled by
  // dk^-0.5), value-head grouping.
  Tensor q = nn::l2_norm_heads(qkv[0].view({B, L, Hk, dk}), 1.0 / std::sqrt(static_cast<double>(dk)));
  Tensor k = nn::l2_norm_heads(qkv[1].view({B, L, Hk, dk}), 1.0);
  Tensor v = qkv[2].view({B, L, Hv, dv}).transpose(1, 2).to(rdt_);
  if (Hv > Hk) {
    q = q.repeat_interleave(Hv / Hk, 1);
    k = k.repeat_interleave(Hv / Hk, 1);
  }
  gate = gate.transpose(1, 2), beta = beta.transpose(1, 2);  // [B, Hv, L]

  // The recurrence, from each group's state (zeros, or the adapter's initial state): the
  // in-place step in decode, the chunked kernel otherwise.
  const bool step = stepping(x);
  Tensor o = per_group(gs, [&](const SeqGroup& g, int64_t r) {
    LayerCache& c = *g.cache;
    Tensor qg = rows_of(q, g, r), kg = rows_of(k, g, r), vg = rows_of(v, g, r);
    Tensor gg = rows_of(gate, g, r), bg = rows_of(beta, g, r);
    if (step) {
      if (!c.state.defined()) c.state = at::zeros({g.rows, Hv, dk, dv}, q.options());
      return nn::gated_delta_rule_step_(c.state, qg, kg, vg, gg, bg);
    }
    auto res = nn::gated_delta_rule_chunked(qg, kg, vg, gg, bg, c.state, 64);
    c.state = res.state;
    return res.out;
  });
  o = readout_hook(l, q, o, gs);
  return nn::gated_rms_norm_heads(o, z, a.norm, cfg_.rms_norm_eps);  // out_proj: see layer()
}

Tensor Qwen35Model::gated_attention(const Layer& w, const Tensor& x, const SeqGroups& gs) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  const AttnWeights& a = w.attn;
  // q_proj rows are per head [query (hd) | gate (hd)].
  auto qkv = project_many(x, {&a.q, &a.k, &a.v}, gs);
  Tensor qg = qkv[0].view({B, L, H, 2 * hd});
  auto parts = qg.split(hd, 3);  // [query | gate] per head
  Tensor q = nn::rms_norm_1p(parts[0], a.q_norm, cfg_.rms_norm_eps);
  Tensor gate = parts[1].reshape({B, L, H * hd});
  Tensor k = nn::rms_norm_1p(qkv[1].view({B, L, KV, hd}), a.k_norm, cfg_.rms_norm_eps);
  Tensor v = qkv[2].view({B, L, KV, hd});
  Tensor ctx = rope_attention(q, k, v, inv_freq_, gs, 1.0 / std::sqrt(static_cast<double>(hd)));
  return ctx * at::sigmoid(gate);  // o_proj: see layer()
}

Tensor Qwen35Model::embed(const Tensor& ids) const { return nn::embedding(embed_, ids); }

Tensor Qwen35Model::mixer_core(int64_t l, const Tensor& h, const SeqGroups& gs) const {
  const Layer& w = layers_.at(l);
  Tensor a = nn::rms_norm_1p(h, w.in_norm, cfg_.rms_norm_eps);
  return w.linear ? gated_delta_net(l, w, a, gs) : gated_attention(w, a, gs);
}

const Qwen35Model::Linear& Qwen35Model::mixer_out(int64_t l) const {
  const Layer& w = layers_.at(l);
  return w.linear ? w.gdn.out : w.attn.o;
}

Tensor Qwen35Model::mixer_out_weight(int64_t l) const { return mixer_out(l).w; }

Tensor Qwen35Model::mlp_core(int64_t l, const Tensor& x) const { return mlp_core(l, x, SeqGroups{{nullptr, 0, x.size(0), nullptr}}); }

Tensor Qwen35Model::mlp_core(int64_t l, const Tensor& x, const SeqGroups& gs) const {
  const Layer& w = layers_.at(l);
  Tensor m = nn::rms_norm_1p(x, w.post_norm, cfg_.rms_norm_eps);
  auto gu = project_many(m, {&w.gate, &w.up}, gs);
  return nn::silu_mul(gu[0], gu[1]);
}

Tensor Qwen35Model::mlp_down_weight(int64_t l) const { return layers_.at(l).down.w; }

Tensor Qwen35Model::layer(int64_t l, const Tensor& h, const SeqGroups& gs) const {
  const Linear& out = mixer_out(l);
  const Linear& down = layers_.at(l).down;
  // The residual adds happen as the out_proj and down_proj outputs are stored (decode; op
  // by op otherwise, the same numbers).
  Tensor x = project_fused(mixer_core(l, h, gs), {{&out, 1, 1, {}, h}}, gs)[0];
  return project_fused(mlp_core(l, x, gs), {{&down, 1, 1, {}, x}}, gs)[0];
}

std::vector<std::pair<std::string, Tensor*>> Qwen35Model::mutable_weights() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const auto& t : qwen35_tensor_shapes(cfg_)) out.push_back({t.name, slot(t)});
  return out;
}

Tensor Qwen35Model::final_norm(const Tensor& h) const { return nn::rms_norm_1p(h, norm_, cfg_.rms_norm_eps); }

Tensor Qwen35Model::logits(const Tensor& hidden) const {
  return project(hidden, lm_head_).to(rdt_);  // float32 (float64 for float64 test models)
}

nn::RowsCrossEntropy Qwen35Model::rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const {
  if (!rows.device().is_cpu() || rows.scalar_type() != lm_head_.scalar_type()) return CausalLM::rows_cross_entropy(rows, labels, scale);
  return nn::cross_entropy_rows(rows, lm_head_, labels, scale, 256);
}

}  // namespace s0::models

namespace s0::models {

std::vector<const NamedLinear*> Qwen35Model::linears() const {
  std::vector<const NamedLinear*> out;
  for (const Layer& w : layers_) {
    if (w.linear) out.insert(out.end(), {&w.gdn.in_qkv, &w.gdn.in_z, &w.gdn.in_b, &w.gdn.in_a, &w.gdn.out});
    else out.insert(out.end(), {&w.attn.q, &w.attn.k, &w.attn.v, &w.attn.o});
    out.insert(out.end(), {&w.gate, &w.up, &w.down});
  }
  return out;
}

}  // namespace s0::models

namespace s0::models {

std::vector<int64_t> Qwen35Model::attention_layers() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l)
    if (!cfg_.is_linear(l)) out.push_back(l);
  return out;
}

}  // namespace s0::models
