#pragma once
// The interface every model family implements and the per-sequence cache. Adapters (S0
// states, ...) enter a model only through adapter.h's door: cache creation here
// (new_cache / new_layer_cache) and the hook points the families consult.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "s0/models/adapter.h"
#include "s0/nn/cross_entropy.h"
#include "s0/util/torch.h"

namespace s0::models {

struct NamedLinear;  // a linear layer's weight, bias and hook name (blocks.h)

// What one layer keeps between calls. Recurrent layers use conv/state, attention layers k/v
// (Falcon-H1's parallel hybrid layers use all four).
struct LayerCache {
  Tensor conv;   // [B, C, Kc-1] last raw conv inputs (model dtype); undefined = zero history
  Tensor state;  // [B, H, K, V] / [B, H, P, N] float32 recurrent state; undefined = zeros
  Tensor k, v;   // [B, KV, capacity, head_dim]; the first Cache::length positions are valid
};

// A sequence (or a batch of sequences that advance together) as the model sees it: its
// per-layer cache, how many tokens it has processed, and the adapter it carries. Made only
// by CausalLM::new_cache (or copy_cache); the adapter decides how it starts.
struct Cache {
  int64_t batch = 0;
  int64_t length = 0;  // tokens already processed (also the next RoPE position)
  std::vector<LayerCache> layers;
  std::shared_ptr<const Adapter> adapter;  // null: the base model
};

// An independent copy of `c` (same adapter): a prompt prefilled once, then sampled n ways.
Cache copy_cache(const Cache& c);

// One forward call advances one or more groups of rows: consecutive rows of the input
// belong to one group, which continues its own layer cache from its own position with its
// own adapter. A whole-cache forward is one group; a batched decode step one group per
// sequence. Layers run every per-sequence operation (conv history, recurrence, RoPE, KV,
// adapter hooks) group by group and everything else on all rows at once.
struct SeqGroup {
  LayerCache* cache = nullptr;
  int64_t past = 0;  // tokens the group's cache already holds
  int64_t rows = 1;
  const Adapter* adapter = nullptr;
};
using SeqGroups = std::vector<SeqGroup>;

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual std::string model_type() const = 0;      // "qwen3_5"
  virtual std::string recurrent_arch() const = 0;  // "gated_delta_net" | "mamba2" | "none"
  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_layers() const = 0;
  virtual std::vector<int64_t> eos_token_ids() const = 0;
  virtual std::vector<int64_t> recurrent_layers() const = 0;
  virtual std::vector<int64_t> state_shape() const = 0;  // per recurrent layer, without batch
  // Layers with softmax attention and a KV cache (prefix tuning's layers), and their KV
  // shape {num_key_value_heads, head_dim}.
  virtual std::vector<int64_t> attention_layers() const = 0;
  virtual std::vector<int64_t> kv_shape() const = 0;
  virtual at::ScalarType dtype() const = 0;

  // ids [B, L] int64 continuing `cache` (which is updated). Returns float32 logits
  // (float64 for float64 test models) [B, L, vocab], or [B, 1, vocab] for the last
  // position only when `last_only`.
  Tensor forward(const Tensor& ids, Cache& cache, bool last_only = false);

  // The two halves of forward: final-normed hidden states [B, L, D] (model dtype) for ids
  // continuing `cache`, and float32 logits for any rows of them (training picks the
  // completion positions only, so the full [L, vocab] matrix is never formed).
  Tensor hidden(const Tensor& ids, Cache& cache);
  virtual Tensor logits(const Tensor& hidden) const = 0;

  // Training's loss head: the cross-entropy of logits(rows) against labels [M] for
  // final-normed hidden rows [M, D] (model dtype), summed over the rows, and its gradient
  // d(scale * sum)/d rows, without autograd. The default goes through logits() and
  // autograd; families override it with a fused kernel that never holds all the logits.
  virtual nn::RowsCrossEntropy rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const;

  // The pieces hidden() is made of, one decoder layer at a time (training recomputes layers
  // one by one to bound memory). `past` = tokens already in the cache.
  virtual Tensor embed(const Tensor& ids) const = 0;                              // [B, L, D]
  virtual Tensor layer(int64_t l, const Tensor& h, const SeqGroups& groups) const = 0;
  // The one-group case: rows of h all continue `c` from position `past`.
  Tensor layer(int64_t l, const Tensor& h, LayerCache& c, int64_t past, const Adapter* adapter = nullptr) const;
  virtual Tensor final_norm(const Tensor& h) const = 0;

