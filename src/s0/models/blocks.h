#pragma once
// Blocks both model families are built from: the projection (with the adapter door's
// linear hook), the step-vs-chunk switch, the per-group loop of a forward call, attention
// with RoPE and a KV cache, and the recurrent-readout hook.
#include <string>
#include <utility>
#include <vector>

#include "s0/models/model.h"

namespace s0::models {

// The step-vs-chunk switch: one token per row without autograd is the decode step (the
// recurrences update their state in place, projections stream their weights row by row);
// anything else is a chunked prefill or a training pass.
inline bool stepping(const Tensor& x) { return x.size(1) == 1 && !grad_enabled(); }

// y = x W^T. In a decode step each row is computed as if alone (nn::linear_rows: one pass
// over W for all rows, bitwise equal per row); otherwise nn::linear.
Tensor project(const Tensor& x, const Tensor& w);

// project(), then the linear-output hook of every group whose adapter has one. `name` is
// the Hugging Face module name ("layers.3.self_attn.q_proj").
Tensor project(const Tensor& x, const Tensor& w, const std::string& name, const SeqGroups& groups);

// A linear layer as the families hold it: weight [out, in] (model dtype), optional bias and
// the module name the adapter door's hook sees. y = project(x, w, name) (+ b).
struct NamedLinear {
  Tensor w, b;       // b undefined: no bias
  std::string name;  // "layers.3.self_attn.q_proj"
  Tensor operator()(const Tensor& x, const SeqGroups& groups) const;
};

// (*lin)(x, groups) for several layers of one input: in a decode step the products go
// through one nn::linear_rows_multi call (rows packed once, one parallel region), bitwise
// equal to doing them one by one.
std::vector<Tensor> project_many(const Tensor& x, const std::vector<const NamedLinear*>& lins,
                                 const SeqGroups& groups);

// A projection with the multipliers and the residual add around it (Falcon-H1's muP
// multipliers, every family's residual stream):
//   y = residual + mul_last(scale((*lin)(scale(x, in_scale)), out_scale), col_scale)
// each step skipped where unset (scales of 1, undefined tensors).
struct FusedLinear {
  FusedLinear(const NamedLinear* l, double in = 1, double out = 1, Tensor col = {}, Tensor res = {})
      : lin(l), in_scale(in), out_scale(out), col_scale(std::move(col)), residual(std::move(res)) {}
  const NamedLinear* lin;
  double in_scale, out_scale;
  Tensor col_scale, residual;
};

// The items' outputs. In a decode step on the CPU without linear hooks or biases they come
// from one nn::linear_rows_fused call (each distinct input scale applied and packed once,
// the rest done as the outputs are stored); otherwise op by op (ATen's ops, nn::scale and
// nn::mul_last in a decode step, the linear hooks seeing each product before the rest).
// Bitwise the same either way for every non-NaN value.
std::vector<Tensor> project_fused(const Tensor& x, const std::vector<FusedLinear>& items, const SeqGroups& groups);

// Whether any group's adapter wants the recurrent-readout hook, and the hook itself:
// query [B, H, L, K] and readout o [B, H, L, V] for all rows; returns o with each hooked
// group's rows replaced by what its adapter returns.
bool wants_readout_hook(const SeqGroups& groups);
Tensor readout_hook(int64_t layer, const Tensor& query, const Tensor& o, const SeqGroups& groups);

// Runs fn(group, first_row) for every group and concatenates the results along dim 0 (the
// rows of a group are first_row .. first_row + group.rows - 1 of the call's input). A
// single group is called once with no copy.
template <class F>
Tensor per_group(const SeqGroups& groups, F&& fn) {
  if (groups.size() == 1) return fn(groups[0], int64_t{0});
  std::vector<Tensor> outs;
  outs.reserve(groups.size());
  int64_t row = 0;
  for (const auto& g : groups) {
    outs.push_back(fn(g, row));
    row += g.rows;
  }
  return at::cat(outs, 0);
}

// Rows first_row .. first_row + g.rows - 1 of t (t itself when they are all of it).
inline Tensor rows_of(const Tensor& t, const SeqGroup& g, int64_t first_row) {
  return (first_row == 0 && g.rows == t.size(0)) ? t : t.narrow(0, first_row, g.rows);
}

// Causal self-attention of one layer with RoPE, continuing each group's KV cache from its
// own position: q [B, L, H, hd], k, v [B, L, KV, hd] (q, k already normed, not yet rotated).
// Returns [B, L, H*hd] in the model dtype.
Tensor rope_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& inv_freq,
                      const SeqGroups& groups, double scale);

}  // namespace s0::models
