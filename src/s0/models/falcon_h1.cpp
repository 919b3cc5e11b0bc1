#include "s0/models/falcon_h1.h"

#include <cmath>

#include "s0/models/blocks.h"
#include "s0/models/weights.h"
#include "s0/nn/activations.h"
#include "s0/nn/attention.h"
#include "s0/nn/causal_conv.h"
#include "s0/nn/cross_entropy.h"
#include "s0/nn/linear.h"
#include "s0/nn/norms.h"
#include "s0/nn/ssd_scan.h"
#include "s0/nn/ssd_step.h"
#include "s0/util/error.h"

namespace s0::models {

FalconH1Model::FalconH1Model(const io::ModelDir& dir, at::ScalarType dtype)
    : cfg_(FalconH1Config::from_json(dir.config(), dir.config_path())),
      dtype_(dtype),
      rdt_(dtype == at::kDouble ? at::kDouble : at::kFloat) {
  if (dtype != at::kBFloat16 && dtype != at::kFloat && dtype != at::kDouble)
    throw Error("Falcon-H1: weight dtype must be bf16, f32 or f64");
  // The gated norm: the config decides; a checkpoint whose config does not say but which
  // carries the norm weights was trained with it (shared spec 1.3).
  if (!dir.config().contains("mamba_rms_norm") && dir.has("layers.0.mamba.norm.weight"))
    cfg_.mamba_rms_norm = true;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& t : falcon_h1_tensor_shapes(cfg_)) shapes[t.name] = t.shape;
  WeightArena arena;
  auto W = [&](const std::string& name) { return load_weight(dir, name, shapes.at(name), dtype_, &arena); };
  // HF rounds every parameter to the model dtype at load; keep that rounding, compute in fp32.
  auto R = [&](const std::string& name) { return W(name).to(rdt_); };
  auto Lin = [&](const std::string& name, bool bias) {
    return Linear{W(name + ".weight"), bias ? W(name + ".bias") : Tensor(), name};
  };

  embed_ = W("embed_tokens.weight");
  norm_ = W("final_layernorm.weight");
  // lm_head: absent means tied (as HF does when tie_word_embeddings is set).
  lm_head_ = !cfg_.tie_word_embeddings && dir.has("lm_head.weight") ? W("lm_head.weight") : embed_;
  inv_freq_ = nn::rope_inv_freq(cfg_.head_dim, cfg_.rope_theta).to(rdt_);

  // The muP vector over the in_proj output segments [z | x | B | C | dt] (not in checkpoints).
  const int64_t Ds = cfg_.mamba_d_ssm, GN = cfg_.mamba_n_groups * cfg_.mamba_d_state;
  const int64_t seg[5] = {Ds, Ds, GN, GN, cfg_.mamba_n_heads};
  std::vector<Tensor> parts;
  for (int i = 0; i < 5; ++i) parts.push_back(at::full({seg[i]}, cfg_.ssm_multipliers[i], at::kDouble));
  mup_ = at::cat(parts).to(dtype_);

  layers_.resize(cfg_.num_hidden_layers);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    L.in_norm = W(p + "input_layernorm.weight");
    L.pre_ff_norm = W(p + "pre_ff_layernorm.weight");
    const std::string a = p + "self_attn.";
    L.q = Lin(a + "q_proj", cfg_.attention_bias);
    L.k = Lin(a + "k_proj", cfg_.attention_bias);
    L.v = Lin(a + "v_proj", cfg_.attention_bias);
    L.o = Lin(a + "o_proj", cfg_.attention_bias);
    const std::string m = p + "mamba.";
    L.in_proj = Lin(m + "in_proj", cfg_.mamba_proj_bias);
    L.out_proj = Lin(m + "out_proj", cfg_.projectors_bias);
    L.conv = R(m + "conv1d.weight").squeeze(1).contiguous();
    if (cfg_.mamba_conv_bias) L.conv_b = R(m + "conv1d.bias");
    L.neg_A = -R(m + "A_log").exp();
    L.dt_bias = R(m + "dt_bias");
    L.D = R(m + "D");
    if (cfg_.mamba_rms_norm) L.norm = W(m + "norm.weight");
    const std::string f = p + "feed_forward.";
    L.gate = Lin(f + "gate_proj", cfg_.mlp_bias);
    L.up = Lin(f + "up_proj", cfg_.mlp_bias);
    L.down = Lin(f + "down_proj", cfg_.mlp_bias);
  }
}

