#include "s0/models/blocks.h"

#include "s0/nn/attention.h"
#include "s0/nn/attention_step.h"
#include "s0/nn/linear.h"

namespace s0::models {

Tensor project(const Tensor& x, const Tensor& w) {
  return stepping(x) ? nn::linear_rows(x, w) : nn::linear(x, w);
}

Tensor project(const Tensor& x, const Tensor& w, const std::string& name, const SeqGroups& groups) {
  Tensor y = project(x, w);
  bool hooked = false;
  for (const auto& g : groups) hooked = hooked || (g.adapter && g.adapter->has_linear_hook());
  if (!hooked) return y;
  return per_group(groups, [&](const SeqGroup& g, int64_t r) {
    Tensor yg = rows_of(y, g, r);
    if (!g.adapter || !g.adapter->has_linear_hook()) return yg;
    return g.adapter->linear_output(name, rows_of(x, g, r), yg);
  });
}

Tensor NamedLinear::operator()(const Tensor& x, const SeqGroups& gs) const {
  Tensor y = project(x, w, name, gs);
  return b.defined() ? y + b : y;
}

bool wants_readout_hook(const SeqGroups& groups) {
  for (const auto& g : groups)
    if (g.adapter && g.adapter->has_readout_hook()) return true;
  return false;
}

Tensor readout_hook(int64_t layer, const Tensor& query, const Tensor& o, const SeqGroups& groups) {
  if (!wants_readout_hook(groups)) return o;
  return per_group(groups, [&](const SeqGroup& g, int64_t r) {
    Tensor og = rows_of(o, g, r);
    if (!g.adapter || !g.adapter->has_readout_hook()) return og;
    return g.adapter->recurrent_readout(layer, rows_of(query, g, r), og);
  });
}

Tensor rope_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& inv_freq,
                      const SeqGroups& groups, double scale) {
  // Decode: RoPE, the KV append and attention in one fused kernel (nn/attention_step.h).
  if (stepping(q) && nn::attention_step_supported(q) && inv_freq.scalar_type() == at::kFloat) {
    std::vector<nn::KvStepCache> caches;
    for (const SeqGroup& g : groups) caches.push_back({&g.cache->k, &g.cache->v, g.past, g.rows});
    return nn::attention_decode_step(q, k, v, inv_freq, scale, caches);
  }
  // RoPE positions and KV history are per group.
  return per_group(groups, [&](const SeqGroup& g, int64_t r) {
    LayerCache& c = *g.cache;
    Tensor qg = nn::apply_rope(rows_of(q, g, r), inv_freq, g.past).transpose(1, 2).contiguous();  // [b, H, L, hd]
    Tensor kg = nn::apply_rope(rows_of(k, g, r), inv_freq, g.past).transpose(1, 2);               // [b, KV, L, hd]
    Tensor vg = rows_of(v, g, r).transpose(1, 2);
    Tensor k_all, v_all;
    nn::kv_append(c.k, c.v, kg, vg, g.past, k_all, v_all);
    return nn::causal_attention(qg, k_all, v_all, g.past, scale);
  });
}

}  // namespace s0::models
