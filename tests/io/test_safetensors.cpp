// Tests for s0::io safetensors reader/writer, half-precision conversions and atomic files.
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "s0/io/atomic_file.h"
#include "s0/io/half.h"
#include "s0/io/safetensors.h"
#include "s0/util/error.h"

namespace {

using namespace s0::io;

// Fresh temp directory per test, removed (with its files) afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "s0_st_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& f : list_dir()) ::unlink((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> list_dir() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") out.push_back(n);
      }
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // Writes a raw safetensors file: u64 LE header length + header + data.
  std::string craft(const std::string& name, const std::string& header,
                    const std::string& data = "") const {
    std::string bytes;
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    bytes += header;
    bytes += data;
    const std::string p = file(name);
    write_file_atomic(p, bytes);
    return p;
  }
  std::string dir_;
};

// Runs `f`, expecting s0::Error whose message contains every string in `needles`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected s0::Error";
  } catch (const s0::Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "message '" << msg << "' lacks '" << n << "'";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected s0::Error, got other exception: " << e.what();
  }
}

void expect_open_error(const std::string& path, std::vector<std::string> needles) {
  needles.push_back(path);
  expect_error([&] { SafetensorsFile f(path); }, needles);
}

// Plain (non-atomic, no fsync) write, for tight loops.
void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

uint64_t read_u64le(const std::string& s) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[i]);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Round trips

using SafetensorsTest = TempDirTest;

TEST_F(SafetensorsTest, DTypeTable) {
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    EXPECT_EQ(dtype_from_name(dtype_name(d), "ctx"), d);
  }
  EXPECT_STREQ(dtype_name(DType::BF16), "BF16");
  expect_error([] { dtype_from_name("F8_E4M3", "my context"); }, {"my context", "F8_E4M3"});
}

TEST_F(SafetensorsTest, RoundTripSeveralDtypes) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 1e-7f, -0.0f};
  const std::vector<uint16_t> bf16 = {f32_to_bf16(1.0f), f32_to_bf16(-3.5f), f32_to_bf16(7.0f)};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), 0, 42,
                                    std::numeric_limits<int64_t>::max()};
  const std::vector<uint8_t> u8 = {0, 1, 255, 128, 7};
  const std::vector<double> f64 = {3.141592653589793};
  const double scalar = 2.718281828;
  const std::vector<int32_t> i32 = {-1, 2, -3, 4};
  const std::string p = file("rt.safetensors");

  // Deliberately not in alphabetical order: offsets follow spec order.
  save_safetensors(p,
                   {{{"w.f32", DType::F32, {2, 3}}, f32.data()},
                    {{"a.bf16", DType::BF16, {3}}, bf16.data()},
                    {{"ids", DType::I64, {4}}, i64.data()},
                    {{"bytes", DType::U8, {5}}, u8.data()},
                    {{"empty", DType::F32, {0, 4}}, nullptr},
                    {{"scalar", DType::F64, {}}, &scalar},
                    {{"one", DType::F64, {1, 1, 1}}, f64.data()},
                    {{"i32", DType::I32, {2, 2}}, i32.data()}},
                   {{"format", "pt"}, {"note", "hello"}});

  // Header: length prefix and data section 8-byte aligned, padded with spaces.
  const std::string raw = read_file(p);
  const uint64_t hlen = read_u64le(raw);
  EXPECT_EQ(hlen % 8, 0u);
  EXPECT_EQ(raw[8], '{');

  SafetensorsFile f(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a.bf16", "bytes", "empty", "i32", "ids", "one",
                                                 "scalar", "w.f32"}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");
  EXPECT_TRUE(f.has("ids"));
  EXPECT_FALSE(f.has("nope"));

  const TensorInfo& w = f.get("w.f32");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.numel(), 6);
  EXPECT_EQ(w.nbytes(), 24u);
  EXPECT_EQ(w.begin, 0u);  // first in spec order
  EXPECT_EQ(std::memcmp(w.data, f32.data(), 24), 0);

  const TensorInfo& b = f.get("a.bf16");
  EXPECT_EQ(b.begin, 24u);
  std::vector<uint16_t> bf16_back(3);
  std::memcpy(bf16_back.data(), b.data, 6);
  EXPECT_EQ(bf16_back, bf16);
  EXPECT_EQ(bf16_to_f32(bf16_back[1]), -3.5f);

  std::vector<int64_t> i64_back(4);
  std::memcpy(i64_back.data(), f.get("ids").data, 32);
  EXPECT_EQ(i64_back, i64);
  EXPECT_EQ(std::memcmp(f.get("bytes").data, u8.data(), 5), 0);
  EXPECT_EQ(std::memcmp(f.get("i32").data, i32.data(), 16), 0);

  const TensorInfo& e = f.get("empty");
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.nbytes(), 0u);
  EXPECT_EQ(e.begin, e.end);

  const TensorInfo& s = f.get("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  double sb = 0;
  std::memcpy(&sb, s.data, 8);
  EXPECT_EQ(sb, scalar);

  // Data pointers are contiguous in spec order and the file ends with the last tensor.
  const TensorInfo& last = f.get("i32");
  EXPECT_EQ(8 + hlen + last.end, raw.size());

  expect_error([&] { f.get("missing"); }, {p, "'missing'", "not found"});
  // No temp file left behind.
  EXPECT_EQ(list_dir(), std::vector<std::string>{"rt.safetensors"});
}