std::vector<int64_t> FalconH1Model::recurrent_layers() const {
  std::vector<int64_t> r(cfg_.num_hidden_layers);
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) r[i] = i;
  return r;
}

namespace {

// A decode step (one token per row of a [B, 1, D] input, no autograd) on the CPU, not f64
// (f64 test models keep the reference ops): the row-wise kernels replace per-group ATen ops.
bool decode_rows(const Tensor& x) {
  return x.dim() == 3 && stepping(x) && x.device().is_cpu() && x.scalar_type() != at::kDouble;
}

}  // namespace

Tensor FalconH1Model::attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const SeqGroups& gs) const {
  const int64_t B = q_in.size(0), L = q_in.size(1);
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  Tensor q = q_in.view({B, L, H, hd});
  Tensor k = k_in.view({B, L, KV, hd});  // times key_multiplier before RoPE and caching
  Tensor v = v_in.view({B, L, KV, hd});
  return rope_attention(q, k, v, inv_freq_, gs, 1.0 / std::sqrt(static_cast<double>(hd)));
}

Tensor FalconH1Model::mamba(int64_t l, const Layer& w, const Tensor& zxbcdt, const SeqGroups& gs) const {
  // 1-2 (in_proj on the scaled input, times the muP vector; split z | xBC | dt) ran in layer().
  // Decode: steps 3-7 for every group in one fused kernel (nn/ssd_step.h), unless an
  // adapter wants the readout hook in between.
  if (stepping(zxbcdt) && nn::ssd_step_supported(zxbcdt) && !wants_readout_hook(gs)) {
    const int64_t B = zxbcdt.size(0);
    nn::SsdStepLayer sl{w.conv, w.conv_b, w.dt_bias, w.neg_A, w.D,
                        cfg_.mamba_rms_norm ? w.norm : Tensor()};
    sl.norm_before_gate = cfg_.mamba_norm_before_gate;
    sl.norm_eps = cfg_.rms_norm_eps;
    if (cfg_.time_step_min_clamp > 0 || cfg_.time_step_max_clamp >= 0) {  // as the unfused path
      sl.dt_min = cfg_.time_step_min_clamp;
      if (cfg_.time_step_max_clamp >= 0) sl.dt_max = cfg_.time_step_max_clamp;
    }
    std::vector<nn::SsdStepCache> caches;
    for (const SeqGroup& g : gs) caches.push_back({&g.cache->conv, &g.cache->state, g.rows});
    const nn::SsdStepShape shape{cfg_.mamba_n_heads, cfg_.mamba_d_head, cfg_.mamba_n_groups,
                                 cfg_.mamba_d_state};
    return nn::ssd_decode_step(zxbcdt.view({B, -1}), sl, shape, caches).view({B, 1, -1});
  }
  // 3-7 run per group: the conv history and the recurrence are the group's own, and the
  // transcendental functions then round exactly as for a sequence alone. (8, out_proj and
  // the branch multiplier: layer().)
  return per_group(gs, [&](const SeqGroup& g, int64_t r) { return mamba_core(l, w, rows_of(zxbcdt, g, r), g); });
}

