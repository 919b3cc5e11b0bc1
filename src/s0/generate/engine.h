#pragma once
// The decode engine: the one loop every way of generating drives (generate, sample_n,
// generate_batched, s0 collect/eval, the server). Each step it
//   1. admits queued requests while fewer than max_batch sequences are active, prefilling
//      their prompts a chunk at a time (a long prompt is prefilled in pieces between decode
//      steps, so it does not stall the sequences already decoding);
//   2. runs ONE decode step (CausalLM::decode_step) over every active sequence, whatever
//      adapter each carries;
//   3. samples each sequence's next token with its own seeded sampler, assembles its text
//      (TextStream: stop strings) and ends it on an eos id, a stop string, max_new_tokens,
//      or cancellation.
// A request may ask for n samples: its prompt is prefilled once and the cache copied n
// times; sample i draws with seed + i. A sequence's tokens depend only on its own request
// (decode_step is bitwise equal per row), never on what else is in the batch.
// Single-threaded: the caller drives step() (serve/ runs it on its scheduler thread).
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "s0/generate/sampler.h"
#include "s0/generate/text_stream.h"
#include "s0/models/model.h"

namespace s0::generate {

// One token per row of a step's logits [B, V] (bf16 or f32), picked by pick(row, logits of
// the row as f32, V) for the rows in parallel on the intra-op threads. bf16 rows are widened
// one at a time in a per-thread buffer (exact), never as a [B, V] f32 copy.
std::vector<int64_t> pick_rows(const Tensor& logits, const std::function<int64_t(int64_t, const float*, int64_t)>& pick);

struct Request {
  std::vector<int64_t> prompt;
  std::shared_ptr<const models::Adapter> adapter;  // null: the base model
  SamplingParams sampling;                         // sample i draws with sampling.seed + i
  int64_t max_new_tokens = 64;
  int64_t n = 1;                          // samples sharing one prefill
  std::vector<int64_t> eos_ids;           // empty: the model's eos ids
  bool ignore_eos = false;                // generate exactly max_new_tokens (benchmarks)
  std::vector<std::string> stop_strings;  // need EngineOptions::detokenizer
  uint64_t tag = 0;                       // the caller's, handed back in every event
};

// What a step produced for one sequence: a token (with the text it released), the end, or
// both (the token that ended it).
struct Event {
  int64_t seq = -1;  // engine-wide sequence id (submit() returns them)
  uint64_t tag = 0;  // the request's tag
  int64_t index = 0;  // which of the request's n samples
  int64_t token = -1;  // -1: no token (an end without one)
  std::string text;   // text released by this event (with a detokenizer)
  bool finished = false;
  std::string finish_reason;  // "eos" | "stop" | "length" | "cancelled" | "error"
  std::string error;          // for "error"
  double prefill_seconds = 0, decode_seconds = 0;  // on finish: the sequence's times
};

// What the last step did (the server's statistics).
struct StepStats {
  int64_t prefill_tokens = 0, decode_rows = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // decode includes sampling
};

struct EngineOptions {
  int64_t max_batch = 16;       // sequences decoded together
  int64_t prefill_chunk = 512;  // prompt tokens prefilled per step (at least one chunk)
  DetokenizerFactory detokenizer;  // text and stop strings; none: tokens only
};

class Engine {
 public:
  explicit Engine(models::CausalLM& model, EngineOptions opt = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; returns the ids of its n sequences. Throws s0::Error
  // for a bad request (empty prompt, token id out of range, bad sampling values, stop
  // strings without a detokenizer, n < 1, max_new_tokens < 0).
  std::vector<int64_t> submit(Request r);
  // Ends a sequence (queued, prefilling or decoding) as "cancelled" at the next step.
  void cancel(int64_t seq);

  // One iteration: admission and prefill, then one decode step over the active sequences.
  // Appends what happened to `events`. A step that fails in the model ends the sequences it
  // touched with "error" (the message in Event::error) and the engine goes on.
  void step(std::vector<Event>& events);
  // Steps until nothing is queued or active, handing every event to on_event.
  void run(const std::function<void(const Event&)>& on_event);

  bool idle() const { return queue_.empty() && active_.empty(); }
  int64_t active() const { return static_cast<int64_t>(active_.size()); }
  int64_t queued() const;  // sequences not yet decoding
  int64_t decode_steps() const { return decode_steps_; }
  const StepStats& last_step() const { return last_; }
  const models::CausalLM& model() const { return model_; }

 private:
  struct Seq;
  struct Pending;
  void prefill(std::vector<Event>& events);
  void decode(std::vector<Event>& events);
  // Records token `tok` for `s`; true when the sequence has ended (event filled).
  bool take(Seq& s, int64_t tok, Event& ev);
  void end(Seq& s, const std::string& reason, Event& ev);

  models::CausalLM& model_;
  EngineOptions opt_;
  std::vector<int64_t> model_eos_;
  int64_t next_id_ = 0, decode_steps_ = 0;
  std::deque<std::unique_ptr<Pending>> queue_;  // waiting or being prefilled (the front)
  std::vector<std::unique_ptr<Seq>> active_;
  std::vector<int64_t> cancelled_;
  StepStats last_;
};

}  // namespace s0::generate