TEST_F(SafetensorsTest, StreamingWriterChunksSpanTensors) {
  std::vector<float> a(1000), b(7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = -static_cast<float>(i);
  std::string all(reinterpret_cast<const char*>(a.data()), a.size() * 4);
  all.append(reinterpret_cast<const char*>(b.data()), b.size() * 4);

  const std::string p = file("stream.safetensors");
  SafetensorsWriter w(p, {{"a", DType::F32, {10, 100}}, {"b", DType::F32, {7}}}, {});
  EXPECT_EQ(w.total_bytes(), all.size());
  for (size_t off = 0; off < all.size(); off += 333) {
    w.write(all.data() + off, std::min<size_t>(333, all.size() - off));
  }
  w.finish();
  expect_error([&] { w.finish(); }, {p});

  SafetensorsFile f(p);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(std::memcmp(f.get("a").data, a.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(f.get("b").data, b.data(), b.size() * 4), 0);
  // Header offsets follow spec order: a then b.
  EXPECT_EQ(f.get("a").begin, 0u);
  EXPECT_EQ(f.get("b").begin, 4000u);
}

TEST_F(SafetensorsTest, NoTensorsOnlyMetadata) {
  const std::string p = file("empty.safetensors");
  save_safetensors(p, {}, {{"k", "v"}});
  SafetensorsFile f(p);
  EXPECT_TRUE(f.names().empty());
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST_F(SafetensorsTest, MoveKeepsDataValid) {
  const std::vector<int32_t> v = {1, 2, 3};
  const std::string p = file("m.safetensors");
  save_safetensors(p, {{{"v", DType::I32, {3}}, v.data()}});
  SafetensorsFile a(p);
  const uint8_t* ptr = a.get("v").data;
  SafetensorsFile b(std::move(a));
  EXPECT_EQ(b.get("v").data, ptr);
  EXPECT_EQ(std::memcmp(b.get("v").data, v.data(), 12), 0);
  SafetensorsFile c(p);
  c = std::move(b);
  EXPECT_EQ(std::memcmp(c.get("v").data, v.data(), 12), 0);
}

TEST_F(SafetensorsTest, ReadsPaddedHeaderAndGaps) {
  // Hand-written header with trailing spaces, unordered offsets, a gap and trailing bytes.
  std::string data(24, '\0');
  const float x = 1.25f, y = -4.0f;
  std::memcpy(&data[16], &x, 4);
  std::memcpy(&data[0], &y, 4);
  const std::string p = craft("pad.safetensors",
                              R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                              R"("y":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})"
                              "       ",
                              data);
  SafetensorsFile f(p);
  float xb = 0, yb = 0;
  std::memcpy(&xb, f.get("x").data, 4);
  std::memcpy(&yb, f.get("y").data, 4);
  EXPECT_EQ(xb, x);
  EXPECT_EQ(yb, y);
}

#ifdef S0_FIXTURES_DIR
TEST_F(SafetensorsTest, ReadsFixtureModel) {
  const std::string p = std::string(S0_FIXTURES_DIR) + "/qwen35/q35-tiny-a/model.safetensors";
  if (::access(p.c_str(), R_OK) != 0) GTEST_SKIP() << "fixture not found: " << p;
  SafetensorsFile f(p);
  EXPECT_FALSE(f.names().empty());
  for (const auto& n : f.names()) EXPECT_EQ(f.get(n).dtype, DType::F32) << n;
  EXPECT_EQ(f.metadata().at("format"), "pt");
}
#endif

// ---------------------------------------------------------------------------------------------
// Writer errors

TEST_F(SafetensorsTest, WriterDuplicateName) {
  const std::string p = file("dup.safetensors");
  expect_error(
      [&] {
        SafetensorsWriter w(p, {{"a", DType::F32, {1}}, {"a", DType::F32, {2}}});
      },
      {p, "'a'", "duplicate"});
  EXPECT_TRUE(list_dir().empty());
}

TEST_F(SafetensorsTest, WriterReservedAndNegative) {
  const std::string p = file("bad.safetensors");
  expect_error(
      [&] {
        SafetensorsWriter w(p, {{"__metadata__", DType::F32, {1}}});
      },
      {"__metadata__", "reserved"});
  expect_error(
      [&] {
        SafetensorsWriter w(p, {{"neg", DType::F32, {2, -1}}});
      },
      {"'neg'", "negative", "-1"});
  expect_error(
      [&] {
        SafetensorsWriter w(p, {{"huge", DType::F64, {int64_t{1} << 40, int64_t{1} << 30}}});
      },
      {"'huge'", "overflow"});
  EXPECT_TRUE(list_dir().empty());
}

TEST_F(SafetensorsTest, WriterTooManyBytes) {
  const std::string p = file("many.safetensors");
  SafetensorsWriter w(p, {{"a", DType::F32, {2}}});
  const char buf[12] = {};
  w.write(buf, 4);
  expect_error([&] { w.write(buf, 8); }, {p, "more", "declared 8", "already wrote 4", "got 8"});
  w.write(buf, 4);  // state unchanged by the rejected write
  w.finish();
  EXPECT_EQ(SafetensorsFile(p).get("a").nbytes(), 8u);
}

TEST_F(SafetensorsTest, WriterTooFewBytes) {
  const std::string p = file("few.safetensors");
  {
    SafetensorsWriter w(p, {{"a", DType::BF16, {4}}});
    const char buf[8] = {};
    w.write(buf, 6);
    expect_error([&] { w.finish(); }, {p, "fewer", "expected 8", "wrote 6"});
  }
  // Abandoned writer: neither the file nor its temp file exist.
  EXPECT_TRUE(list_dir().empty());
}

TEST_F(SafetensorsTest, SaveNullPointer) {
  const std::string p = file("null.safetensors");
  expect_error(
      [&] {
        save_safetensors(p, {{{"t", DType::F32, {3}}, nullptr}});
      },
      {p, "'t'", "null"});
  EXPECT_TRUE(list_dir().empty());
}

// ---------------------------------------------------------------------------------------------
// Malformed files

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = file("does_not_exist.safetensors");
  expect_open_error(p, {"cannot open", "No such file"});
}

TEST_F(SafetensorsTest, DirectoryPath) { expect_open_error(dir_, {"directory"}); }

TEST_F(SafetensorsTest, ZeroByteFile) {
  const std::string p = file("zero.safetensors");
  write_file_atomic(p, "");
  expect_open_error(p, {"0 bytes", "at least 8"});
}

TEST_F(SafetensorsTest, ShorterThan8Bytes) {
  const std::string p = file("short.safetensors");
  write_file_atomic(p, std::string("\x02\x00\x00", 3));
  expect_open_error(p, {"3 bytes", "at least 8"});
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  const std::string p = file("hlen.safetensors");
  std::string bytes(8, '\0');
  bytes[0] = 100;  // claims 100 header bytes, has 2
  bytes += "{}";
  write_file_atomic(p, bytes);
  expect_open_error(p, {"header length 100", "exceeds the file size", "10 bytes"});
}

TEST_F(SafetensorsTest, HeaderLengthHuge) {
  const std::string p = file("hlen_huge.safetensors");
  write_file_atomic(p, std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10));
  expect_open_error(p, {"header length 18446744073709551615", "exceeds"});
}

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
  // A sparse file just over the 100 MB header limit (no real disk usage).
  const std::string p = file("hlen_limit.safetensors");
  const uint64_t hlen = 100'000'001;
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((hlen >> (8 * i)) & 0xff));
  write_file_atomic(p, bytes);
  ASSERT_EQ(::truncate(p.c_str(), static_cast<off_t>(8 + hlen)), 0);
  expect_open_error(p, {"header length 100000001", "limit", "100000000"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  expect_open_error(craft("nj.safetensors", "{\"a\": [1, 2"), {"not valid JSON"});
  expect_open_error(craft("nj2.safetensors", "hello world"), {"not valid JSON"});
  expect_open_error(craft("nj3.safetensors", std::string("{\"a\xff\":1}")), {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  expect_open_error(craft("arr.safetensors", "[1,2,3]"), {"must be a JSON object", "array"});
  expect_open_error(craft("num.safetensors", "42      "), {"must be a JSON object", "number"});
}

TEST_F(SafetensorsTest, HeaderTooDeep) {
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  expect_open_error(craft("deep.safetensors", "{\"a\":" + deep + "}"), {"nests deeper"});
}

TEST_F(SafetensorsTest, DuplicateHeaderKey) {
  expect_open_error(craft("dupkey.safetensors",
                          R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          "ab"),
                    {"duplicate", "'t'"});
}

TEST_F(SafetensorsTest, EntryNotObject) {
  expect_open_error(craft("eno.safetensors", R"({"t":[1,2]})"),
                    {"tensor 't'", "JSON object", "array"});
}

TEST_F(SafetensorsTest, MissingFields) {
  expect_open_error(craft("md.safetensors", R"({"t":{"shape":[1],"data_offsets":[0,1]}})", "a"),
                    {"tensor 't'", "missing \"dtype\""});
  expect_open_error(craft("ms.safetensors", R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", "a"),
                    {"tensor 't'", "missing \"shape\""});
  expect_open_error(craft("mo.safetensors", R"({"t":{"dtype":"U8","shape":[1]}})", "a"),
                    {"tensor 't'", "missing \"data_offsets\""});
}

TEST_F(SafetensorsTest, WrongFieldTypes) {
  expect_open_error(
      craft("wt1.safetensors", R"({"t":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", "a"),
      {"tensor 't'", "\"dtype\" must be a string", "number"});
  expect_open_error(
      craft("wt2.safetensors", R"({"t":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", "a"),
      {"tensor 't'", "\"shape\" must be an array", "string"});
  expect_open_error(
      craft("wt3.safetensors", R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", "a"),
      {"tensor 't'", "integers", "1.5"});
  expect_open_error(
      craft("wt4.safetensors", R"({"t":{"dtype":"U8","shape":[1],"data_offsets":{"a":0}}})", "a"),
      {"tensor 't'", "data_offsets", "[begin, end]"});
  expect_open_error(
      craft("wt5.safetensors", R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "a"),
      {"tensor 't'", "data_offsets", "[0]"});
  expect_open_error(
      craft("wt6.safetensors", R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", "a"),
      {"tensor 't'", "data_offsets", "non-negative"});
  expect_open_error(
      craft("wt7.safetensors", R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "a"),
      {"tensor 't'", "data_offsets"});
}

TEST_F(SafetensorsTest, BadMetadata) {
  expect_open_error(craft("meta1.safetensors", R"({"__metadata__":[1]})"),
                    {"__metadata__", "must be an object"});
  expect_open_error(craft("meta2.safetensors", R"({"__metadata__":{"epoch":3}})"),
                    {"__metadata__", "'epoch'", "must be a string"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_open_error(
      craft("dt.safetensors", R"({"w":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}})", "a"),
      {"tensor 'w'", "unknown dtype", "F8_E5M2"});
}

TEST_F(SafetensorsTest, NegativeDim) {
  expect_open_error(
      craft("neg.safetensors", R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "negative dimension -3", "[2,-3]"});
}

TEST_F(SafetensorsTest, NumelOverflow) {
  expect_open_error(
      craft("ovf.safetensors",
            R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "overflow"});
  // numel fits in int64 but numel * 8 bytes does not.
  expect_open_error(
      craft("ovf2.safetensors",
            R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "overflow"});
  expect_open_error(
      craft("ovf3.safetensors",
            R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "too large"});
}

TEST_F(SafetensorsTest, OffsetsReversed) {
  expect_open_error(
      craft("rev.safetensors", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", "abcd"),
      {"tensor 'w'", "begin 4 > end 2"});
}

TEST_F(SafetensorsTest, SizeMismatch) {
  expect_open_error(
      craft("sz.safetensors", R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}})",
            std::string(10, 'x')),
      {"tensor 'w'", "expected 12 bytes for BF16 [2,3], found 10"});
}

TEST_F(SafetensorsTest, TruncatedData) {
  // 6 F32 = 24 bytes declared, only 20 present. File = 8 + header + 20.
  const std::string header = R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}})";
  const std::string p = craft("trunc.safetensors", header, std::string(20, 'x'));
  const size_t file_size = 8 + header.size() + 20;
  expect_open_error(p, {"truncated", "tensor 'w'",
                        "expected at least " + std::to_string(file_size + 4) + " bytes",
                        "file has " + std::to_string(file_size)});
}

TEST_F(SafetensorsTest, HugeOffsetsTruncated) {
  // Offsets near UINT64_MAX must not overflow in the bounds check.
  expect_open_error(craft("hugeoff.safetensors",
                          R"({"w":{"dtype":"U8","shape":[1],)"
                          R"("data_offsets":[18446744073709551614,18446744073709551615]}})"),
                    {"truncated", "tensor 'w'"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_open_error(craft("ovl.safetensors",
                          R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                          std::string(16, 'x')),
                    {"'a'", "'b'", "overlap"});
  // Identical ranges overlap too.
  expect_open_error(craft("ovl2.safetensors",
                          R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                          R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                          "xy"),
                    {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, EmptyTensorInsideAnotherRangeIsFine) {
  const std::string p = craft("emp.safetensors",
                              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("e":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]}})",
                              std::string(8, 'x'));
  SafetensorsFile f(p);
  EXPECT_EQ(f.get("e").nbytes(), 0u);
  EXPECT_EQ(f.get("e").shape, (std::vector<int64_t>{3, 0}));
}

TEST_F(SafetensorsTest, RandomGarbageNeverCrashes) {
  // Mutate a valid file byte by byte; every open must succeed or throw s0::Error.
  const std::vector<float> v = {1, 2, 3, 4};
  const std::string p = file("fuzz_src.safetensors");
  save_safetensors(p, {{{"t", DType::F32, {2, 2}}, v.data()}, {{"s", DType::I8, {}}, "z"}});
  const std::string orig = read_file(p);
  const std::string q = file("fuzz.safetensors");
  uint32_t rng = 12345;
  for (int iter = 0; iter < 300; ++iter) {
    std::string m = orig;
    rng = rng * 1664525u + 1013904223u;
    const size_t pos = rng % m.size();
    rng = rng * 1664525u + 1013904223u;
    m[pos] = static_cast<char>(rng >> 24);
    if (iter % 7 == 0) m.resize(rng % m.size());
    write_raw(q, m);
    try {
      SafetensorsFile f(q);
      for (const auto& n : f.names()) (void)f.get(n).nbytes();
    } catch (const s0::Error&) {
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Half-precision conversions

TEST(HalfTest, Bf16Basics) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc0a0), -5.0f);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  // Exactly representable values round-trip.
  for (float f : {1.0f, -3.5f, 0.15625f, 65536.0f, 1e-30f}) {
    const float r = bf16_to_f32(f32_to_bf16(f));
    EXPECT_EQ(f32_to_bf16(r), f32_to_bf16(f));
  }
}

TEST(HalfTest, Bf16RoundsTiesToEven) {
  auto from_bits = [](uint32_t b) { return std::bit_cast<float>(b); };
  // Tie, even lower half kept: 0x3f80'8000 -> 0x3f80 (lsb 0 stays).
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);
  // Tie, odd: 0x3f81'8000 -> 0x3f82 (round up to even).
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);
  // Just above / below the tie.
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80);
  // Rounds up across the exponent boundary and into infinity.
  EXPECT_EQ(f32_to_bf16(from_bits(0x3fffffffu)), 0x4000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(HalfTest, Bf16NanPreserved) {
  const uint16_t q = f32_to_bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(bf16_to_f32(q)));
  // A NaN whose payload is only in the low 16 bits must not become infinity.
  const float low_payload_nan = std::bit_cast<float>(0x7f800001u);
  ASSERT_TRUE(std::isnan(low_payload_nan));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(low_payload_nan))));
  const float neg_nan = std::bit_cast<float>(0xffc00000u);
  EXPECT_EQ(f32_to_bf16(neg_nan) & 0x8000, 0x8000);
}

