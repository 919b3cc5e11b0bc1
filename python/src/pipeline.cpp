// s0.collect / s0.evaluate / s0.experiment (the CLI's subcommands, returning their
// summaries as dicts) and s0.Server (the OpenAI-compatible server, started and stopped from
// Python).
#include <chrono>
#include <filesystem>
#include <thread>

#include "common.h"
#include "s0/pipeline/experiment.h"
#include "s0/pipeline/run.h"
#include "s0/serve/server.h"
#include "s0/util/progress.h"

namespace s0py {

namespace {

using s0::Error;
namespace fs = std::filesystem;

// The model argument: a loaded Model (used as is) or a directory (loaded by the call, with
// the call's dtype and threads).
struct ModelArg {
  ModelPtr loaded;
  std::string dir;
};

ModelArg model_arg(const py::object& model) {
  ModelArg a;
  if (auto p = path_like(model))
    a.dir = *p;
  else if (!model.is_none()) {
    a.loaded = model.cast<ModelPtr>();
    a.dir = a.loaded->dir;
  } else {
    throw Error("model: give a Model or a model directory");
  }
  return a;
}

std::string need(const py::object& o, const char* what) {
  auto p = path_like(o);
  if (!p) throw Error(std::string(what) + " must be a path (str or os.PathLike)");
  return *p;
}

void fill_common(s0::pipeline::TaskRunSettings& s, const ModelArg& m, const py::object& tasks,
                 const std::string& task_kind, const py::object& db_dir, const py::object& states,
                 bool chat, bool thinking, int64_t max_new_tokens, uint64_t seed, double timeout,
                 int workers, bool unsafe_exec, const std::string& dtype, int threads,
                 const py::object& progress) {
  s.model = m.dir;
  s.tasks = need(tasks, "tasks");
  s.kind = task_kind;
  s.db_dir = path_like(db_dir).value_or("");
  s.dtype = m.loaded ? m.loaded->dtype : dtype;
  s.states = path_like(states).value_or("");
  if (!states.is_none() && s.states.empty()) throw Error("states must be a state-set directory");
  s.chat = chat;
  s.thinking = thinking;
  s.max_new_tokens = max_new_tokens;
  s.seed = seed;
  s.timeout = timeout;
  s.workers = workers;
  s.unsafe_exec = unsafe_exec;
  s.threads = threads;
  // progress: True/None = lines on stderr (as the CLI), False = none, a callable = called
  // with each update's dict (see run_on).
  s.progress = progress.is_none() || !py::isinstance<py::bool_>(progress) || progress.cast<bool>();
}

// A sink handing progress updates to a Python callable (with the GIL); none for a bool/None.
s0::ProgressSink progress_fn(const py::object& progress) {
  if (progress.is_none() || py::isinstance<py::bool_>(progress)) return {};
  if (!PyCallable_Check(progress.ptr())) throw Error("progress must be a bool or a callable");
  return [progress](const nlohmann::json& j) {
    py::gil_scoped_acquire gil;
    progress(to_py(j));
  };
}

// Runs f with the GIL released and the model (when one is given) held.
template <class F>
nlohmann::json run_on(const ModelArg& m, const py::object& progress, F&& f) {
  std::optional<s0::ScopedProgressSink> sink;  // destroyed after `r`, with the GIL held
  if (auto f = progress_fn(progress)) sink.emplace(std::move(f));
  Released r;
  if (m.loaded) {
    std::lock_guard<std::mutex> lock(m.loaded->mu);
    return f(m.loaded->lm.get());
  }
  return f(nullptr);
}

py::object collect(const py::object& model, const py::object& tasks, const py::object& out,
                   const std::string& task_kind, const py::object& problems,
                   const py::object& states, const py::object& alpha, int64_t samples, int64_t keep,
                   double temperature, double top_p, int64_t top_k, int64_t max_new_tokens,
                   uint64_t seed, bool chat, bool thinking, double timeout, int workers,
                   bool unsafe_exec, const py::object& db_dir, const std::string& dtype,
                   int threads, bool check_all, const py::object& progress, int64_t batch) {
  ModelArg m = model_arg(model);
  s0::pipeline::CollectSettings s;
  fill_common(s, m, tasks, task_kind, db_dir, states, chat, thinking, max_new_tokens, seed, timeout,
              workers, unsafe_exec, dtype, threads, progress);
  s.out = need(out, "out");
  s.problems = opt_str(problems, "problems");
  s.alpha = alpha.is_none() ? -1 : alpha.cast<double>();
  if (!alpha.is_none() && !(s.alpha >= 0)) throw Error("alpha must be a non-negative number");
  s.samples = samples;
  s.keep = keep;
  s.temperature = temperature;
  s.top_p = top_p;
  s.top_k = top_k;
  s.check_all = check_all;
  s.batch = batch;
  return to_py(run_on(m, progress,
                      [&](s0::models::CausalLM* lm) { return s0::pipeline::run_collect(s, lm); }));
}

py::object evaluate(const py::object& model, const py::object& tasks, const py::object& out,
                    const std::string& task_kind, const py::object& problems,
                    const py::object& states, const py::object& alphas, bool no_base,
                    int64_t samples, int64_t batch, const std::vector<int64_t>& ks,
                    double temperature, double top_p, int64_t max_new_tokens, uint64_t seed,
                    bool chat, bool thinking, double timeout, int workers, bool unsafe_exec,
                    const py::object& db_dir, const std::string& dtype, int threads,
                    const py::object& progress) {
  ModelArg m = model_arg(model);
  s0::pipeline::EvalSettings s;
  fill_common(s, m, tasks, task_kind, db_dir, states, chat, thinking, max_new_tokens, seed, timeout,
              workers, unsafe_exec, dtype, threads, progress);
  s.out = need(out, "out");
  s.problems = opt_str(problems, "problems");
  if (py::isinstance<py::float_>(alphas) || py::isinstance<py::int_>(alphas))
    s.alphas = {alphas.cast<double>()};
  else if (py::isinstance<py::str>(alphas))
    s.alphas = s0::pipeline::parse_alphas(alphas.cast<std::string>());
  else if (!alphas.is_none())
    for (auto a : alphas) s.alphas.push_back(a.cast<double>());
  s.no_base = no_base;
  s.samples = samples;
  s.batch = batch;
  s.ks = ks;
  s.temperature = temperature;
  s.top_p = top_p;
  return to_py(
      run_on(m, progress, [&](s0::models::CausalLM* lm) { return s0::pipeline::run_eval(s, lm); }));
}

py::object experiment(const py::object& config, const py::object& out, const py::object& model,
                      const py::object& progress) {
  std::string out_dir;
  if (auto o = path_like(out))
    out_dir = fs::absolute(*o).lexically_normal().string();
  else if (!out.is_none())
    throw Error("out must be a path");
  nlohmann::json cfg;
  if (auto p = path_like(config)) {
    cfg = s0::pipeline::load_experiment_config(*p);
  } else if (py::isinstance<py::dict>(config)) {
    cfg = s0::pipeline::experiment_config_from_json(to_json(config), fs::current_path().string(),
                                                    "experiment config", out_dir);
  } else {
    throw Error("config must be a path to a JSON file or a dict");
  }
  if (!out_dir.empty()) cfg["out"] = out_dir;
  ModelPtr loaded = model.is_none() ? nullptr : model.cast<ModelPtr>();
  nlohmann::json j;
  {
    std::optional<s0::ScopedProgressSink> sink;
    if (auto f = progress_fn(progress)) sink.emplace(std::move(f));
    Released r;
    if (loaded) {
      std::lock_guard<std::mutex> lock(loaded->mu);
      j = s0::pipeline::run_experiment(cfg, loaded->lm.get());
    } else {
      j = s0::pipeline::run_experiment(cfg);
    }
  }
  return to_py(j);
}

// The server: listen() runs on a thread of its own; stop() ends it.
class Server {
 public:
  Server(const py::object& model, const py::object& states, const py::object& lora,
         const py::object& offset, const std::string& host, int port, const std::string& api_key,
         const std::string& dtype, int64_t max_batch, int64_t max_queue, int64_t max_prompt_tokens,
         int64_t max_tokens_cap, size_t max_body_bytes) {
    ModelArg m = model_arg(model);
    opt_.model_dir = m.dir;
    opt_.dtype = m.loaded ? m.loaded->dtype : dtype;
    opt_.host = host;
    opt_.port = port;
    opt_.api_key = api_key;
    opt_.limits.max_batch = max_batch;
    opt_.limits.max_queue = max_queue;
    opt_.limits.max_prompt_tokens = max_prompt_tokens;
    opt_.limits.max_tokens_cap = max_tokens_cap;
    opt_.max_body_bytes = max_body_bytes;
    auto named = [](const py::object& o, const char* what) {
      std::vector<std::pair<std::string, std::string>> v;
      if (o.is_none()) return v;
      if (!py::isinstance<py::dict>(o))
        throw Error(std::string(what) + " must be a dict {name: directory}");
      for (auto [k, d] : o.cast<py::dict>()) {
        auto p = path_like(d);
        if (!p) throw Error(std::string(what) + ": every value must be a directory");
        v.emplace_back(k.cast<std::string>(), *p);
      }
      return v;
    };
    opt_.states = named(states, "states");
    for (auto& [n, d] : named(lora, "lora")) opt_.adapters.push_back({n, d, "lora"});
    for (auto& [n, d] : named(offset, "offset")) opt_.adapters.push_back({n, d, "offset"});
    model_ = m.loaded;
    Released r;
    server_ = std::make_unique<s0::serve::Server>(opt_, m.loaded ? m.loaded->lm : nullptr);
  }
  ~Server() {
    py::gil_scoped_release r;
    shutdown();
  }

