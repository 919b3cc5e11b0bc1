#pragma once
// The serving engine: one loaded model, a registry of S0 state sets chosen per sequence,
// and a scheduler thread that drives the decode engine (generate/engine.h: admission,
// prefill, one batched decode step over every active sequence whatever its state set,
// sampling, stop strings, text). This file only adds threads, the registry, limits and
// statistics. Torch-free header (the HTTP layer includes it).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "s0/generate/sampler.h"
#include "s0/util/error.h"

namespace s0::models {
class CausalLM;
class Adapter;
}
namespace s0::adapters {
struct StateSet;
}
namespace s0::text {
class Tokenizer;
}
namespace s0::generate {
class Engine;
}

namespace s0::serve {

struct EngineLimits {
  int64_t max_batch = 32;        // sequences decoded together
  int64_t max_queue = 256;       // sequences waiting + active; more is refused (busy)
  int64_t max_prompt_tokens = 8192;
  int64_t max_tokens_cap = 4096;  // per sequence
};

// One sequence's output channel, shared by the scheduler (producer) and the request
// handler (consumer). The consumer sets `cancel` (client gone, stop string found).
struct SeqStream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<int64_t> tokens;  // produced, not yet taken
  std::string text;            // released text (stop strings applied), not yet taken
  bool done = false;
  std::string finish_reason;  // "eos" | "stop" | "length" | "cancelled" | "error"
  std::string error;
  std::atomic<bool> cancel{false};

  // Waits up to `timeout_ms` for tokens or the end; moves the tokens and text out. Returns
  // true when the sequence is finished (and everything has been taken).
  bool take(std::vector<int64_t>& out, std::string& text_out, int timeout_ms);
};

struct SeqRequest {
  std::vector<int64_t> prompt;
  std::string state_set;              // "" = base model
  std::optional<double> alpha;        // overrides the set's alpha
  generate::SamplingParams sampling;
  int64_t max_tokens = 16;
  bool ignore_eos = false;  // generate exactly max_tokens (benchmarks)
  std::vector<std::string> stop_strings;  // need the engine's tokenizer
};

// A loaded adapter as listed by the registry: an S0 state set, a LoRA (PEFT directory) or a
// state offset.
struct StateSetInfo {
  std::string name, path;
  std::string kind = "states";  // "states" | "lora" | "offset"
  int64_t params = 0;
  int64_t bytes = 0;
  int64_t layers = 0;
  double alpha = 0;
  bool normalize = false;
  double load_seconds = 0;
};

struct EngineStats {
  int64_t active = 0, queued = 0;
  int64_t sequences_started = 0, sequences_finished = 0, sequences_cancelled = 0;
  int64_t prompt_tokens = 0;    // prompt tokens of the sequences started (n per n-sample request)
  int64_t prefill_tokens = 0;   // prompt tokens actually prefilled (once per n-sample request)
  int64_t generated_tokens = 0, decode_steps = 0;
  int64_t decode_tokens = 0;    // tokens produced by batched decode steps (not by prefill)
  double decode_seconds = 0;    // time spent in batched decode steps (incl. sampling)
  double tokens_per_second = 0;  // generated tokens/s over the last few seconds
  std::map<std::string, int64_t> sequences_by_set, tokens_by_set;  // "base" for no set
};

class Engine {
 public:
  // With a tokenizer the streams carry text and requests may have stop strings.
  Engine(std::shared_ptr<models::CausalLM> model, EngineLimits limits = {}, const text::Tokenizer* tok = nullptr);
  ~Engine();  // stops the scheduler; unfinished sequences end as "cancelled"
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const models::CausalLM& model() const { return *model_; }
  const EngineLimits& limits() const { return limits_; }

  // Adapter registry. load validates against the model (as `s0 generate` does) and
  // replaces an adapter of the same name; names are [A-Za-z0-9._-]{1,64}, not "base". The
  // kind is read from the directory (adapter_config.json: LoRA; meta.json kind
  // "state_offset": offset; else an S0 state set); `kind` ("states" | "lora" | "offset",
  // empty: any) refuses a directory of another kind.
  StateSetInfo load_state_set(const std::string& name, const std::string& dir, const std::string& kind = "");
  bool unload_state_set(const std::string& name);  // false if absent
  std::vector<StateSetInfo> state_sets() const;
  bool has_state_set(const std::string& name) const;

  // Queues one sequence. Throws s0::Error for a bad request (prompt too long or out of
  // vocabulary range, bad sampling values), UnknownSetError (an s0::Error) for a set that is
  // not loaded, and BusyError when the queue is full.
  // Sequences in flight keep the states they started from if their set is unloaded.
  std::shared_ptr<SeqStream> submit(const SeqRequest& r);
  // n samples of one prompt (an n-choice request): the prompt is prefilled once and its
  // cache copied n times; sample i draws with r.sampling.seed + i, so each stream equals
  // submit() of the same request with that seed. All n are queued or none (BusyError).
  std::vector<std::shared_ptr<SeqStream>> submit_n(const SeqRequest& r, int64_t n);

  EngineStats stats() const;
  void stop();

 private:
  struct Seq;
  void loop();
  void finish(Seq& s, const std::string& reason, const std::string& error = "");

  std::shared_ptr<models::CausalLM> model_;
  EngineLimits limits_;
  const text::Tokenizer* tok_;
  std::unique_ptr<generate::Engine> gen_;  // used by the scheduler thread only

  mutable std::mutex sets_mu_;
  struct Entry {
    // Another alpha (state set) or scale (offset) for one request; null for LoRA.
    std::function<std::shared_ptr<const models::Adapter>(double)> rescaled;
    std::shared_ptr<const models::Adapter> adapter;  // at the set's own alpha / scale
    StateSetInfo info;
  };
  std::map<std::string, Entry> sets_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Seq>> pending_;  // submitted, not yet handed to gen_
  int64_t pending_count_ = 0;                 // sequences in pending_ (n per n-sample request)
  int64_t active_count_ = 0;                  // decoding in gen_
  int64_t waiting_count_ = 0;                 // handed to gen_, not yet decoding
  bool stopping_ = false;

  // Statistics (under stats_mu_).
  mutable std::mutex stats_mu_;
  EngineStats stats_;
  std::deque<std::pair<double, int64_t>> rate_window_;  // (time, tokens) per step

  std::thread thread_;
};

// The queue is full: the HTTP layer answers 429.
struct BusyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The request names a state set that is not loaded (unloaded since the request was parsed, or
// never loaded): the HTTP layer answers 404 model_not_found, as for a name it checks itself.
struct UnknownSetError : Error {
  using Error::Error;
};

}  // namespace s0::serve
