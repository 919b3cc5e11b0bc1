// A checkpoint with a NaN or infinite weight is refused when loaded, naming the file and the
// tensor (every output and every S0 gradient would otherwise be NaN).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "s0/io/safetensors.h"
#include "s0/models/model.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;

namespace {

// Overwrites element 3 of the F32 tensor `name` (full checkpoint name) of DIR/model.safetensors.
void poison(const std::string& dir, const std::string& name, float value) {
  const std::string path = dir + "/model.safetensors";
  uint64_t offset = 0;
  {
    io::SafetensorsFile f(path);
    const auto& t = f.get(name);
    ASSERT_EQ(t.dtype, io::DType::F32);
    uint64_t header = 0;
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(&header), 8);
    offset = 8 + header + t.begin + 3 * sizeof(float);
  }
  std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
  out.seekp(static_cast<std::streamoff>(offset));
  out.write(reinterpret_cast<const char*>(&value), sizeof value);
}

std::string copy_of_tiny(const std::string& name) {
  const std::string src = s0::testing::tiny_qwen35("f32", 5);
  const std::string dst = s0::testing::temp_dir(name);
  std::filesystem::copy(src, dst, std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  return dst;
}

}  // namespace

TEST(WeightsFinite, NanOrInfWeightIsRefusedByName) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    const std::string dir = copy_of_tiny("weights_nan");
    std::string full;
    for (const auto& n : io::SafetensorsFile(dir + "/model.safetensors").names())
      if (n.find("layers.0.mlp.down_proj.weight") != std::string::npos) full = n;
    ASSERT_FALSE(full.empty());
    poison(dir, full, bad);
    try {
      (void)models::load_model(dir, at::kFloat);
      FAIL() << "a checkpoint with " << bad << " loaded";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("model.safetensors: tensor '" + full + "' contains NaN or infinite values"), std::string::npos)
          << m;
    }
  }
}

TEST(WeightsFinite, FiniteF32ThatOverflowsBf16IsRefused) {
  const std::string dir = copy_of_tiny("weights_big");
  std::string full;
  for (const auto& n : io::SafetensorsFile(dir + "/model.safetensors").names())
    if (n.find("layers.0.mlp.up_proj.weight") != std::string::npos) full = n;
  ASSERT_FALSE(full.empty());
  poison(dir, full, std::numeric_limits<float>::max());  // finite in f32; rounds to inf in bf16
  EXPECT_NO_THROW((void)models::load_model(dir, at::kFloat));
  try {
    (void)models::load_model(dir, at::kBFloat16);
    FAIL() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(as BFloat16)"), std::string::npos) << e.what();
  }
}
