#include "s0/models/model.h"

#include <malloc.h>

#include <set>
#include <thread>
#include <utility>

#include "s0/io/atomic_file.h"
#include "s0/util/blas_threads.h"
#include "s0/io/model_dir.h"
#include "s0/models/blocks.h"
#include "s0/models/falcon_h1.h"
#include "s0/models/qwen2.h"
#include "s0/models/qwen35.h"
#include "s0/nn/linear.h"
#include "s0/util/error.h"

namespace s0::models {

namespace {

// The KV heads' shape a prefix must have: [KV, n, head_dim].
std::vector<int64_t> prefix_kv_shape(const CausalLM& m, int64_t n) {
  const auto kv = m.kv_shape();
  return {kv.at(0), n, kv.at(1)};
}

}  // namespace

void CausalLM::check_adapter(const Adapter& a) const {
  if (const int64_t n = a.prefix_length(); n != 0) {
    if (n < 0) throw Error("prefix length must not be negative");
    const auto att = attention_layers();
    if (att.empty())
      throw Error("a prefix needs attention layers; this " + model_type() + " model has none");
    const auto want = prefix_kv_shape(*this, n);
    for (int64_t layer : att) {
      const auto [k, v] = a.prefix_kv(layer);
      for (const Tensor& t : {k, v})
        if (!t.defined() || t.sizes().vec() != want)
          throw Error("prefix keys/values for attention layer " + std::to_string(layer) + " have shape " +
                      (t.defined() ? io::shape_to_string(t.sizes().vec()) : std::string("(none)")) + ", expected " +
                      io::shape_to_string(want));
    }
  }
  const auto rec = recurrent_layers();
  const auto shape = state_shape();
  for (int64_t layer : a.state_layers()) {
    if (std::find(rec.begin(), rec.end(), layer) == rec.end())
      throw Error("initial state for layer " + std::to_string(layer) +
                  ", which is not a recurrent layer of this " + model_type() + " model");
    const Tensor s = a.initial_state(layer);
    if (s.defined() && s.sizes().vec() != shape)
      throw Error("initial state for layer " + std::to_string(layer) + " has shape " +
                  io::shape_to_string(s.sizes().vec()) + ", expected " + io::shape_to_string(shape));
  }
}

LayerCache CausalLM::new_layer_cache(int64_t layer, int64_t batch, const Adapter* adapter) const {
  if (batch <= 0) throw Error("cache batch size must be positive");
  LayerCache c;
  if (!adapter) return c;
  if (const int64_t n = adapter->prefix_length(); n > 0) {
    const auto att = attention_layers();
    if (std::find(att.begin(), att.end(), layer) != att.end()) {
      // The prefix's keys/values in the model dtype, one private contiguous copy per cache
      // (decode appends after them), still connected to the adapter's tensors by autograd.
      const auto [k, v] = adapter->prefix_kv(layer);
      const auto want = prefix_kv_shape(*this, n);
      if (!k.defined() || !v.defined() || k.sizes().vec() != want || v.sizes().vec() != want)
        throw Error("prefix keys/values for attention layer " + std::to_string(layer) + " must have shape " +
                    io::shape_to_string(want));
      std::vector<int64_t> full{batch};
      full.insert(full.end(), want.begin(), want.end());
      c.k = k.to(dtype()).unsqueeze(0).expand(full).clone(at::MemoryFormat::Contiguous);
      c.v = v.to(dtype()).unsqueeze(0).expand(full).clone(at::MemoryFormat::Contiguous);
    }
  }
  const Tensor s = adapter->initial_state(layer);
  if (!s.defined()) return c;
  const auto shape = state_shape();
  if (s.sizes().vec() != shape)
    throw Error("initial state for layer " + std::to_string(layer) + " has shape " +
                io::shape_to_string(s.sizes().vec()) + ", expected " + io::shape_to_string(shape));
  std::vector<int64_t> full{batch};
  full.insert(full.end(), shape.begin(), shape.end());
  // A private, contiguous float32 copy per cache (decode updates it in place), still
  // connected to the adapter's tensor by autograd when that requires grad.
  const auto sdt = dtype() == at::kDouble ? at::kDouble : at::kFloat;
  c.state = s.to(sdt).unsqueeze(0).expand(full).clone(at::MemoryFormat::Contiguous);
  return c;
}

Cache CausalLM::new_cache(int64_t batch, std::shared_ptr<const Adapter> adapter) const {
  if (batch <= 0) throw Error("cache batch size must be positive");
  Cache c;
  c.batch = batch;
  c.layers.resize(num_layers());
  if (!adapter) return c;
  check_adapter(*adapter);
  if (adapter->prefix_length() > 0) {
    for (int64_t layer = 0; layer < num_layers(); ++layer) c.layers[layer] = new_layer_cache(layer, batch, adapter.get());
    c.length = adapter->prefix_length();  // real tokens start after the prefix (RoPE positions too)
  } else {
    for (int64_t layer : adapter->state_layers()) c.layers[layer] = new_layer_cache(layer, batch, adapter.get());
  }
  c.adapter = std::move(adapter);
  return c;
}

Cache CausalLM::new_cache(int64_t batch, const StateMap* states) const {
  return new_cache(batch, states ? std::make_shared<InitialStates>(*states) : nullptr);
}

Cache copy_cache(const Cache& c) {
  Cache out;
  out.batch = c.batch;
  out.length = c.length;
  out.adapter = c.adapter;
  out.layers.resize(c.layers.size());
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const LayerCache& a = c.layers[l];
    LayerCache& b = out.layers[l];
    if (a.conv.defined()) b.conv = a.conv.clone();
    if (a.state.defined()) b.state = a.state.clone();
    if (a.k.defined()) b.k = a.k.clone(), b.v = a.v.clone();
  }
  return out;
}

