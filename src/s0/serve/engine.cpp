#include "s0/serve/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "s0/adapters/lora.h"
#include "s0/adapters/prefix.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"
#include "s0/generate/engine.h"
#include "s0/models/model.h"
#include "s0/util/error.h"

namespace s0::serve {

namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

bool valid_set_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n == "base") return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

}  // namespace

bool SeqStream::take(std::vector<int64_t>& out, std::string& text_out, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu);
  cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return done || !tokens.empty() || !text.empty(); });
  out.insert(out.end(), tokens.begin(), tokens.end());
  tokens.clear();
  text_out += text;
  text.clear();
  return done;
}

struct Engine::Seq {
  generate::Request req;  // req.n samples: this sequence is sample 0, `more` holds 1..n-1
  std::string set_name;   // "base" or the state set's name (statistics)
  std::shared_ptr<SeqStream> stream;
  int64_t id = -1;  // the decode engine's sequence id once handed over
  int64_t prompt_len = 0;
  bool started = false;
  std::vector<std::unique_ptr<Seq>> more;  // while pending: the request's other samples

  int64_t count() const { return 1 + static_cast<int64_t>(more.size()); }
  bool all_cancelled() const {
    return stream->cancel && std::all_of(more.begin(), more.end(), [](const auto& m) { return m->stream->cancel.load(); });
  }
};

