#include "s0/serve/server.h"

#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::serve {

using json = nlohmann::json;

namespace {

// An error a client caused (or the server refuses): status + OpenAI-style body.
struct HttpError {
  HttpError(int s, std::string m, std::string p = "", std::string t = "invalid_request_error", std::string c = "")
      : status(s), message(std::move(m)), param(std::move(p)), type(std::move(t)), code(std::move(c)) {}
  int status;
  std::string message;
  std::string param;  // the request field at fault ("" = none)
  std::string type;
  std::string code;
};

json error_body(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

// Text that is not valid UTF-8 (a state-set path, a message echoing input) must not make
// dump() throw: invalid bytes become U+FFFD.
std::string dumps(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  res.set_content(dumps(error_body(e.message, e.type, e.param, e.code)), "application/json");
}

HttpError bad(const std::string& param, const std::string& message) { return {400, message, param}; }

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double mono_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string random_id(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%08llx", static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(++counter));
  return prefix + buf;
}

// ---- Request fields. null counts as absent (many clients send explicit nulls).
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> get_number(const json& body, const char* name, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad(name, std::string("'") + name + "' must be a number");
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    std::ostringstream m;
    m << "'" << name << "' must be in [" << lo << ", " << hi << "], got " << v->dump();
    throw bad(name, m.str());
  }
  return d;
}

std::optional<int64_t> get_int(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) throw bad(name, std::string("'") + name + "' must be an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad(name, std::string("'") + name + "' is out of range");
  int64_t i = v->get<int64_t>();
  if (i < lo || i > hi)
    throw bad(name, std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                        "], got " + std::to_string(i));
  return i;
}

std::optional<bool> get_bool(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

// One parsed generation request (either endpoint).
struct Job {
  bool chat = false, stream = false, include_usage = false;
  std::string model;  // as named in the request
  SeqRequest seq;     // seed of choice i = seq.sampling.seed + i
  int n = 1;
  std::vector<std::string> stops;
};

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  std::shared_ptr<models::CausalLM> model;
  std::string weight_layout;  // "pairs" or "rows", fixed at construction
  std::unique_ptr<Engine> engine;
  std::unique_ptr<text::Tokenizer> tok;
  std::unique_ptr<text::ChatTemplate> chat;
  std::string chat_error;  // why chat is unavailable
  std::mutex chat_mu;
  httplib::Server svr;
  // Every route also kept here for handle_local() (httplib offers no in-process dispatch).
  struct Route {
    std::string method;
    std::regex pattern;
    httplib::Server::Handler handler;
  };
  std::vector<Route> local_routes;
  void route(const char* method, const std::string& pattern, httplib::Server::Handler h) {
    local_routes.push_back({method, std::regex(pattern), h});
    if (std::string(method) == "GET") svr.Get(pattern, std::move(h));
    else if (std::string(method) == "POST") svr.Post(pattern, std::move(h));
    else svr.Delete(pattern, std::move(h));
  }
  std::atomic<bool> stopping{false}, listening{false};
  std::atomic<int> listen_fd{-1};
  std::mutex stop_mu;
  int64_t started = unix_time();

  std::mutex req_mu;
  std::map<std::pair<std::string, int>, int64_t> requests;  // (endpoint, status) -> count

  void routes();
  bool authorized(const httplib::Request& req) const;
  Job parse_job(const json& body, bool chat_endpoint);
  void run_job(Job job, httplib::Response& res);
  std::string metrics();
};

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (opt.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  const std::string want = "Bearer " + opt.api_key;
  if (h.size() != want.size()) return false;
  unsigned char diff = 0;  // constant time over the key length
  for (size_t i = 0; i < h.size(); ++i) diff |= static_cast<unsigned char>(h[i] ^ want[i]);
  return diff == 0;
}

Job Server::Impl::parse_job(const json& body, bool chat_endpoint) {
  Job job;
  job.chat = chat_endpoint;
  if (!body.is_object()) throw bad("", "the request body must be a JSON object");
  // model: "base" or a loaded state set.
  job.model = "base";
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) throw bad("model", "'model' must be a string");
    job.model = m->get<std::string>();
  }
  if (job.model != "base") {
    if (!engine->has_state_set(job.model)) {
      std::string names = "base";
      for (const auto& s : engine->state_sets()) names += ", " + s.name;
      throw HttpError{404, "model '" + job.model + "' does not exist (available: " + names + ")", "model",
                      "invalid_request_error", "model_not_found"};
    }
    job.seq.state_set = job.model;
  }
  job.seq.alpha = get_number(body, "alpha", -1e6, 1e6);
  if (job.seq.alpha && job.seq.state_set.empty())
    throw bad("alpha", "'alpha' scales a state set's states; model 'base' has none");

  // Sampling. Defaults as OpenAI's: temperature 1, top_p 1.
  job.seq.sampling.temperature = get_number(body, "temperature", 0, 100).value_or(1.0);
  job.seq.sampling.top_p = get_number(body, "top_p", 0, 1).value_or(1.0);
  if (job.seq.sampling.top_p <= 0) throw bad("top_p", "'top_p' must be in (0, 1]");
  auto top_k = get_int(body, "top_k", -1, std::numeric_limits<int32_t>::max());
  job.seq.sampling.top_k = top_k && *top_k > 0 ? *top_k : 0;  // -1 / 0: off
  if (auto seed = get_int(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()))
    job.seq.sampling.seed = static_cast<uint64_t>(*seed);
  else
    job.seq.sampling.seed = std::random_device{}() * 4294967296ull + std::random_device{}();
  const int64_t cap = engine->limits().max_tokens_cap;
  auto mt = get_int(body, "max_tokens", 1, cap);
  if (chat_endpoint && !mt) mt = get_int(body, "max_completion_tokens", 1, cap);
  job.seq.max_tokens = mt.value_or(std::min(opt.default_max_tokens, cap));
  job.n = static_cast<int>(get_int(body, "n", 1, opt.max_n).value_or(1));
  job.stream = get_bool(body, "stream").value_or(false);
  job.seq.ignore_eos = get_bool(body, "ignore_eos").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    job.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  if (const json* st = field(body, "stop")) {
    std::vector<json> items = st->is_array() ? st->get<std::vector<json>>() : std::vector<json>{*st};
    if (items.size() > 8) throw bad("stop", "'stop' may hold at most 8 strings");
    for (const auto& s : items) {
      if (!s.is_string() || s.get<std::string>().empty() || s.get<std::string>().size() > 256)
        throw bad("stop", "'stop' must be a non-empty string or an array of them (at most 256 bytes each)");
      job.stops.push_back(s.get<std::string>());
    }
  }
  if (get_bool(body, "echo").value_or(false)) throw bad("echo", "'echo' is not supported");
  if (auto b = get_int(body, "best_of", 1, 1000); b && *b != 1) throw bad("best_of", "'best_of' is not supported");

  // The prompt.
  if (!chat_endpoint) {
    const json* p = field(body, "prompt");
    if (!p) throw bad("prompt", "'prompt' is required");
    const json* pp = p;
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) pp = &(*p)[0];
    if (pp->is_string()) {
      job.seq.prompt = tok->encode(pp->get<std::string>(), true);
    } else if (pp->is_array() && !pp->empty() &&
               std::all_of(pp->begin(), pp->end(), [](const json& x) { return x.is_number_integer(); })) {
      for (const auto& x : *pp) {
        if (x.is_number_unsigned() && x.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          throw bad("prompt", "'prompt': token id out of range");
        job.seq.prompt.push_back(x.get<int64_t>());
      }
    } else {
      throw bad("prompt", "'prompt' must be a string or an array of token ids (one prompt per request)");
    }
  } else {
    const json* msgs = field(body, "messages");
    if (!msgs || !msgs->is_array() || msgs->empty()) throw bad("messages", "'messages' must be a non-empty array");
    std::vector<text::ChatMessage> conv;
    for (const auto& m : *msgs) {
      if (!m.is_object()) throw bad("messages", "every message must be an object with 'role' and 'content'");
      const json* role = field(m, "role");
      if (!role || !role->is_string()) throw bad("messages", "every message needs a string 'role'");
      std::string content;
      if (const json* c = field(m, "content")) {
        if (c->is_string()) {
          content = c->get<std::string>();
        } else if (c->is_array()) {
          for (const auto& part : *c) {
            const json* t = part.is_object() ? field(part, "text") : nullptr;
            const json* ty = part.is_object() ? field(part, "type") : nullptr;
            if (!t || !t->is_string() || (ty && (!ty->is_string() || ty->get<std::string>() != "text")))
              throw bad("messages", "content parts must be {\"type\": \"text\", \"text\": ...}");
            content += t->get<std::string>();
          }
        } else {
          throw bad("messages", "'content' must be a string or an array of text parts");
        }
      }
      conv.push_back({role->get<std::string>(), content});
    }
    if (!chat) throw bad("messages", "this model has no usable chat template: " + chat_error);
    text::ChatOptions co;
    if (const json* kw = field(body, "chat_template_kwargs")) {
      if (!kw->is_object()) throw bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      co.enable_thinking = get_bool(*kw, "enable_thinking");
    }
    std::string rendered;
    try {
      std::lock_guard<std::mutex> lk(chat_mu);
      rendered = chat->render(conv, co);
    } catch (const std::exception& e) {
      throw bad("messages", std::string("the chat template rejected the conversation: ") + e.what());
    }
    job.seq.prompt = tok->encode(rendered, true);
  }
  return job;
}