  int start() {
    if (thread_.joinable()) throw Error("the server is already running");
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->listen(); });
    // Serving before returning: a stop() right after start() then always finds it running.
    Released r;
    for (int i = 0; i < 3000 && !server_->running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!server_->running()) throw Error("serve: the server did not start");
    return port_;
  }
  void stop() {
    Released r;
    shutdown();
  }
  bool running() const { return thread_.joinable(); }
  int port() const { return port_; }
  std::string url() const { return "http://" + opt_.host + ":" + std::to_string(port_); }

 private:
  void shutdown() {
    if (thread_.joinable()) {
      server_->stop();
      thread_.join();
    }
  }
  s0::serve::ServerOptions opt_;
  ModelPtr model_;
  std::unique_ptr<s0::serve::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace

void bind_pipeline(py::module_& mod) {
  mod.def("collect", &collect, py::arg("model"), py::arg("tasks"), py::arg("out"), py::kw_only(),
          py::arg("task_kind") = "humaneval", py::arg("problems") = py::none(),
          py::arg("states") = py::none(), py::arg("alpha") = py::none(), py::arg("samples") = 16,
          py::arg("keep") = 1, py::arg("temperature") = 0.7, py::arg("top_p") = 0.95,
          py::arg("top_k") = 0, py::arg("max_new_tokens") = 512, py::arg("seed") = 0,
          py::arg("chat") = true, py::arg("thinking") = false, py::arg("timeout") = 10.0,
          py::arg("workers") = 2, py::arg("unsafe_exec") = false, py::arg("db_dir") = py::none(),
          py::arg("dtype") = "bf16", py::arg("threads") = 0, py::arg("check_all") = false,
          py::arg("progress") = py::none(), py::arg("batch") = 0,
          "`s0 collect`: sample, verify and keep solutions as training JSONL (`out`); returns the "
          "summary. batch = --batch (problems sampled together; 0: by memory; never changes a "
          "result). "
          "problems = --train ranges (default: the task kind's training split); chat=False = "
          "--no-chat. "
          "progress: True (lines on stderr), False, or a callable given each update's dict.");
  mod.def("evaluate", &evaluate, py::arg("model"), py::arg("tasks"), py::arg("out"), py::kw_only(),
          py::arg("task_kind") = "humaneval", py::arg("problems") = py::none(),
          py::arg("states") = py::none(), py::arg("alphas") = py::none(),
          py::arg("no_base") = false, py::arg("samples") = 0, py::arg("batch") = 16,
          py::arg("ks") = std::vector<int64_t>{1, 5, 10}, py::arg("temperature") = 0.7,
          py::arg("top_p") = 0.95, py::arg("max_new_tokens") = 512, py::arg("seed") = 0,
          py::arg("chat") = true, py::arg("thinking") = false, py::arg("timeout") = 10.0,
          py::arg("workers") = 2, py::arg("unsafe_exec") = false, py::arg("db_dir") = py::none(),
          py::arg("dtype") = "bf16", py::arg("threads") = 0, py::arg("progress") = py::none(),
          "`s0 eval`: greedy pass@1 (and sampled pass@k) of base and a state set; writes "
          "`out`/results.jsonl, "
          "summary.json, report.md and returns the summary. problems = --eval ranges; alphas: a "
          "number or a list.");
  mod.def("experiment", &experiment, py::arg("config"), py::kw_only(), py::arg("out") = py::none(),
          py::arg("model") = py::none(), py::arg("progress") = py::none(),
          "`s0 experiment`: the protocol over seeds; config is a JSON file or a dict (paths "
          "relative to the "
          "current directory). Returns the summary written to OUT/summary.json.");

  py::class_<Server, std::shared_ptr<Server>>(mod, "Server",
                                              "`s0 serve` in the background of a Python process")
      .def(py::init<const py::object&, const py::object&, const py::object&, const py::object&,
                    const std::string&, int, const std::string&, const std::string&, int64_t,
                    int64_t, int64_t, int64_t, size_t>(),
           py::arg("model"), py::kw_only(), py::arg("states") = py::none(),
           py::arg("lora") = py::none(), py::arg("offset") = py::none(),
           py::arg("host") = "127.0.0.1", py::arg("port") = 0, py::arg("api_key") = "",
           py::arg("dtype") = "bf16", py::arg("max_batch") = 32, py::arg("max_queue") = 256,
           py::arg("max_prompt_tokens") = 8192, py::arg("max_tokens_cap") = 4096,
           py::arg("max_body_bytes") = size_t{4} << 20,
           "model: a Model (shared: do not use it from Python while the server runs) or a "
           "directory. states / lora "
           "/ offset: {name: directory}. port 0 = any free port (see .port after start()).")
      .def("start", &Server::start, "Binds and serves on a background thread; returns the port")
      .def("stop", &Server::stop, "Stops serving (running requests end as cancelled)")
      .def_property_readonly("running", &Server::running)
      .def_property_readonly("port", &Server::port)
      .def_property_readonly("url", &Server::url)
      .def("__enter__",
           [](py::object self) {
             self.cast<Server&>().start();
             return self;
           })
      .def("__exit__", [](Server& s, py::args) { s.stop(); });
}

}  // namespace s0py