Tensor CausalLM::layer(int64_t l, const Tensor& h, LayerCache& c, int64_t past, const Adapter* adapter) const {
  return layer(l, h, SeqGroups{{&c, past, h.size(0), adapter}});
}

Tensor CausalLM::mixer_core(int64_t l, const Tensor& h, LayerCache& c, int64_t past, const Adapter* adapter) const {
  return mixer_core(l, h, SeqGroups{{&c, past, h.size(0), adapter}});
}

Tensor CausalLM::hidden(const Tensor& ids, Cache& cache) {
  if (ids.dim() != 2 || ids.scalar_type() != at::kLong)
    throw Error("forward: ids must be an int64 tensor [batch, length]");
  const int64_t B = ids.size(0), L = ids.size(1);
  if (B != cache.batch)
    throw Error("forward: batch " + std::to_string(B) + " does not match the cache's " +
                std::to_string(cache.batch));
  if (L == 0) throw Error("forward: empty input");
  if (static_cast<int64_t>(cache.layers.size()) != num_layers())
    throw Error("forward: cache was made for another model");
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= vocab_size())
    throw Error("forward: token id out of range [0, " + std::to_string(vocab_size()) + ")");
  const int64_t past = cache.length;
  Tensor h = embed(ids);
  for (int64_t l = 0; l < num_layers(); ++l) h = layer(l, h, cache.layers[l], past, cache.adapter.get());
  cache.length += L;
  return final_norm(h);
}

Tensor CausalLM::forward(const Tensor& ids, Cache& cache, bool last_only) {
  Tensor h = hidden(ids, cache);
  if (last_only) h = h.narrow(1, h.size(1) - 1, 1);
  return logits(h);
}

void check_decode_step_args(const CausalLM& m, const Tensor& ids, const std::vector<Cache*>& caches) {
  if (ids.dim() != 1 || ids.scalar_type() != at::kLong)
    throw Error("decode_step: ids must be an int64 tensor [batch]");
  if (ids.size(0) != static_cast<int64_t>(caches.size()) || caches.empty())
    throw Error("decode_step: " + std::to_string(ids.size(0)) + " ids for " + std::to_string(caches.size()) +
                " caches (need one id per cache, at least one)");
  for (const Cache* c : caches)
    if (!c || c->batch != 1 || static_cast<int64_t>(c->layers.size()) != m.num_layers())
      throw Error("decode_step: every cache must be a batch-1 cache of this model");
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= m.vocab_size())
    throw Error("decode_step: token id out of range [0, " + std::to_string(m.vocab_size()) + ")");
}

Tensor CausalLM::decode_step(const Tensor& ids, const std::vector<Cache*>& caches) {
  check_decode_step_args(*this, ids, caches);
  NoGrad ng;
  const int64_t B = ids.size(0);
  SeqGroups groups(static_cast<size_t>(B));
  Tensor h = embed(ids.view({B, 1}));  // [B, 1, D]
  for (int64_t l = 0; l < num_layers(); ++l) {
    for (int64_t b = 0; b < B; ++b)
      groups[b] = {&caches[b]->layers[l], caches[b]->length, 1, caches[b]->adapter.get()};
    h = layer(l, h, groups);
  }
  for (Cache* c : caches) c->length += 1;
  return logits(final_norm(h)).view({B, -1});
}

std::unique_ptr<CausalLM> load_model(const std::string& dir, at::ScalarType dtype) {
  io::ModelDir md(dir);
  const auto& cfg = md.config();
  auto it = cfg.find("model_type");
  if (it != cfg.end() && !it->is_string())
    throw Error(md.config_path() + ": 'model_type' must be a string, found " + it->type_name());
  std::string type = it == cfg.end() ? std::string() : it->get<std::string>();
  if (type == "qwen3_5" || type == "qwen3_5_text") return std::make_unique<Qwen35Model>(md, dtype);
  if (type == "falcon_h1") return std::make_unique<FalconH1Model>(md, dtype);
  if (type == "qwen2") return std::make_unique<Qwen2Model>(md, dtype);
  throw Error(md.config_path() + ": unsupported model_type '" + type +
              "' (supported: qwen3_5, qwen3_5_text, falcon_h1, qwen2)");
}