Tensor FalconH1Model::mamba_core(int64_t l, const Layer& w, const Tensor& zxbcdt, const SeqGroup& grp) const {
  LayerCache& c = *grp.cache;
  const int64_t B = zxbcdt.size(0), L = zxbcdt.size(1);
  const int64_t H = cfg_.mamba_n_heads, P = cfg_.mamba_d_head, G = cfg_.mamba_n_groups,
                N = cfg_.mamba_d_state, Ds = cfg_.mamba_d_ssm, Cd = cfg_.conv_dim();
  auto parts = zxbcdt.split_with_sizes({Ds, Cd, H}, 2);
  // 3. Depthwise causal conv + SiLU over x|B|C, continuing the cache's window.
  Tensor xbc = w.conv_b.defined() ? nn::causal_conv_bias_silu(parts[1], w.conv, w.conv_b, c.conv, c.conv)
                                   : nn::causal_conv_silu(parts[1], w.conv, c.conv, c.conv);
  auto xs = xbc.to(rdt_).split_with_sizes({Ds, G * N, G * N}, 2);  // one conversion
  Tensor x = xs[0].reshape({B, L, H, P});
  Tensor Bm = xs[1].reshape({B, L, G, N});
  Tensor Cm = xs[2].reshape({B, L, G, N});
  // 5. dt = softplus(dt + dt_bias), clamped to time_step_limit when one is set.
  Tensor dt = at::softplus(parts[2].to(rdt_) + w.dt_bias);  // [B, L, H]
  if (cfg_.time_step_min_clamp > 0 || cfg_.time_step_max_clamp >= 0)
    dt = cfg_.time_step_max_clamp >= 0 ? dt.clamp(cfg_.time_step_min_clamp, cfg_.time_step_max_clamp)
                                       : dt.clamp_min(cfg_.time_step_min_clamp);

  // 6. The SSD recurrence from the cache's state (zeros, or the adapter's initial state).
  //    A step here is a decode the fused kernel does not take (f64, CUDA, the readout hook).
  Tensor y;  // [B, L, H, P]
  if (stepping(zxbcdt)) {
    if (!c.state.defined()) c.state = at::zeros({B, H, P, N}, x.options());
    if (!c.state.is_contiguous()) c.state = c.state.contiguous();
    y = nn::ssd_step_(c.state, x.select(1, 0), dt.select(1, 0), w.neg_A, Bm.select(1, 0), Cm.select(1, 0))
            .unsqueeze(1);
  } else {
    auto r = nn::ssd_scan_chunked(x.transpose(1, 2), dt.transpose(1, 2), w.neg_A, Bm.transpose(1, 2),
                                  Cm.transpose(1, 2), c.state, cfg_.mamba_chunk_size);
    y = r.out.transpose(1, 2);
    c.state = r.state;
  }
  if (grp.adapter && grp.adapter->has_readout_hook()) {
    // Head-major query C (groups expanded to heads) and readout, [B, H, L, N] / [B, H, L, P].
    Tensor Ch = Cm.repeat_interleave(H / G, 2).transpose(1, 2);
    y = grp.adapter->recurrent_readout(l, Ch, y.transpose(1, 2)).transpose(1, 2);
  }
  y = (y + x * w.D.view({1, 1, H, 1})).reshape({B, L, Ds});  // D skip on the post-conv x

  // 7. Gate: y * silu(z), or the grouped gated RMSNorm.
  Tensor z = at::silu(parts[0].to(rdt_));
  if (!cfg_.mamba_rms_norm) return (y * z).to(dtype_);
  auto group_norm = [&](const Tensor& t) {
    Tensor g = t.view({B, L, G, Ds / G});
    return (g * at::rsqrt(g.pow(2).mean(-1, true) + cfg_.rms_norm_eps)).view({B, L, Ds});
  };
  const Tensor wn = w.norm.to(rdt_);
  return (cfg_.mamba_norm_before_gate ? group_norm(y) * wn * z : group_norm(y * z) * wn).to(dtype_);
}