Engine::Engine(std::shared_ptr<models::CausalLM> model, EngineLimits limits, const text::Tokenizer* tok)
    : model_(std::move(model)), limits_(limits), tok_(tok) {
  if (!model_) throw Error("serve: no model");
  if (limits_.max_batch < 1 || limits_.max_queue < 1 || limits_.max_prompt_tokens < 1 || limits_.max_tokens_cap < 1)
    throw Error("serve: limits must be positive");
  generate::EngineOptions eo;
  eo.max_batch = limits_.max_batch;
  if (tok_) eo.detokenizer = generate::detokenizer_for(*tok_);
  gen_ = std::make_unique<generate::Engine>(*model_, std::move(eo));
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { stop(); }

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StateSetInfo Engine::load_state_set(const std::string& name, const std::string& dir, const std::string& kind) {
  if (!valid_set_name(name))
    throw Error("state set name '" + name + "' is invalid (1-64 characters of A-Z a-z 0-9 . _ -, not 'base')");
  const double t0 = now_s();
  StateSetInfo info;
  info.name = name;
  info.path = dir;
  info.kind = adapters::is_prefix_dir(dir)                            ? "prefix"
              : std::filesystem::exists(dir + "/adapter_config.json") ? "lora"
              : adapters::is_offset_dir(dir)                          ? "offset"
                                                                      : "states";
  if (!kind.empty() && kind != info.kind)
    throw Error(dir + ": a " + info.kind + " directory, but a " + kind + " one was asked for");
  Entry e;
  if (info.kind == "lora") {
    auto set = adapters::load_lora(dir, *model_);
    info.bytes = set.num_bytes(), info.params = set.num_params();
    info.layers = static_cast<int64_t>(set.modules.size());
    info.alpha = set.config.scale();
    e.adapter = set.adapter();
  } else if (info.kind == "prefix") {
    auto set = adapters::load_prefix(dir, *model_);
    info.bytes = set.num_bytes(), info.params = set.num_params();
    info.layers = static_cast<int64_t>(model_->attention_layers().size());
    e.adapter = set.adapter(model_->attention_layers());
  } else if (info.kind == "offset") {
    auto set = std::make_shared<adapters::OffsetSet>(adapters::load_offset_set(dir, *model_));
    info.bytes = set->num_bytes(), info.params = set->num_params();
    info.layers = static_cast<int64_t>(set->offsets.size());
    info.alpha = set->scale();
    e.adapter = set->adapter();
    e.rescaled = [set](double s) { return set->adapter(s); };
  } else {
    auto set = std::make_shared<adapters::StateSet>(adapters::load_state_set(dir, *model_));
    info.bytes = set->num_bytes(), info.params = set->num_bytes() / 4;
    info.layers = static_cast<int64_t>(set->states.size());
    info.alpha = set->alpha();
    info.normalize = set->normalize();
    e.adapter = set->adapter();
    e.rescaled = [set](double a) { return set->adapter(a); };
  }
  info.load_seconds = now_s() - t0;
  e.info = info;
  std::lock_guard<std::mutex> lk(sets_mu_);
  sets_[name] = std::move(e);
  return info;
}

bool Engine::unload_state_set(const std::string& name) {
  std::lock_guard<std::mutex> lk(sets_mu_);
  return sets_.erase(name) > 0;
}

std::vector<StateSetInfo> Engine::state_sets() const {
  std::lock_guard<std::mutex> lk(sets_mu_);
  std::vector<StateSetInfo> out;
  for (const auto& [n, e] : sets_) out.push_back(e.info);
  return out;
}

bool Engine::has_state_set(const std::string& name) const {
  std::lock_guard<std::mutex> lk(sets_mu_);
  return sets_.count(name) > 0;
}

std::shared_ptr<SeqStream> Engine::submit(const SeqRequest& r) { return submit_n(r, 1).at(0); }

std::vector<std::shared_ptr<SeqStream>> Engine::submit_n(const SeqRequest& r, int64_t n) {
  if (n < 1) throw Error("n: must be at least 1");
  if (r.prompt.empty()) throw Error("prompt: empty (at least one token is needed)");
  if (static_cast<int64_t>(r.prompt.size()) > limits_.max_prompt_tokens)
    throw Error("prompt: " + std::to_string(r.prompt.size()) + " tokens, more than the server's limit of " +
                std::to_string(limits_.max_prompt_tokens));
  const int64_t V = model_->vocab_size();
  for (int64_t id : r.prompt)
    if (id < 0 || id >= V)
      throw Error("prompt: token id " + std::to_string(id) + " out of range [0, " + std::to_string(V) + ")");
  if (r.max_tokens < 1 || r.max_tokens > limits_.max_tokens_cap)
    throw Error("max_tokens: must be in [1, " + std::to_string(limits_.max_tokens_cap) + "]");
  if (!r.stop_strings.empty() && !tok_) throw Error("stop: this engine has no tokenizer to find stop strings with");
  generate::Sampler check(r.sampling);  // validates the values
  auto seq = std::make_unique<Seq>();
  seq->req.prompt = r.prompt;
  seq->req.sampling = r.sampling;
  seq->req.max_new_tokens = r.max_tokens;
  seq->req.ignore_eos = r.ignore_eos;
  seq->req.stop_strings = r.stop_strings;
  seq->set_name = "base";
  if (r.alpha && !std::isfinite(*r.alpha)) throw Error("alpha: must be a finite number");
  if (!r.state_set.empty()) {
    std::function<std::shared_ptr<const models::Adapter>(double)> rescaled;
    {
      std::lock_guard<std::mutex> lk(sets_mu_);
      auto it = sets_.find(r.state_set);
      if (it == sets_.end()) throw UnknownSetError("model: unknown state set '" + r.state_set + "'");
      rescaled = it->second.rescaled;
      seq->req.adapter = it->second.adapter;
    }
    // An alpha of the request's own: the states (or offset) scaled for this sequence alone.
    if (r.alpha) {
      if (!rescaled) throw Error("alpha: applies to a state set or state offset, not to a LoRA or prefix adapter");
      seq->req.adapter = rescaled(*r.alpha);
    }
    seq->set_name = r.state_set;
  } else if (r.alpha) {
    throw Error("alpha: applies to a state set, not to the base model");
  }
  seq->req.n = n;
  seq->prompt_len = static_cast<int64_t>(r.prompt.size());
  seq->stream = std::make_shared<SeqStream>();
  std::vector<std::shared_ptr<SeqStream>> streams{seq->stream};
  for (int64_t i = 1; i < n; ++i) {
    auto m = std::make_unique<Seq>();
    m->set_name = seq->set_name;
    m->prompt_len = seq->prompt_len;
    m->stream = std::make_shared<SeqStream>();
    streams.push_back(m->stream);
    seq->more.push_back(std::move(m));
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) throw BusyError("the server is shutting down");
    // Requests whose every sample was cancelled while waiting (their client left) no longer count.
    for (auto it = pending_.begin(); it != pending_.end();)
      if ((*it)->all_cancelled()) {
        pending_count_ -= (*it)->count();
        for (auto& m : (*it)->more) finish(*m, "cancelled");
        finish(**it, "cancelled");
        it = pending_.erase(it);
      } else {
        ++it;
      }
    if (pending_count_ + n + active_count_ + waiting_count_ > limits_.max_queue)
      throw BusyError("the server is busy: " + std::to_string(limits_.max_queue) +
                      " sequences are queued or running; retry later");
    pending_count_ += n;
    pending_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return streams;
}

void Engine::finish(Seq& s, const std::string& reason, const std::string& error) {
  {  // counted before the consumer can see the end
    std::lock_guard<std::mutex> lk(stats_mu_);
    if (reason == "cancelled")
      ++stats_.sequences_cancelled;
    else
      ++stats_.sequences_finished;
  }
  {
    std::lock_guard<std::mutex> lk(s.stream->mu);
    s.stream->done = true;
    s.stream->finish_reason = reason;
    s.stream->error = error;
  }
  s.stream->cv.notify_all();
}

void Engine::loop() {
  at::init_num_threads();  // this thread's intra-op pool gets the process's thread count
  std::map<int64_t, std::unique_ptr<Seq>> running;  // decode engine id -> sequence
  std::vector<generate::Event> events;
  while (true) {
    std::vector<std::unique_ptr<Seq>> fresh;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !pending_.empty() || !gen_->idle(); });
      if (stopping_) break;
      while (!pending_.empty()) {
        // Still counted against max_queue while they move to the engine.
        waiting_count_ += pending_.front()->count();
        pending_count_ -= pending_.front()->count();
        fresh.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    for (auto& s : fresh) {
      std::vector<std::unique_ptr<Seq>> samples;
      std::vector<std::unique_ptr<Seq>> more = std::move(s->more);
      samples.push_back(std::move(s));
      for (auto& m : more) samples.push_back(std::move(m));
      if (std::all_of(samples.begin(), samples.end(), [](const auto& q) { return q->stream->cancel.load(); })) {
        for (auto& q : samples) finish(*q, "cancelled");
        continue;
      }
      try {
        // One prefill for the request's n samples; a sample cancelled meanwhile leaves at
        // the next step (the cancel check below).
        const std::vector<int64_t> ids = gen_->submit(samples[0]->req);
        for (size_t i = 0; i < samples.size(); ++i) {
          samples[i]->id = ids.at(i);
          running[ids[i]] = std::move(samples[i]);
        }
      } catch (const std::exception& e) {
        for (auto& q : samples)
          if (q) finish(*q, "error", e.what());
      }
    }
    // Sequences whose client left (or that were told to stop) leave at the next step.
    for (auto& [id, s] : running)
      if (s->stream->cancel) gen_->cancel(id);
    events.clear();
    gen_->step(events);
    const double t = now_s();
    for (const auto& ev : events) {
      auto it = running.find(ev.seq);
      if (it == running.end()) continue;
      Seq& s = *it->second;
      std::lock_guard<std::mutex> lk(stats_mu_);
      if (!s.started && ev.finish_reason != "cancelled" && ev.finish_reason != "error") {
        s.started = true;
        ++stats_.sequences_started;
        ++stats_.sequences_by_set[s.set_name];
        stats_.prompt_tokens += s.prompt_len;
      }
      if (ev.token >= 0) {
        ++stats_.generated_tokens;
        ++stats_.tokens_by_set[s.set_name];
      }
    }
    for (const auto& ev : events) {
      auto it = running.find(ev.seq);
      if (it == running.end()) continue;
      Seq& s = *it->second;
      {
        std::lock_guard<std::mutex> lk(s.stream->mu);
        if (ev.token >= 0) s.stream->tokens.push_back(ev.token);
        s.stream->text += ev.text;
      }
      if (ev.finished) {
        finish(s, ev.finish_reason, ev.error);
        running.erase(it);
      } else {
        s.stream->cv.notify_all();
      }
    }
    const auto& st = gen_->last_step();
    if (st.prefill_tokens > 0) {
      std::lock_guard<std::mutex> lk(stats_mu_);
      stats_.prefill_tokens += st.prefill_tokens;
    }
    if (st.decode_rows > 0) {
      std::lock_guard<std::mutex> lk(stats_mu_);
      ++stats_.decode_steps;
      stats_.decode_tokens += st.decode_rows;
      stats_.decode_seconds += st.decode_seconds;
      rate_window_.emplace_back(t, st.decode_rows);
      while (!rate_window_.empty() && rate_window_.front().first < t - 5.0) rate_window_.pop_front();
    }
    std::lock_guard<std::mutex> lk(mu_);
    active_count_ = gen_->active();
    waiting_count_ = static_cast<int64_t>(running.size()) - active_count_;
  }
  for (auto& [id, s] : running) finish(*s, "cancelled");
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& s : pending_) {
    for (auto& m : s->more) finish(*m, "cancelled");
    finish(*s, "cancelled");
  }
  pending_.clear();
  pending_count_ = 0;
  active_count_ = waiting_count_ = 0;
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    s = stats_;
    if (rate_window_.size() >= 2) {
      const double span = rate_window_.back().first - rate_window_.front().first;
      int64_t n = 0;
      for (size_t i = 1; i < rate_window_.size(); ++i) n += rate_window_[i].second;
      if (span > 0) s.tokens_per_second = n / span;
    }
    if (!rate_window_.empty() && now_s() - rate_window_.back().first > 5.0) s.tokens_per_second = 0;
  }
  std::lock_guard<std::mutex> lk(mu_);
  s.active = active_count_;
  s.queued = pending_count_ + waiting_count_;
  return s;
}

}  // namespace s0::serve