void Server::Impl::run_job(Job job, httplib::Response& res) {
  // Queue every choice first, so a refusal leaves nothing running.
  // The n choices share one prefill (choice i samples with seed + i).
  std::vector<std::shared_ptr<SeqStream>> streams;
  try {
    SeqRequest r = job.seq;
    r.stop_strings = job.stops;
    streams = engine->submit_n(r, job.n);
  } catch (const BusyError& e) {
    for (auto& s : streams) s->cancel = true;
    throw HttpError{429, e.what(), "", "server_busy", "queue_full"};
  } catch (const UnknownSetError& e) {  // unloaded between parse_job's check and here
    for (auto& s : streams) s->cancel = true;
    throw HttpError{404, "model '" + job.model + "' does not exist (it was unloaded)", "model",
                    "invalid_request_error", "model_not_found"};
  } catch (const Error& e) {
    for (auto& s : streams) s->cancel = true;
    const std::string msg = e.what();
    const auto colon = msg.find(':');
    throw bad(colon != std::string::npos && colon < 20 ? msg.substr(0, colon) : "", msg);
  }

  struct Choice {
    std::shared_ptr<SeqStream> stream;
    std::string text;  // assembled by the decode engine (stop strings applied)
    std::vector<int64_t> ids;
    bool finished = false, started = false;
    std::string finish_reason, error;
  };
  auto choices = std::make_shared<std::vector<Choice>>(job.n);
  for (int i = 0; i < job.n; ++i) (*choices)[i].stream = streams[i];
  const std::string id = random_id(job.chat ? "chatcmpl-" : "cmpl-");
  const int64_t created = unix_time();
  const int64_t prompt_tokens = static_cast<int64_t>(job.seq.prompt.size());
  auto jobp = std::make_shared<Job>(std::move(job));

  auto provider = [this, choices, jobp, id, created, prompt_tokens](size_t, httplib::DataSink& sink) -> bool {
    const Job& job = *jobp;
    auto cancel_all = [&] {
      for (auto& c : *choices) c.stream->cancel = true;
    };
    auto chunk = [&](int index, const std::string& piece, const json& finish) -> json {
      json c = {{"index", index}, {"finish_reason", finish}};
      if (job.chat) {
        json delta = json::object();
        if (!(*choices)[index].started) delta["role"] = "assistant";
        if (!piece.empty() || !(*choices)[index].started) delta["content"] = piece;
        c["delta"] = delta;
      } else {
        c["text"] = piece;
        c["logprobs"] = nullptr;
      }
      (*choices)[index].started = true;
      return {{"id", id},
              {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", job.model},
              {"choices", json::array({c})}};
    };
    double last_write = mono_s();
    auto write = [&](const std::string& s) {
      last_write = mono_s();
      return sink.write(s.data(), s.size());
    };
    auto sse = [&](const json& j) { return write("data: " + dumps(j) + "\n\n"); };

    size_t open = choices->size();
    while (open > 0) {
      bool ok = true;
      for (size_t i = 0; i < choices->size() && ok; ++i) {
        Choice& c = (*choices)[i];
        if (c.finished) continue;
        std::vector<int64_t> toks;
        std::string piece;
        const bool done = c.stream->take(toks, piece, choices->size() == 1 ? 100 : 10);
        c.ids.insert(c.ids.end(), toks.begin(), toks.end());
        c.text += piece;
        if (done) {
          c.finished = true;
          std::lock_guard<std::mutex> lk(c.stream->mu);
          const std::string& r = c.stream->finish_reason;
          c.finish_reason = r == "eos" ? "stop" : r;  // OpenAI: a stop string or the end of turn
          c.error = c.stream->error;
        }
        if (c.finished) --open;
        if (job.stream) {
          if (!piece.empty() || (!c.started && job.chat)) ok = sse(chunk(static_cast<int>(i), piece, nullptr));
          if (ok && c.finished) {
            if (!c.error.empty())
              ok = sse(error_body("generation failed: " + c.error, "server_error", "", ""));
            else
              ok = sse(chunk(static_cast<int>(i), "", c.finish_reason));
          }
        }
      }
      // Keep-alive every 0.25 s: a client that went away makes the second write after it
      // fail, so its sequences are cancelled within about half a second whatever the decode speed.
      if (ok && open > 0 && mono_s() - last_write > 0.25) ok = write(job.stream ? ": keep-alive\n\n" : " ");
      if (!ok || stopping) {
        cancel_all();
        return false;
      }
    }

    int64_t completion_tokens = 0;
    for (auto& c : *choices) completion_tokens += static_cast<int64_t>(c.ids.size());
    const json usage = {{"prompt_tokens", prompt_tokens * static_cast<int64_t>(choices->size())},
                        {"completion_tokens", completion_tokens},
                        {"total_tokens", prompt_tokens * static_cast<int64_t>(choices->size()) + completion_tokens}};
    if (job.stream) {
      if (job.include_usage)
        sse({{"id", id},
             {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
             {"created", created},
             {"model", job.model},
             {"choices", json::array()},
             {"usage", usage}});
      write("data: [DONE]\n\n");
    } else {
      for (auto& c : *choices)
        if (!c.error.empty()) {
          write(dumps(error_body("generation failed: " + c.error, "server_error", "", "")));
          sink.done();
          return true;
        }
      json out = {{"id", id},
                  {"object", job.chat ? "chat.completion" : "text_completion"},
                  {"created", created},
                  {"model", job.model},
                  {"usage", usage}};
      json arr = json::array();
      for (size_t i = 0; i < choices->size(); ++i) {
        const Choice& c = (*choices)[i];
        json j = {{"index", i}, {"finish_reason", c.finish_reason}, {"token_ids", c.ids}};
        if (job.chat)
          j["message"] = {{"role", "assistant"}, {"content", c.text}};
        else
          j["text"] = c.text, j["logprobs"] = nullptr;
        arr.push_back(j);
      }
      out["choices"] = arr;
      write(dumps(out));
    }
    sink.done();
    return true;
  };
  // Headers go out now; the body (SSE events, or one JSON object preceded by keep-alive
  // spaces) follows as chunks. The release callback runs when the connection is done.
  res.set_chunked_content_provider(jobp->stream ? "text/event-stream" : "application/json", provider,
                                   [choices](bool) {
                                     for (auto& c : *choices) c.stream->cancel = true;
                                   });
  if (jobp->stream) res.set_header("Cache-Control", "no-cache");
}

std::string Server::Impl::metrics() {
  const EngineStats s = engine->stats();
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("s0_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
  {
    std::lock_guard<std::mutex> lk(req_mu);
    for (const auto& [k, v] : requests)
      o << "s0_requests_total{endpoint=\"" << k.first << "\",status=\"" << k.second << "\"} " << v << "\n";
  }
  metric("s0_prompt_tokens_total", "counter", "Prompt tokens of the sequences started (n per n-choice request).");
  o << "s0_prompt_tokens_total " << s.prompt_tokens << "\n";
  metric("s0_prefill_tokens_total", "counter", "Prompt tokens prefilled (once per n-choice request).");
  o << "s0_prefill_tokens_total " << s.prefill_tokens << "\n";
  metric("s0_generated_tokens_total", "counter", "Tokens generated.");
  o << "s0_generated_tokens_total " << s.generated_tokens << "\n";
  metric("s0_decode_steps_total", "counter", "Batched decode steps.");
  o << "s0_decode_steps_total " << s.decode_steps << "\n";
  metric("s0_sequences_started_total", "counter", "Sequences started.");
  o << "s0_sequences_started_total " << s.sequences_started << "\n";
  metric("s0_sequences_finished_total", "counter", "Sequences ended by eos, length or error.");
  o << "s0_sequences_finished_total " << s.sequences_finished << "\n";
  metric("s0_sequences_cancelled_total", "counter", "Sequences cancelled (client gone, stop string, shutdown).");
  o << "s0_sequences_cancelled_total " << s.sequences_cancelled << "\n";
  metric("s0_active_sequences", "gauge", "Sequences being decoded.");
  o << "s0_active_sequences " << s.active << "\n";
  metric("s0_queued_sequences", "gauge", "Sequences waiting for a batch slot.");
  o << "s0_queued_sequences " << s.queued << "\n";
  metric("s0_generated_tokens_per_second", "gauge", "Generated tokens/s over the last 5 s.");
  o << "s0_generated_tokens_per_second " << s.tokens_per_second << "\n";
  metric("s0_state_set_sequences_total", "counter", "Sequences started, by state set (base = none).");
  for (const auto& [k, v] : s.sequences_by_set) o << "s0_state_set_sequences_total{state_set=\"" << k << "\"} " << v << "\n";
  metric("s0_state_set_generated_tokens_total", "counter", "Tokens generated, by state set.");
  for (const auto& [k, v] : s.tokens_by_set)
    o << "s0_state_set_generated_tokens_total{state_set=\"" << k << "\"} " << v << "\n";
  const auto sets = engine->state_sets();
  metric("s0_state_sets_loaded", "gauge", "State sets loaded.");
  o << "s0_state_sets_loaded " << sets.size() << "\n";
  metric("s0_state_set_bytes", "gauge", "Memory held by each loaded state set.");
  for (const auto& i : sets) o << "s0_state_set_bytes{state_set=\"" << i.name << "\"} " << i.bytes << "\n";
  metric("s0_weight_layout", "gauge", "1 for the layout the weights are held in (pairs: k-pairs for generation; rows).");
  o << "s0_weight_layout{layout=\"" << weight_layout << "\"} 1\n";
  return o.str();
}

namespace {

json set_info_json(const StateSetInfo& i) {
  return {{"name", i.name},     {"path", i.path},           {"kind", i.kind}, {"params", i.params}, {"bytes", i.bytes},
          {"layers", i.layers}, {"alpha", i.alpha},         {"normalize", i.normalize},
          {"load_seconds", i.load_seconds}};
}

std::string endpoint_label(const std::string& path) {
  static const char* known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/admin/states",
                                "/health", "/metrics"};
  for (const char* k : known)
    if (path == k) return k;
  if (path.rfind("/admin/states/", 0) == 0) return "/admin/states";
  return "other";
}

json parse_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const json::exception& e) {
    throw HttpError{400, std::string("the request body is not valid JSON: ") + e.what(), ""};
  }
}

// Runs a handler, turning HttpError / s0::Error into error responses.
template <typename F>
httplib::Server::Handler guarded(F f) {
  return [f](const httplib::Request& req, httplib::Response& res) {
    try {
      f(req, res);
    } catch (const HttpError& e) {
      send_error(res, e);
    } catch (const Error& e) {
      send_error(res, HttpError{400, e.what(), ""});
    } catch (const std::exception& e) {
      send_error(res, HttpError{500, std::string("internal error: ") + e.what(), "", "server_error"});
    }
  };
}

}  // namespace

