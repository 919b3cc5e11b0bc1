#include "s0/models/blocks.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "s0/nn/activations.h"
#include "s0/nn/attention.h"
#include "s0/nn/attention_step.h"
#include "s0/nn/linear.h"

namespace s0::models {

Tensor project(const Tensor& x, const Tensor& w) {
  return stepping(x) ? nn::linear_rows(x, w) : nn::linear(x, w);
}

namespace {

// The linear-output hooks of the groups' adapters applied to y = x W^T of module `name`.
Tensor linear_hooks(const Tensor& x, Tensor y, const std::string& name, const SeqGroups& groups) {
  bool hooked = false;
  for (const auto& g : groups) hooked = hooked || (g.adapter && g.adapter->has_linear_hook());
  if (!hooked) return y;
  if (groups.size() == 1) return groups[0].adapter->linear_output(name, x, y);
  // Rows grouped by adapter: each hooked adapter sees all of its rows in one call (LoRA: one
  // pass over its factors for the group, not one per sequence), in batch order.
  std::vector<std::pair<const Adapter*, std::vector<int64_t>>> by_adapter;
  int64_t row = 0;
  for (const auto& g : groups) {
    if (g.adapter && g.adapter->has_linear_hook()) {
      auto it = std::find_if(by_adapter.begin(), by_adapter.end(), [&](const auto& e) { return e.first == g.adapter; });
      if (it == by_adapter.end()) it = by_adapter.insert(by_adapter.end(), {g.adapter, {}});
      for (int64_t i = 0; i < g.rows; ++i) it->second.push_back(row + i);
    }
    row += g.rows;
  }
  for (const auto& [adapter, rows] : by_adapter) {
    if (static_cast<int64_t>(rows.size()) == y.size(0)) {
      y = adapter->linear_output(name, x, y);
      continue;
    }
    Tensor idx = at::tensor(rows, at::kLong);
    y = y.index_copy(0, idx, adapter->linear_output(name, x.index_select(0, idx), y.index_select(0, idx)));
  }
  return y;
}

}  // namespace

Tensor project(const Tensor& x, const Tensor& w, const std::string& name, const SeqGroups& groups) {
  return linear_hooks(x, project(x, w), name, groups);
}

std::vector<Tensor> project_many(const Tensor& x, const std::vector<const NamedLinear*>& lins,
                                 const SeqGroups& groups) {
  std::vector<Tensor> ys;
  if (stepping(x)) {
    std::vector<Tensor> w;
    for (const NamedLinear* l : lins) w.push_back(l->w);
    ys = nn::linear_rows_multi(x, w);
  } else {
    for (const NamedLinear* l : lins) ys.push_back(project(x, l->w));
  }
  for (size_t i = 0; i < lins.size(); ++i) {
    ys[i] = linear_hooks(x, ys[i], lins[i]->name, groups);
    if (lins[i]->b.defined()) ys[i] = ys[i] + lins[i]->b;
  }
  return ys;
}

std::vector<Tensor> project_fused(const Tensor& x, const std::vector<FusedLinear>& items, const SeqGroups& groups) {
  bool hooked = false;
  for (const auto& g : groups) hooked = hooked || (g.adapter && g.adapter->has_linear_hook());
  const bool decode = stepping(x) && x.device().is_cpu() && x.scalar_type() != at::kDouble;
  bool fused = decode && !hooked;
  for (const FusedLinear& it : items) fused = fused && !it.lin->b.defined();
  if (fused) {
    std::vector<nn::RowsProduct> ps;
    for (const FusedLinear& it : items) ps.push_back({it.lin->w, it.in_scale, it.out_scale, it.col_scale, it.residual});
    return nn::linear_rows_fused(x, ps);
  }
  // Op by op: each distinct input scale once; the products of one input through project_many.
  std::vector<double> scales;
  for (const FusedLinear& it : items)
    if (std::find(scales.begin(), scales.end(), it.in_scale) == scales.end()) scales.push_back(it.in_scale);
  std::vector<Tensor> ys(items.size());
  for (double s : scales) {
    const Tensor xs = s == 1 ? x : decode ? nn::scale(x, s) : x * s;
    std::vector<const NamedLinear*> lins;
    std::vector<size_t> which;
    for (size_t i = 0; i < items.size(); ++i)
      if (items[i].in_scale == s) lins.push_back(items[i].lin), which.push_back(i);
    auto part = project_many(xs, lins, groups);
    for (size_t j = 0; j < which.size(); ++j) ys[which[j]] = part[j];
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const FusedLinear& it = items[i];
    Tensor& y = ys[i];
    if (it.out_scale != 1) y = decode ? nn::scale(y, it.out_scale) : y * it.out_scale;
    if (it.col_scale.defined()) y = decode ? nn::mul_last(y, it.col_scale) : y * it.col_scale;
    if (it.residual.defined()) y = it.residual + y;
  }
  return ys;
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