namespace {

// The bytes a weight occupies (held weights are contiguous).
std::pair<const char*, const char*> bytes_of(const Tensor& t) {
  const char* p = static_cast<const char*>(t.data_ptr());
  return {p, p + t.numel() * t.element_size()};
}

// Every weight matrix a layout change may re-lay or that may share memory with one: each
// linear layer's weight, the embedding table and the head, as held.
std::vector<Tensor*> matrix_slots(CausalLM& m) {
  std::vector<Tensor*> out = m.table_and_head();
  for (const NamedLinear* l : m.linears()) out.push_back(&const_cast<NamedLinear*>(l)->w);  // m is not const
  return out;
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> CausalLM::linear_layers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const NamedLinear* l : linears()) out.push_back({l->name, l->w});
  return out;
}

int64_t CausalLM::set_pair_layout(bool on) {
  const std::vector<Tensor*> slots = matrix_slots(*this);
  std::set<const void*> done;
  int64_t changed = 0;
  for (Tensor* t : slots) {
    if (!t->defined() || done.count(t->data_ptr())) continue;
    const Tensor w = *t;
    done.insert(w.data_ptr());
    if (on ? !nn::can_pair_layout(w) : !(nn::is_pair_layout(w) && w.is_contiguous())) continue;
    // Every slot sharing any of w's bytes must be w itself (tied head and table): a view of
    // part of it would be left meaning nothing.
    const auto [lo, hi] = bytes_of(w);
    bool alone = true;
    for (const Tensor* u : slots) {
      if (!u->defined() || u->numel() == 0) continue;
      const auto [ulo, uhi] = bytes_of(*u);
      if (ulo < hi && lo < uhi && !(ulo == lo && uhi == hi && u->sizes() == w.sizes())) alone = false;
    }
    if (!alone) continue;
    const Tensor v = on ? nn::to_pair_layout_inplace(w) : nn::to_row_layout_inplace(w);
    for (Tensor* u : slots)
      if (u->defined() && u->data_ptr() == v.data_ptr()) *u = v;
    ++changed;
  }
  return changed;
}

bool CausalLM::pair_layout() {
  for (const Tensor* t : matrix_slots(*this))
    if (nn::is_pair_layout(*t)) return true;
  return false;
}

bool use_generation_layout(CausalLM& m) {
  if (m.dtype() == at::kBFloat16 && nn::pair_layout_pays()) m.set_pair_layout(true);
  return m.pair_layout();
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  if (s == "f32" || s == "fp32" || s == "float32") return at::kFloat;
  throw Error("unknown dtype '" + s + "' (expected bf16 or f32)");
}

std::string dtype_str(at::ScalarType t) {
  if (t == at::kBFloat16) return "bf16";
  if (t == at::kFloat) return "f32";
  return c10::toString(t);
}

namespace {
[[noreturn]] void no_split(const CausalLM& m) {
  throw Error(m.model_type() + ": this model family does not provide the layer split (splits_layers())");
}
}  // namespace

Tensor CausalLM::mixer_core(int64_t, const Tensor&, const SeqGroups&) const { no_split(*this); }
Tensor CausalLM::mixer_out_weight(int64_t) const { no_split(*this); }
Tensor CausalLM::mlp_core(int64_t, const Tensor&) const { no_split(*this); }
Tensor CausalLM::mlp_down_weight(int64_t) const { no_split(*this); }

nn::RowsCrossEntropy CausalLM::rows_cross_entropy(const Tensor& rows, const Tensor& labels, double scale) const {
  at::AutoGradMode grad_on(true);
  Tensor r = rows.detach().requires_grad_(true);
  Tensor loss = at::cross_entropy_loss(logits(r), labels, {}, at::Reduction::Sum);
  nn::RowsCrossEntropy out;
  out.grad = torch::autograd::grad({loss * scale}, {r})[0];
  out.loss_sum = loss.item<double>();
  return out;
}

void configure_runtime(int n) {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // the largest value glibc accepts
  // OpenBLAS only sees small products in inference (big GEMMs go to oneDNN); its worker
  // threads would otherwise spin against libtorch's pool.
  SingleThreadedBlas::set_default_single();
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Blocks above glibc's largest mmap threshold (32 MB) would still be fresh mmaps: a
  // batch-64 decode step's logits ([64, 248k] f32, 64 MB) faulted in anew every step cost
  // more than the LM head itself on a 2-core VM (0.5 s of page faults per step). Keep them in
  // the heap too (glibc still falls back to mmap when the heap cannot grow).
  mallopt(M_MMAP_MAX, 0);
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
}

}  // namespace s0::models
