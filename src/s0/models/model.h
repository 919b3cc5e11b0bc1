#pragma once
// The interface every model family implements, the per-sequence cache, and the single
// place where S0 initial states enter a model: Cache creation (new_cache).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "s0/nn/cross_entropy.h"
#include "s0/util/torch.h"

namespace s0::models {

// Initial recurrent states: layer index -> the layer's native state shape, float32
// (GatedDeltaNet [H, K, V], Mamba-2 [H, P, N]). Inference passes scaled states; training
// passes its leaves.
using StateMap = std::map<int64_t, Tensor>;

// What one layer keeps between calls. Recurrent layers use conv/state, attention layers k/v
// (Falcon-H1's parallel hybrid layers use all four).
struct LayerCache {
  Tensor conv;   // [B, C, Kc-1] last raw conv inputs (model dtype); undefined = zero history
  Tensor state;  // [B, H, K, V] / [B, H, P, N] float32 recurrent state; undefined = zeros
  Tensor k, v;   // [B, KV, capacity, head_dim]; the first Cache::length positions are valid
};

struct Cache {
  int64_t batch = 0;
  int64_t length = 0;  // tokens already processed (also the next RoPE position)
  std::vector<LayerCache> layers;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual std::string model_type() const = 0;      // "qwen3_5"
  virtual std::string recurrent_arch() const = 0;  // "gated_delta_net" | "mamba2"
  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_layers() const = 0;
  virtual std::vector<int64_t> eos_token_ids() const = 0;
  virtual std::vector<int64_t> recurrent_layers() const = 0;
  virtual std::vector<int64_t> state_shape() const = 0;  // per recurrent layer, without batch
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
  virtual Tensor layer(int64_t l, const Tensor& h, LayerCache& c, int64_t past) const = 0;
  virtual Tensor final_norm(const Tensor& h) const = 0;

  // Optional finer split of a decoder layer, for training: S0 needs input gradients only,
  // and those never need the forward values of the two output projections, so a recomputed
  // layer can skip both GEMMs. With x the residual stream after the mixer:
  //   x = h + mixer_core(h) W_out^T,   layer(h) = x + mlp_core(x) W_down^T.
  // mixer_core includes the input norm; mlp_core the post-mixer norm. A family that
  // provides the split returns true from splits_layers() (the others throw).
  virtual bool splits_layers() const { return false; }
  virtual Tensor mixer_core(int64_t l, const Tensor& h, LayerCache& c, int64_t past) const;
  virtual Tensor mixer_out_weight(int64_t l) const;  // W_out [D, mixer width]
  virtual Tensor mlp_core(int64_t l, const Tensor& x) const;
  virtual Tensor mlp_down_weight(int64_t l) const;  // W_down [D, MLP width]

  // Batched decode: one new token for each of B independent sequences, each continuing its
  // own cache (own length, own S0 initial states, own KV history). ids [B] int64; caches
  // all batch-1 caches of this model. Returns float32 logits [B, vocab] (float64 for
  // float64 test models); no autograd. Row b equals forward(ids[b], *caches[b], true):
  // the default runs exactly that, one sequence at a time; a family may override it to
  // share the weight reads across the batch (Qwen3.5 does, bitwise equal per row).
  virtual Tensor decode_step(const Tensor& ids, const std::vector<Cache*>& caches);

  // The S0 entry point. A fresh cache for `batch` sequences; each recurrent layer in
  // `states` starts from that state (broadcast over the batch), the others from zeros.
  // Differentiable: gradients flow from the forward pass back to the given tensors.
  Cache new_cache(int64_t batch, const StateMap* states = nullptr) const;
};

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