void Server::Impl::routes() {
  // httplib listens with a backlog of 5: a burst of clients then overflows the accept
  // queue and some connections fail. Remember the socket to raise it after bind().
  svr.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = static_cast<int>(sock);
  });
  svr.set_payload_max_length(opt.max_body_bytes);
  svr.set_read_timeout(opt.read_timeout_s, 0);
  const int nthreads = std::max(4, opt.http_threads);
  svr.new_task_queue = [nthreads] { return new httplib::ThreadPool(static_cast<size_t>(nthreads)); };
  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, HttpError{401, "missing or wrong API key (expected 'Authorization: Bearer KEY')", "",
                              "authentication_error", "invalid_api_key"});
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // an error body is already there
    std::string msg = res.status == 404   ? "no such endpoint: " + req.method + " " + req.path
                      : res.status == 413 ? "request body too large"
                      : res.status == 405 ? "method not allowed"
                                          : "request failed (HTTP " + std::to_string(res.status) + ")";
    res.set_content(dumps(error_body(msg, "invalid_request_error", "", "")), "application/json");
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content(dumps(error_body("internal error: " + what, "server_error", "", "")), "application/json");
  });
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::lock_guard<std::mutex> lk(req_mu);
    ++requests[{endpoint_label(req.path), res.status}];
  });

  route("POST", "/v1/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
             run_job(parse_job(parse_body(req), false), res);
           }));
  route("POST", "/v1/chat/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
             run_job(parse_job(parse_body(req), true), res);
           }));
  route("GET", "/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
            json data = json::array();
            data.push_back({{"id", "base"}, {"object", "model"}, {"created", started}, {"owned_by", "s0"},
                            {"root", opt.model_dir}});
            for (const auto& i : engine->state_sets())
              data.push_back({{"id", i.name},
                              {"object", "model"},
                              {"created", started},
                              {"owned_by", "s0"},
                              {"parent", "base"},
                              {"root", i.path},
                              {"kind", i.kind},
                              {"bytes", i.bytes},
                              {"state_set", set_info_json(i)}});
            res.set_content(dumps(json{{"object", "list"}, {"data", data}}), "application/json");
          }));
  route("GET", "/admin/states", guarded([this](const httplib::Request&, httplib::Response& res) {
            json data = json::array();
            int64_t total = 0;
            for (const auto& i : engine->state_sets()) data.push_back(set_info_json(i)), total += i.bytes;
            res.set_content(dumps(json{{"object", "list"}, {"data", data}, {"total_bytes", total}}),
                            "application/json");
          }));
  route("POST", "/admin/states", guarded([this](const httplib::Request& req, httplib::Response& res) {
             json body = parse_body(req);
             if (!body.is_object()) throw bad("", "the request body must be a JSON object");
             const json* name = field(body, "name");
             const json* path = field(body, "path");
             if (!name || !name->is_string()) throw bad("name", "'name' (string) is required");
             if (!path || !path->is_string()) throw bad("path", "'path' (a state-set directory) is required");
             StateSetInfo info;
             try {
               const json* kind = field(body, "kind");  // optional: "states" | "lora" | "offset" | "prefix"
               if (kind && !kind->is_string()) throw bad("kind", "'kind' must be \"states\", \"lora\", \"offset\" or \"prefix\"");
               info = engine->load_state_set(name->get<std::string>(), path->get<std::string>(),
                                             kind ? kind->get<std::string>() : std::string());
             } catch (const Error& e) {
               const std::string m = e.what();
               throw bad(m.rfind("state set name", 0) == 0 ? "name" : "path", m);
             }
             res.set_content(dumps(set_info_json(info)), "application/json");
           }));
  route("DELETE", R"(/admin/states/([^/]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
               const std::string name = req.matches[1];
               if (!engine->unload_state_set(name))
                 throw HttpError{404, "no state set named '" + name + "' is loaded", "name", "invalid_request_error",
                                 "model_not_found"};
               res.set_content(dumps(json{{"name", name}, {"deleted", true}}), "application/json");
             }));
  route("GET", "/health", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats s = engine->stats();
    res.set_content(dumps(json{{"status", "ok"}, {"active", s.active}, {"queued", s.queued}}), "application/json");
  });
  route("GET", "/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
}