  // Every linear layer whose output passes the adapter door's linear hook, in forward order:
  // module name ("layers.3.self_attn.q_proj", the hook's name) and weight as held (model
  // dtype; [out, in], or in k-pairs after set_pair_layout: nn::out_features/in_features).
  // LoRA picks its targets and shapes here.
  std::vector<std::pair<std::string, Tensor>> linear_layers() const;
  // The same layers as held: each family lists its modules once, here.
  virtual std::vector<const NamedLinear*> linears() const = 0;
  // The embedding table and the output head as held (the same tensor twice when tied).
  virtual std::vector<Tensor*> table_and_head() = 0;

  // The weight layout for generation. set_pair_layout(true) re-lays, in place (no second
  // copy), every weight matrix that nn::can_pair_layout takes into the k-pair layout the
  // decode kernel reads fastest on CPUs without AMX (nn/linear.h): each linear layer, the
  // output head and the embedding table (tied: one tensor); false lays them back in rows.
  // Returns how many matrices changed. Never while the model runs. Every computation works
  // in either layout, but training wants rows (under autograd a k-pair weight is read
  // through a temporary copy): trainers lay the weights back first.
  int64_t set_pair_layout(bool on);
  // Whether any weight is in k-pairs now.
  bool pair_layout();

  // Optional finer split of a decoder layer, for training: S0 needs input gradients only,
  // and those never need the forward values of the two output projections, so a recomputed
  // layer can skip both GEMMs. With x the residual stream after the mixer:
  //   x = h + mixer_core(h) W_out^T,   layer(h) = x + mlp_core(x) W_down^T.
  // mixer_core includes the input norm; mlp_core the post-mixer norm. A family that
  // provides the split returns true from splits_layers() (the others throw).
  virtual bool splits_layers() const { return false; }
  virtual Tensor mixer_core(int64_t l, const Tensor& h, const SeqGroups& groups) const;
  Tensor mixer_core(int64_t l, const Tensor& h, LayerCache& c, int64_t past, const Adapter* adapter = nullptr) const;
  virtual Tensor mixer_out_weight(int64_t l) const;  // W_out [D, mixer width]
  virtual Tensor mlp_core(int64_t l, const Tensor& x) const;
  virtual Tensor mlp_down_weight(int64_t l) const;  // W_down [D, MLP width]

  // The decode step: one new token for each of B independent sequences, each continuing its
  // own cache (own length, own adapter, own KV history). ids [B] int64; caches all batch-1
  // caches of this model. Returns float32 logits [B, vocab] (float64 for float64 test
  // models); no autograd. One pass over the layers for the whole batch (projections share
  // their weight reads); row b is bitwise equal to forward(ids[b], *caches[b], true), and a
  // single sequence's next token is simply the B = 1 case.
  Tensor decode_step(const Tensor& ids, const std::vector<Cache*>& caches);

  // The adapter door's first half. A fresh cache for `batch` sequences carrying `adapter`:
  // each recurrent layer the adapter gives an initial state starts from it (broadcast over
  // the batch), the others from zeros; with a prefix, every attention layer's KV cache holds
  // the prefix's n keys/values and the cache's length starts at n. Differentiable: gradients flow from the forward pass
  // back to the adapter's tensors. The StateMap form wraps the states in InitialStates.
  Cache new_cache(int64_t batch, std::shared_ptr<const Adapter> adapter = nullptr) const;
  Cache new_cache(int64_t batch, const StateMap* states) const;
  // One layer's fresh cache entry (training recomputes layers one at a time). The only
  // place a cache's initial state is written.
  LayerCache new_layer_cache(int64_t layer, int64_t batch, const Adapter* adapter) const;

 private:
  // Checks an adapter's initial states against this model (layer kinds and shapes).
  void check_adapter(const Adapter& a) const;
};

// Generation's weight layout: the k-pair layout where nn::pair_layout_pays() on this CPU
// (bf16 models), else unchanged. Returns whether the weights are in k-pairs afterwards.
bool use_generation_layout(CausalLM& m);

// The argument checks of decode_step (shared by the overrides); throws s0::Error.
void check_decode_step_args(const CausalLM& m, const Tensor& ids, const std::vector<Cache*>& caches);

// Reads config.json, picks the family, loads the weights in `dtype` (kBFloat16 or kFloat).
std::unique_ptr<CausalLM> load_model(const std::string& dir, at::ScalarType dtype);

// Parses "bf16" | "f32" (also "bfloat16", "float32").
at::ScalarType parse_dtype(const std::string& s);
std::string dtype_str(at::ScalarType t);

// Process set-up for inference/training: `n` intra-op threads (n <= 0: all cores;
// libtorch starts with one), and malloc kept from returning large blocks to the kernel
// (otherwise every multi-MB activation is a fresh mmap whose page faults cost more than
// the arithmetic on it).
void configure_runtime(int n);

}  // namespace s0::models