Tensor FalconH1Model::mlp(const Layer& w, const Tensor& x, const Tensor& m, const SeqGroups& gs) const {
  const double m0 = cfg_.mlp_multipliers[0], m1 = cfg_.mlp_multipliers[1];
  // Decode: gate (times m0) and up in one call, silu(g) u in one kernel over the whole batch
  // (each element computed the same way wherever it sits), down times m1 plus x as its
  // output is stored.
  if (decode_rows(m)) {
    auto gu = project_fused(m, {{&w.gate, 1, m0}, {&w.up}}, gs);
    return project_fused(nn::silu_mul(gu[0], gu[1]), {{&w.down, 1, m1, {}, x}}, gs)[0];
  }
  Tensor gp = w.gate(m, gs);
  // The gate multiplier acts inside the SiLU (per group: a transcendental function).
  Tensor g = per_group(gs, [&](const SeqGroup& grp, int64_t r) {
    return nn::silu(rows_of(gp, grp, r) * m0);
  });
  return x + w.down(g * w.up(m, gs), gs) * m1;
}

Tensor FalconH1Model::embed(const Tensor& ids) const {
  return nn::embedding(embed_, ids) * cfg_.embedding_multiplier;
}

Tensor FalconH1Model::layer(int64_t l, const Tensor& h, const SeqGroups& gs) const {
  const Layer& w = layers_.at(l);
  // The norms' rsqrt runs per group (its vector and scalar paths round differently); in a
  // decode step, one row-wise kernel over the whole batch instead.
  const bool rows = decode_rows(h);
  auto norm = [&](const Tensor& t, const Tensor& wn) {
    if (rows) return nn::rms_norm_rows(t, wn, cfg_.rms_norm_eps);
    return per_group(gs, [&](const SeqGroup& g, int64_t r) { return nn::rms_norm(rows_of(t, g, r), wn, cfg_.rms_norm_eps); });
  };
  Tensor u = norm(h, w.in_norm);  // shared by both branches
  // Both mixers' input projections in one call: in_proj on u * ssm_in_multiplier, times the
  // muP vector; q, k, v on u * attention_in_multiplier, k times key_multiplier.
  const double a_in = cfg_.attention_in_multiplier;
  auto in = project_fused(u, {{&w.in_proj, cfg_.ssm_in_multiplier, 1, mup_}, {&w.q, a_in}, {&w.k, a_in, cfg_.key_multiplier}, {&w.v, a_in}},
                          gs);
  Tensor o = mamba(l, w, in[0], gs);
  Tensor ctx = attention(in[1], in[2], in[3], gs);
  // x = (h + out_proj(o) ssm_out) + o_proj(ctx) attention_out, the adds as the outputs are stored.
  Tensor x = project_fused(o, {{&w.out_proj, 1, cfg_.ssm_out_multiplier, {}, h}}, gs)[0];
  x = project_fused(ctx, {{&w.o, 1, cfg_.attention_out_multiplier, {}, x}}, gs)[0];
  return mlp(w, x, norm(x, w.pre_ff_norm), gs);
}

Tensor FalconH1Model::final_norm(const Tensor& h) const {
  if (decode_rows(h)) return nn::rms_norm_rows(h, norm_, cfg_.rms_norm_eps);
  return nn::rms_norm(h, norm_, cfg_.rms_norm_eps);
}

Tensor FalconH1Model::logits(const Tensor& hidden) const {
  // float32 (float64 for float64 test models), times lm_head_multiplier.
  return project(hidden, lm_head_).to(rdt_) * cfg_.lm_head_multiplier;
}

nn::RowsCrossEntropy FalconH1Model::rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const {
  if (!rows.device().is_cpu() || rows.scalar_type() != lm_head_.scalar_type()) return CausalLM::rows_cross_entropy(rows, labels, scale);
  return nn::cross_entropy_rows(rows, lm_head_, labels, scale, 256, cfg_.lm_head_multiplier);
}

}  // namespace s0::models

namespace s0::models {

std::vector<const NamedLinear*> FalconH1Model::linears() const {
  std::vector<const NamedLinear*> out;
  for (const Layer& w : layers_)
    out.insert(out.end(), {&w.in_proj, &w.out_proj, &w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down});
  return out;
}

}  // namespace s0::models