Server::Server(const ServerOptions& opt, std::shared_ptr<models::CausalLM> model) : impl_(std::make_unique<Impl>()) {
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the process
  impl_->opt = opt;
  if (opt.max_n < 1) throw Error("serve: max_n must be >= 1");
  if (!model) {  // loaded here for serving only: generation's weight layout
    model = models::load_model(opt.model_dir, models::parse_dtype(opt.dtype));
    models::use_generation_layout(*model);
  }
  impl_->model = model;
  impl_->weight_layout = model->pair_layout() ? "pairs" : "rows";
  impl_->tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_model_dir(opt.model_dir));
  try {
    impl_->chat = std::make_unique<text::ChatTemplate>(text::ChatTemplate::from_model_dir(opt.model_dir));
  } catch (const std::exception& e) {
    impl_->chat_error = e.what();
  }
  impl_->engine = std::make_unique<Engine>(model, opt.limits, impl_->tok.get());
  for (const auto& [name, dir] : opt.states) impl_->engine->load_state_set(name, dir);
  for (const auto& a : opt.adapters) impl_->engine->load_state_set(a.name, a.dir, a.kind);
  impl_->routes();
}

Server::~Server() { stop(); }

int Server::bind() {
  const auto& o = impl_->opt;
  int port = o.port;
  if (o.port == 0) {
    port = impl_->svr.bind_to_any_port(o.host);
    if (port <= 0) throw Error("serve: cannot bind to " + o.host);
  } else if (!impl_->svr.bind_to_port(o.host, o.port)) {
    throw Error("serve: cannot bind to " + o.host + ":" + std::to_string(o.port) + " (in use, or not an address here)");
  }
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, 1024);  // Linux: a second listen() sets the backlog
  return port;
}

