#include "s0/generate/engine.h"

#include <algorithm>
#include <chrono>

#include "s0/nn/vec_ops.h"
#include "s0/util/error.h"
#include "s0/util/interrupt.h"

namespace s0::generate {

namespace {
double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

// A request waiting for admission or being prefilled (the queue's front).
struct Engine::Pending {
  std::shared_ptr<const Request> req;
  std::vector<int64_t> ids;  // its sequences
  std::vector<bool> cancelled;
  models::Cache cache;
  bool started = false;
  int64_t done = 0;  // prompt tokens prefilled
  double seconds = 0;
};

// A decoding sequence.
struct Engine::Seq {
  int64_t id = 0, index = 0;
  std::shared_ptr<const Request> req;
  Sampler sampler;
  models::Cache cache;
  std::unique_ptr<TextStream> text;
  const std::vector<int64_t>* eos = nullptr;
  int64_t produced = 0, last = -1;
  double prefill_seconds = 0, t0 = 0;
};

Engine::Engine(models::CausalLM& model, EngineOptions opt) : model_(model), opt_(std::move(opt)) {
  if (opt_.max_batch < 1) throw Error("max_batch must be >= 1");
  if (opt_.prefill_chunk < 1) throw Error("prefill_chunk must be >= 1");
  model_eos_ = model_.eos_token_ids();
}

Engine::~Engine() = default;

int64_t Engine::queued() const {
  int64_t n = 0;
  for (const auto& p : queue_) n += static_cast<int64_t>(p->ids.size());
  return n;
}

std::vector<int64_t> Engine::submit(Request r) {
  if (r.prompt.empty()) throw Error("prompt is empty (at least one token is needed)");
  const int64_t V = model_.vocab_size();
  for (int64_t id : r.prompt)
    if (id < 0 || id >= V)
      throw Error("prompt: token id " + std::to_string(id) + " out of range [0, " + std::to_string(V) + ")");
  if (r.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  if (r.n < 1) throw Error("the number of samples must be >= 1");
  if (!r.stop_strings.empty() && !opt_.detokenizer)
    throw Error("stop strings need a tokenizer to decode the generated text");
  Sampler check(r.sampling);  // validates the sampling values
  auto p = std::make_unique<Pending>();
  p->req = std::make_shared<const Request>(std::move(r));
  for (int64_t i = 0; i < p->req->n; ++i) p->ids.push_back(next_id_++);
  p->cancelled.assign(p->ids.size(), false);
  std::vector<int64_t> ids = p->ids;
  queue_.push_back(std::move(p));
  return ids;
}

void Engine::cancel(int64_t seq) { cancelled_.push_back(seq); }

void Engine::end(Seq& s, const std::string& reason, Event& ev) {
  if (s.text) ev.text += s.text->finish();
  ev.finished = true;
  ev.finish_reason = reason;
  ev.prefill_seconds = s.prefill_seconds;
  ev.decode_seconds = now() - s.t0;
}

bool Engine::take(Seq& s, int64_t tok, Event& ev) {
  ev.seq = s.id, ev.tag = s.req->tag, ev.index = s.index, ev.token = tok;
  ++s.produced;
  s.last = tok;
  if (s.text) ev.text = s.text->push(tok);
  if (!s.req->ignore_eos && std::find(s.eos->begin(), s.eos->end(), tok) != s.eos->end()) {
    end(s, "eos", ev);
  } else if (s.text && s.text->stopped()) {
    end(s, "stop", ev);
  } else if (s.produced >= s.req->max_new_tokens) {
    end(s, "length", ev);
  }
  return ev.finished;
}

void Engine::prefill(std::vector<Event>& events) {
  int64_t budget = opt_.prefill_chunk;
  while (!queue_.empty() && budget > 0) {
    Pending& p = *queue_.front();
    const Request& r = *p.req;
    if (std::all_of(p.cancelled.begin(), p.cancelled.end(), [](bool c) { return c; })) {
      for (size_t i = 0; i < p.ids.size(); ++i) {
        Event ev;
        ev.seq = p.ids[i], ev.tag = r.tag, ev.index = static_cast<int64_t>(i);
        ev.finished = true, ev.finish_reason = "cancelled";
        events.push_back(std::move(ev));
      }
      queue_.pop_front();
      continue;
    }
    // Admission: room for all n samples (or nothing else is decoding).
    if (!p.started && !active_.empty() && static_cast<int64_t>(active_.size()) + r.n > opt_.max_batch) break;
    const double t0 = now();
    Tensor logits;
    try {
      if (!p.started) {
        p.cache = model_.new_cache(1, r.adapter);
        p.started = true;
      }
      // Chunk boundaries are fixed by the prompt alone (positions 0, C, 2C, ...), so the
      // numbers never depend on what else is queued; the budget only decides how many
      // chunks run before this step's decode.
      const int64_t len = static_cast<int64_t>(r.prompt.size());
      const int64_t n = std::min(opt_.prefill_chunk, len - p.done);
      Tensor ids = at::tensor(std::vector<int64_t>(r.prompt.begin() + p.done, r.prompt.begin() + p.done + n), at::kLong)
                       .view({1, -1});
      logits = model_.forward(ids, p.cache, /*last_only=*/true).to(at::kFloat).contiguous();
      p.done += n;
      budget -= n;
      last_.prefill_tokens += n;
    } catch (const std::exception& e) {
      for (size_t i = 0; i < p.ids.size(); ++i) {
        Event ev;
        ev.seq = p.ids[i], ev.tag = r.tag, ev.index = static_cast<int64_t>(i);
        ev.finished = true, ev.finish_reason = "error", ev.error = e.what();
        events.push_back(std::move(ev));
      }
      queue_.pop_front();
      continue;
    }
    p.seconds += now() - t0;
    last_.prefill_seconds += now() - t0;
    if (p.done < static_cast<int64_t>(r.prompt.size())) continue;  // more chunks
    // The prompt is in: n sequences from one prefill, each with its own sampler.
    std::unique_ptr<Pending> done = std::move(queue_.front());
    queue_.pop_front();
    const int64_t V = logits.size(-1);
    for (int64_t i = 0; i < r.n; ++i) {
      if (done->cancelled[static_cast<size_t>(i)]) {
        Event ev;
        ev.seq = done->ids[i], ev.tag = r.tag, ev.index = i;
        ev.finished = true, ev.finish_reason = "cancelled";
        events.push_back(std::move(ev));
        continue;
      }
      SamplingParams sp = r.sampling;
      sp.seed += static_cast<uint64_t>(i);
      auto s = std::make_unique<Seq>(Seq{done->ids[i], i, done->req, Sampler(sp), {}, nullptr, nullptr, 0, -1,
                                         done->seconds, now()});
      s->cache = i + 1 == r.n ? std::move(done->cache) : models::copy_cache(done->cache);
      s->eos = r.eos_ids.empty() ? &model_eos_ : &r.eos_ids;
      if (opt_.detokenizer) s->text = std::make_unique<TextStream>(opt_.detokenizer(), r.stop_strings);
      Event ev;
      if (r.max_new_tokens == 0) {
        ev.seq = s->id, ev.tag = r.tag, ev.index = i;
        end(*s, "length", ev);
        events.push_back(std::move(ev));
        continue;
      }
      const bool finished = take(*s, s->sampler.sample(logits.data_ptr<float>(), V), ev);
      events.push_back(std::move(ev));
      if (!finished) active_.push_back(std::move(s));
    }
  }
}

std::vector<int64_t> pick_rows(const Tensor& logits_in,
                               const std::function<int64_t(int64_t, const float*, int64_t)>& pick) {
  TORCH_CHECK(logits_in.dim() == 2, "pick_rows: logits must be [B, V]");
  const bool bf16 = logits_in.scalar_type() == at::kBFloat16;
  const Tensor logits = bf16 ? logits_in.contiguous() : logits_in.to(at::kFloat).contiguous();
  const int64_t B = logits.size(0), V = logits.size(1);
  std::vector<int64_t> toks(static_cast<size_t>(B));
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    thread_local std::vector<float> wide;
    for (int64_t b = b0; b < b1; ++b) {
      const float* row;
      if (bf16) {
        wide.resize(static_cast<size_t>(V));
        nn::widen_bf16(reinterpret_cast<const uint16_t*>(logits.data_ptr<at::BFloat16>()) + b * V, wide.data(), V);
        row = wide.data();
      } else {
        row = logits.data_ptr<float>() + b * V;
      }
      toks[b] = pick(b, row, V);
    }
  });
  return toks;
}

void Engine::decode(std::vector<Event>& events) {
  if (active_.empty()) return;
  const double t0 = now();
  const int64_t B = static_cast<int64_t>(active_.size());
  std::vector<int64_t> last(static_cast<size_t>(B));
  std::vector<models::Cache*> caches(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) last[b] = active_[b]->last, caches[b] = &active_[b]->cache;
  Tensor logits;
  try {
    logits = model_.decode_step(at::tensor(last, at::kLong), caches);
  } catch (const std::exception& e) {
    for (auto& s : active_) {
      Event ev;
      ev.seq = s->id, ev.tag = s->req->tag, ev.index = s->index;
      end(*s, "error", ev);
      ev.error = e.what();
      events.push_back(std::move(ev));
    }
    active_.clear();
    return;
  }
  ++decode_steps_;
  // Sampling (a pass over the whole vocabulary per row) runs on the intra-op threads; each
  // row draws from its own sampler, so the tokens do not depend on the split.
  const std::vector<int64_t> toks =
      pick_rows(logits, [&](int64_t b, const float* row, int64_t V) { return active_[b]->sampler.sample(row, V); });
  std::vector<std::unique_ptr<Seq>> still;
  for (int64_t b = 0; b < B; ++b) {
    Seq& s = *active_[b];
    Event ev;
    if (!take(s, toks[b], ev)) still.push_back(std::move(active_[b]));
    events.push_back(std::move(ev));
  }
  active_ = std::move(still);
  last_.decode_rows = B;
  last_.decode_seconds = now() - t0;
}

void Engine::step(std::vector<Event>& events) {
  NoGrad no_grad;
  last_ = StepStats{};
  // Cancellations first: queued requests drop the sample, decoding sequences end.
  for (int64_t id : cancelled_) {
    for (auto& p : queue_)
      for (size_t i = 0; i < p->ids.size(); ++i)
        if (p->ids[i] == id) p->cancelled[i] = true;
    for (auto& s : active_)
      if (s && s->id == id) {
        Event ev;
        ev.seq = s->id, ev.tag = s->req->tag, ev.index = s->index;
        end(*s, "cancelled", ev);
        events.push_back(std::move(ev));
        s.reset();
      }
    active_.erase(std::remove(active_.begin(), active_.end(), nullptr), active_.end());
  }
  cancelled_.clear();
  prefill(events);
  decode(events);
}

void Engine::run(const std::function<void(const Event&)>& on_event) {
  std::vector<Event> events;
  while (!idle()) {
    poll_interrupt();  // outside step(): a hook's exception must not become an "error" event
    events.clear();
    step(events);
    if (on_event)
      for (const auto& e : events) on_event(e);
  }
}

}  // namespace s0::generate