TEST(HalfTest, F16Basics) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_LT(f16_to_f32(0xfc00), 0.0f);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
}

TEST(HalfTest, F16Overflow) {
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie -> even (inf)
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  const uint16_t n = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(n & 0x7c00, 0x7c00);
  EXPECT_NE(n & 0x03ff, 0);
  EXPECT_NE(f32_to_f16(std::bit_cast<float>(0x7f800001u)) & 0x03ff, 0);  // still NaN
}

TEST(HalfTest, F16Subnormals) {
  const float tiny = std::ldexp(1.0f, -24);  // smallest f16 subnormal
  EXPECT_EQ(f32_to_f16(tiny), 0x0001);
  EXPECT_EQ(f16_to_f32(0x0001), tiny);
  EXPECT_EQ(f16_to_f32(0x8001), -tiny);
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  // Ties to even in the subnormal range.
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // 0.5 ulp -> 0 (even)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp -> 2 (even)
  EXPECT_EQ(f32_to_f16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 ulp -> 2 (even)
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  // Largest subnormal + 0.5 ulp rounds (to even) up into the smallest normal.
  EXPECT_EQ(f32_to_f16(std::ldexp(2047.0f, -25)), 0x0400);
}

TEST(HalfTest, F16ExhaustiveRoundTrip) {
  // Every non-NaN f16 converts to f32 and back exactly; NaNs stay NaN.
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f)))) << h;
    } else {
      ASSERT_EQ(f32_to_f16(f), h) << "h=" << h;
    }
  }
}