void Server::listen() {
  impl_->listening = true;
  impl_->svr.listen_after_bind();
  impl_->listening = false;
}

void Server::stop() {
  if (!impl_) return;
  std::lock_guard<std::mutex> lk(impl_->stop_mu);
  impl_->stopping = true;
  impl_->engine->stop();
  // httplib's stop() only acts on a running server: wait for listen() to get going.
  for (int i = 0; i < 200 && impl_->listening && !impl_->svr.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->svr.stop();
}

bool Server::running() const { return impl_ && impl_->svr.is_running(); }

Engine& Server::engine() { return *impl_->engine; }

Server::LocalResponse Server::handle_local(const std::string& method, const std::string& path,
                                           const std::string& body, const std::string& authorization,
                                           size_t disconnect_after) {
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.body = body;
  if (!authorization.empty()) req.set_header("Authorization", authorization);
  httplib::Response res;
  if (!impl_->authorized(req)) {
    send_error(res, HttpError{401, "missing or wrong API key (expected 'Authorization: Bearer KEY')", "",
                              "authentication_error", "invalid_api_key"});
  } else if (body.size() > impl_->opt.max_body_bytes) {
    res.status = 413;
    res.set_content(dumps(error_body("request body too large", "invalid_request_error", "", "")), "application/json");
  } else {
    const Impl::Route* found = nullptr;
    for (const auto& r : impl_->local_routes) {
      if (r.method == method && std::regex_match(path, req.matches, r.pattern)) {
        found = &r;
        break;
      }
    }
    if (!found) {
      res.status = 404;
      res.set_content(dumps(error_body("no such endpoint: " + method + " " + path, "invalid_request_error", "", "")),
                      "application/json");
    } else {
      res.status = 200;
      found->handler(req, res);
    }
  }
  LocalResponse out;
  out.status = res.status;
  out.content_type = res.get_header_value("Content-Type");
  if (res.content_provider_) {
    bool done = false, gone = false;
    httplib::DataSink sink;
    sink.write = [&](const char* d, size_t n) {
      if (gone || out.body.size() + n > disconnect_after) {
        gone = true;
        return false;
      }
      out.body.append(d, n);
      return true;
    };
    sink.done = [&] { done = true; };
    sink.is_writable = [&] { return !gone; };
    while (!done && !gone && res.content_provider_(out.body.size(), 0, sink)) {
    }
    res.content_provider_success_ = done && !gone;
  } else {
    out.body = res.body;
  }
  {
    std::lock_guard<std::mutex> lk(impl_->req_mu);
    ++impl_->requests[{endpoint_label(path), res.status}];
  }
  return out;
}

}  // namespace s0::serve
