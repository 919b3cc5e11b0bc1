// safetensors reader: the 8-byte length, the JSON header, the tensor table and the bounds of
// every tensor's bytes. Input: a whole .safetensors file.
#include <cstdint>
#include <string_view>

#include "fuzz_util.h"
#include "s0/io/safetensors.h"

static volatile uint64_t g_sink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      s0::fuzz::write_file("t.safetensors", std::string_view(reinterpret_cast<const char*>(data), size));
  s0::fuzz::expect_clean("safetensors", [&] {
    s0::io::SafetensorsFile f(path);
    uint64_t sink = 0;
    for (const auto& [name, t] : f.tensors()) {
      sink += static_cast<uint64_t>(t.numel()) + t.nbytes() + s0::io::dtype_size(t.dtype);
      if (t.nbytes() > 0) sink += t.data[0] + t.data[t.nbytes() - 1];  // inside the mapping
    }
    for (const auto& [k, v] : f.metadata()) sink += k.size() + v.size();
    g_sink = sink;
  });
  return 0;
}