TEST(HalfTest, F16MatchesReferenceRounding) {
  // Compare against a double-precision reference on midpoints and neighbours between adjacent
  // finite f16 values (positive, normal and subnormal).
  for (uint32_t h = 0; h < 0x7bff; h += 37) {
    const double lo = f16_to_f32(static_cast<uint16_t>(h));
    const double hi = f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact in f32
    const uint16_t even = (h % 2 == 0) ? h : h + 1;
    EXPECT_EQ(f32_to_f16(mid), even) << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, 1e30f)), h + 1) << h;
  }
}

// ---------------------------------------------------------------------------------------------
// Atomic files

using AtomicFileTest = TempDirTest;

TEST_F(AtomicFileTest, WriteAndReadBack) {
  const std::string p = file("a.txt");
  write_file_atomic(p, "hello");
  EXPECT_EQ(read_file(p), "hello");
  write_file_atomic(p, std::string("over\0written", 12));  // replaces, binary-safe
  EXPECT_EQ(read_file(p), std::string("over\0written", 12));
  EXPECT_EQ(list_dir(), std::vector<std::string>{"a.txt"});  // no temp file left behind
}

TEST_F(AtomicFileTest, WriterUncommittedLeavesNothing) {
  const std::string p = file("b.bin");
  {
    AtomicFileWriter w(p);
    EXPECT_EQ(w.temp_path(), p + ".tmp." + std::to_string(::getpid()));
    w.write("abc", 3);
    EXPECT_EQ(list_dir(), std::vector<std::string>{"b.bin.tmp." + std::to_string(::getpid())});
  }
  EXPECT_TRUE(list_dir().empty());
}

TEST_F(AtomicFileTest, WriterUncommittedKeepsOldFile) {
  const std::string p = file("c.bin");
  write_file_atomic(p, "old");
  {
    AtomicFileWriter w(p);
    w.write("new contents", 12);
  }
  EXPECT_EQ(read_file(p), "old");
  EXPECT_EQ(list_dir(), std::vector<std::string>{"c.bin"});
}

TEST_F(AtomicFileTest, WriterLargeStreaming) {
  // Mix of small (buffered) and large (> 4 MiB, unbuffered) writes.
  const std::string p = file("big.bin");
  std::string expected;
  AtomicFileWriter w(p);
  std::string small(1000, 'a'), big((size_t{5} << 20) + 3, 'b');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31);
  for (int i = 0; i < 3; ++i) {
    w.write(small.data(), small.size());
    expected += small;
    w.write(big.data(), big.size());
    expected += big;
  }
  w.write(small.data(), 0);
  EXPECT_EQ(w.bytes_written(), expected.size());
  w.commit();
  EXPECT_TRUE(w.committed());
  EXPECT_TRUE(read_file(p) == expected);
  expect_error([&] { w.write("x", 1); }, {p});
  expect_error([&] { w.commit(); }, {p});
  EXPECT_EQ(list_dir(), std::vector<std::string>{"big.bin"});
}

TEST_F(AtomicFileTest, MovedWriterCommits) {
  const std::string p = file("mv.bin");
  AtomicFileWriter a(p);
  a.write("xy", 2);
  AtomicFileWriter b(std::move(a));
  b.write("z", 1);
  b.commit();
  EXPECT_EQ(read_file(p), "xyz");
  EXPECT_EQ(list_dir(), std::vector<std::string>{"mv.bin"});
}

TEST_F(AtomicFileTest, Errors) {
  const std::string missing_dir = file("no/such/dir/x.txt");
  expect_error([&] { write_file_atomic(missing_dir, "x"); }, {missing_dir});
  expect_error([&] { AtomicFileWriter w(missing_dir); }, {missing_dir});
  const std::string missing = file("nope.txt");
  expect_error([&] { read_file(missing); }, {"cannot open " + missing, "No such file"});
  expect_error([&] { read_file(dir_); }, {dir_, "directory"});
}

}  // namespace
