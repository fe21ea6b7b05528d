// SPDX-License-Identifier: Apache-2.0
// Safetensors reading and writing: bit-exact store round trips, half-precision decoding against
// known values, an error naming the tensor for each kind of damaged file, and no exception
// other than zo::invalid_argument for random or mutated input.
#define BOOST_TEST_MODULE safetensors
#include <bit>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>
#include <zo/io/safetensors.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/stores/view_store.hpp>
#include <zo/zo.hpp>

namespace fs = std::filesystem;
using zo::io::safetensors_file;
using zo::io::tensor_shape;

namespace {

// A fresh directory per test case, removed afterwards.
struct scratch_dir {
  fs::path path;
  scratch_dir() {
    std::random_device device;
    path = fs::temp_directory_path() / ("zo_safetensors_" + std::to_string(device()));
    fs::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A file from a header text and data bytes, exactly as given (no padding), so tests control
// every byte.
std::vector<std::byte> make_file(const std::string& header, const std::vector<std::uint8_t>& data) {
  std::vector<std::byte> bytes;
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    bytes.push_back(static_cast<std::byte>(n >> (8 * i)));
  for (char c : header)
    bytes.push_back(static_cast<std::byte>(c));
  for (auto b : data)
    bytes.push_back(static_cast<std::byte>(b));
  return bytes;
}

std::vector<std::byte> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

void write_bytes(const fs::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

safetensors_file parse(const std::vector<std::byte>& bytes) {
  return safetensors_file::parse(std::span<const std::byte>(bytes));
}

// A predicate for BOOST_CHECK_EXCEPTION: the message contains every part.
auto mentions(std::vector<std::string> parts) {
  return [parts](const zo::invalid_argument& e) {
    const std::string what = e.what();
    for (const auto& p : parts) {
      if (what.find(p) == std::string::npos) {
        BOOST_TEST_MESSAGE("message \"" << what << "\" lacks \"" << p << "\"");
        return false;
      }
    }
    return true;
  };
}

void le16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
}

void le64(std::vector<std::uint8_t>& out, double d) {
  const auto v = std::bit_cast<std::uint64_t>(d);
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

bool same_bits(float a, float b) {
  return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

// Parses and reads every tensor; only zo::invalid_argument may come out.
void parse_and_read_all(std::span<const std::byte> bytes) {
  try {
    const auto file = safetensors_file::parse(bytes);
    for (const auto& t : file.tensors()) {
      try {
        (void)file.read_float(t.name);
      } catch (const zo::invalid_argument&) {
      }
    }
  } catch (const zo::invalid_argument&) {
  }
}

zo::eigen_store<float> sample_store() {
  zo::eigen_store<float> store;
  using matrix = zo::eigen_store<float>::matrix_type;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  matrix embed(5, 3);
  for (Eigen::Index i = 0; i < embed.size(); ++i)
    embed.data()[i] = normal(rng);
  // Values a lossy path would change: negative zero, a subnormal, infinity, a NaN payload.
  embed(0, 0) = -0.0f;
  embed(0, 1) = std::numeric_limits<float>::denorm_min();
  embed(0, 2) = std::numeric_limits<float>::infinity();
  embed(1, 0) = std::bit_cast<float>(0x7fc01234u);
  store.add("model.decoder.embed_tokens.weight", embed);
  matrix ln(1, 4);
  ln << 1.0f, 0.5f, -0.25f, 3.0e-39f;
  store.add("model.decoder.layers.0.final_layer_norm.weight", ln, {.decay = false});
  matrix scalar(1, 1);
  scalar << 42.0f;
  store.add("scale", scalar);
  matrix fc(2, 7);
  for (Eigen::Index i = 0; i < fc.size(); ++i)
    fc.data()[i] = normal(rng);
  store.add("model.decoder.layers.0.fc1.weight", fc);
  return store;
}

// A copy of the store's shapes with zero values, to load into.
zo::eigen_store<float> zero_like(const zo::eigen_store<float>& store) {
  zo::eigen_store<float> out;
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    out.add(std::string(b.name()), b.rows(), b.cols());
  }
  return out;
}

// Two F32 tensors: a [2, 3] at [0, 24) and b [4] at [24, 40).
std::vector<std::byte> two_tensor_file(const fs::path& dir) {
  const std::vector<float> a{1, 2, 3, 4, 5, 6}, b{7, 8, 9, 10};
  const auto path = dir / "two.safetensors";
  zo::io::write_safetensors(path, {{"a", {2, 3}, a.data()}, {"b", {4}, b.data()}});
  return read_bytes(path);
}

}  // namespace

BOOST_AUTO_TEST_CASE(store_round_trip_is_bit_exact_with_names_shapes_and_metadata) {
  scratch_dir dir;
  const auto store = sample_store();
  const auto path = dir.path / "model.safetensors";
  const zo::io::metadata_map metadata{{"format", "pt"}, {"zo.step", "1200"}};
  zo::io::save_store(path, store, metadata);

  const auto bytes = read_bytes(path);
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i)
    header_length = (header_length << 8) | std::to_integer<std::uint64_t>(bytes[i]);
  BOOST_TEST(header_length % 8 == 0u);

  const auto file = safetensors_file::open(path);
  BOOST_TEST(file.metadata() == metadata);
  BOOST_REQUIRE(file.tensors().size() == store.size());
  const std::vector<tensor_shape> shapes{{5, 3}, {4}, {1}, {2, 7}};
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto& t = file.tensors()[i];
    BOOST_TEST(t.name == store.block(i).name());
    BOOST_TEST(t.shape == shapes[i]);
    BOOST_TEST((t.dtype == zo::io::dtype::f32));
  }

  auto loaded = zero_like(store);
  const auto ignored = zo::io::load_store(path, loaded);
  BOOST_TEST(ignored.empty());
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto a = store.block(i), b = loaded.block(i);
    for (std::size_t e = 0; e < a.size(); ++e)
      BOOST_TEST(same_bits(a.data()[e], b.data()[e]), a.name() << "[" << e << "]");
  }

  // The same through the in-memory reader.
  const auto in_memory = parse(bytes);
  const auto ln = in_memory.read_float("model.decoder.layers.0.final_layer_norm.weight", {4});
  BOOST_TEST(ln == std::vector<float>({1.0f, 0.5f, -0.25f, 3.0e-39f}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(writer_replaces_the_file_whole_and_leaves_no_temporary) {
  scratch_dir dir;
  const auto path = dir.path / "w.safetensors";
  const std::vector<float> one{1}, two{2, 3};
  zo::io::write_safetensors(path, {{"x", {1}, one.data()}});
  zo::io::write_safetensors(path, {{"y", {2}, two.data()}, {"x", {1}, one.data()}});
  const auto file = safetensors_file::open(path);
  BOOST_REQUIRE(file.tensors().size() == 2u);
  BOOST_TEST(file.tensors()[0].name == "y");  // the order given, not alphabetical
  BOOST_TEST(file.read_float("y", {2}) == two, boost::test_tools::per_element());
  BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);

  BOOST_CHECK_EXCEPTION(
      zo::io::write_safetensors(dir.path / "missing" / "f.safetensors", {{"x", {1}, one.data()}}),
      zo::invalid_argument, mentions({"cannot write", "missing"}));
  BOOST_CHECK_EXCEPTION(
      zo::io::write_safetensors(path, {{"x", {1}, one.data()}, {"x", {1}, one.data()}}),
      zo::invalid_argument, mentions({"duplicate tensor 'x'"}));
  BOOST_CHECK_EXCEPTION(zo::io::write_safetensors(path, {{"x", {2, 3}, nullptr}}),
                        zo::invalid_argument, mentions({"'x'", "null"}));
  BOOST_CHECK_EXCEPTION(zo::io::write_safetensors(path, {{"__metadata__", {1}, one.data()}}),
                        zo::invalid_argument, mentions({"reserved"}));
  // The failed writes left the earlier file intact.
  BOOST_TEST(safetensors_file::open(path).tensors().size() == 2u);
}

BOOST_AUTO_TEST_CASE(an_open_file_reads_what_it_validated_after_a_new_save_replaces_it) {
  scratch_dir dir;
  const auto path = dir.path / "ckpt.safetensors";
  const std::vector<float> old_values{1, 2}, new_values{3, 4, 5, 6};
  zo::io::write_safetensors(path, {{"w", {2}, old_values.data()}});
  const auto file = safetensors_file::open(path);
  zo::io::write_safetensors(path, {{"big", {4}, new_values.data()}, {"w", {2}, new_values.data()}});
  const auto copy = file;
  BOOST_TEST(copy.read_float("w", {2}) == old_values, boost::test_tools::per_element());
  BOOST_TEST(safetensors_file::open(path).read_float("w", {2})[0] == 3.0f);
}

BOOST_AUTO_TEST_CASE(load_store_returns_tensors_the_store_lacks) {
  scratch_dir dir;
  const auto store = sample_store();
  const auto path = dir.path / "model.safetensors";
  zo::io::save_store(path, store);
  zo::eigen_store<float> partial;
  partial.add("scale", 1, 1);
  const auto ignored = zo::io::load_store(path, partial);
  BOOST_TEST(partial.matrix(0)(0, 0) == 42.0f);
  BOOST_TEST(ignored == std::vector<std::string>({"model.decoder.embed_tokens.weight",
                                                  "model.decoder.layers.0.final_layer_norm.weight",
                                                  "model.decoder.layers.0.fc1.weight"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(vector_tensors_fill_row_and_column_blocks) {
  scratch_dir dir;
  const auto path = dir.path / "bias.safetensors";
  const std::vector<float> bias{1, 2, 3};
  zo::io::write_safetensors(path, {{"bias", {3}, bias.data()}});
  // view_store's vector overload makes an n × 1 block; [n] fills it as it fills a 1 × n one.
  std::vector<float> column(3), row(3);
  zo::view_store<float> as_column, as_row;
  as_column.add("bias", std::span<float>(column));
  as_row.add("bias", std::span<float>(row), 1, 3);
  zo::io::load_store(path, as_column);
  zo::io::load_store(path, as_row);
  BOOST_TEST(column == bias, boost::test_tools::per_element());
  BOOST_TEST(row == bias, boost::test_tools::per_element());

  // shape_of overrides the saved shape; one that does not hold the block is refused.
  const auto saved = dir.path / "col.safetensors";
  zo::io::save_store(saved, as_column, {}, [](const auto& b) { return tensor_shape{b.size()}; });
  BOOST_TEST(safetensors_file::open(saved).tensors()[0].shape == tensor_shape({3}));
  BOOST_CHECK_EXCEPTION(zo::io::save_store(saved, as_column, {},
                                           [](const auto&) {
                                             return tensor_shape{2, 2};
                                           }),
                        zo::invalid_argument, mentions({"[2, 2]", "'bias'"}));
}

BOOST_AUTO_TEST_CASE(half_bfloat16_and_double_decode_to_known_floats) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::uint8_t> data;
  // F16: 1, -2.5, 65504 (largest), 2^-24 (smallest subnormal), 1023·2^-24 (largest subnormal),
  // 2^-14 (smallest normal), inf, -inf, -0.
  for (std::uint16_t h : {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x03FF, 0x0400, 0x7C00, 0xFC00, 0x8000})
    le16(data, h);
  // BF16: 1, -2.5, largest finite, smallest subnormal (2^-133), inf.
  for (std::uint16_t b : {0x3F80, 0xC020, 0x7F7F, 0x0001, 0x7F80})
    le16(data, b);
  // F64: 1, -2.5, float max, 1e300 (beyond float), -1e300, 1e-50 (below float).
  for (double d : {1.0, -2.5, double(std::numeric_limits<float>::max()), 1e300, -1e300, 1e-50})
    le64(data, d);
  std::vector<std::uint8_t> nan_bytes;
  le16(nan_bytes, 0x7E00);
  data.insert(data.end(), nan_bytes.begin(), nan_bytes.end());
  const std::string header = R"({"h":{"dtype":"F16","shape":[3,3],"data_offsets":[0,18]},)"
                             R"("b":{"dtype":"BF16","shape":[5],"data_offsets":[18,28]},)"
                             R"("d":{"dtype":"F64","shape":[6],"data_offsets":[28,76]},)"
                             R"("n":{"dtype":"F16","shape":[],"data_offsets":[76,78]}})";
  const auto bytes = make_file(header, data);
  const auto file = parse(bytes);

  const std::vector<float> h_expected{1.0f,     -2.5f, 65504.0f, 0x1p-24f, 1023 * 0x1p-24f,
                                      0x1p-14f, inf,   -inf,     -0.0f};
  const auto h = file.read_float("h", {3, 3});
  BOOST_REQUIRE(h.size() == h_expected.size());
  for (std::size_t i = 0; i < h.size(); ++i)
    BOOST_TEST(same_bits(h[i], h_expected[i]), "F16 element " << i << ": " << h[i]);

  const std::vector<float> b_expected{1.0f, -2.5f, 3.38953139e38f, 0x1p-133f, inf};
  const auto b = file.read_float("b", {5});
  for (std::size_t i = 0; i < b.size(); ++i)
    BOOST_TEST(same_bits(b[i], b_expected[i]), "BF16 element " << i << ": " << b[i]);

  const std::vector<float> d_expected{1.0f, -2.5f, std::numeric_limits<float>::max(),
                                      inf,  -inf,  0.0f};
  const auto d = file.read_float("d", {6});
  for (std::size_t i = 0; i < d.size(); ++i)
    BOOST_TEST(same_bits(d[i], d_expected[i]), "F64 element " << i << ": " << d[i]);

  BOOST_TEST(std::isnan(file.read_float("n", {})[0]));

  // Into a block: [3, 3] F16 fills a 3 × 3 block; the destination must have the right size.
  std::vector<float> block(9);
  file.read_block("h", 3, 3, block);
  BOOST_TEST(block[2] == 65504.0f);
  std::vector<float> small(4);
  BOOST_CHECK_EXCEPTION(file.read_block("h", 3, 3, small), zo::invalid_argument,
                        mentions({"'h'", "9 elements", "4"}));
}

// BF16 and F16 tensors are written as their bits and read back bit for bit, through a store of
// that type as well; read into the other 16-bit type or from F32 they round to the nearest value.
BOOST_AUTO_TEST_CASE(sixteen_bit_tensors_round_trip_bit_for_bit_and_f32_rounds_to_nearest) {
  scratch_dir dir;
  // Every bit pattern (NaNs included) goes through unchanged.
  std::vector<zo::bfloat16> bf16(65536);
  std::vector<zo::float16> f16(65536);
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    bf16[i].bits = static_cast<std::uint16_t>(i);
    f16[i].bits = static_cast<std::uint16_t>(65535 - i);
  }
  // F32 values between two bf16 values: below, at (ties to even, both ways) and above the middle.
  const std::vector<float> f32{1.0f + 0x1p-9f,     1.0f + 0x1p-8f,
                               1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
                               -3.0e38f,           0.1f};
  const auto path = dir.path / "half.safetensors";
  zo::io::write_safetensors(path, {{.name = "b", .shape = {256, 256}, .bf16 = bf16.data()},
                                   {.name = "h", .shape = {65536}, .f16 = f16.data()},
                                   {.name = "f", .shape = {6}, .data = f32.data()}});
  const auto file = zo::io::safetensors_file::open(path);
  BOOST_TEST(zo::io::dtype_name(file.at("b").dtype) == "BF16");
  BOOST_TEST(zo::io::dtype_name(file.at("h").dtype) == "F16");
  BOOST_TEST(zo::io::dtype_name(file.at("f").dtype) == "F32");
  std::vector<zo::bfloat16> b(65536);
  file.read_block("b", 256, 256, std::span<zo::bfloat16>(b));
  std::vector<zo::float16> h(65536);
  file.read("h", {65536}, std::span<zo::float16>(h));
  for (std::size_t i = 0; i < b.size(); ++i) {
    BOOST_TEST_REQUIRE(b[i].bits == bf16[i].bits);
    BOOST_TEST_REQUIRE(h[i].bits == f16[i].bits);
  }
  // Widened exactly when read as float.
  const auto as_float = file.read_float("b", {256, 256});
  for (std::size_t i = 0; i < b.size(); ++i)
    BOOST_TEST_REQUIRE(same_bits(as_float[i], zo::widen(bf16[i])));
  // F32 into BF16: to the nearest, ties to even.
  std::vector<zo::bfloat16> rounded(6);
  file.read("f", {6}, std::span<zo::bfloat16>(rounded));
  const std::vector<std::uint16_t> expected{0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xFF62, 0x3DCD};
  for (std::size_t i = 0; i < rounded.size(); ++i) {
    BOOST_TEST(rounded[i].bits == expected[i], "element " << i);
    BOOST_TEST(rounded[i].bits == zo::round_nearest<zo::bfloat16>(f32[i]).bits);
  }
  // BF16 into F16 goes through the (exact) float value.
  std::vector<zo::float16> converted(65536);
  file.read("b", {256, 256}, std::span<zo::float16>(converted));
  for (std::size_t i = 0; i < converted.size(); i += 97)
    BOOST_TEST(converted[i].bits == zo::round_nearest<zo::float16>(zo::widen(bf16[i])).bits);

  // save_store and load_store over a store of bfloat16 blocks.
  std::vector<zo::bfloat16> weights(bf16.begin(), bf16.begin() + 12),
      bias(bf16.end() - 4, bf16.end());
  zo::view_store<zo::bfloat16> store;
  store.add("w", std::span<zo::bfloat16>(weights), 3, 4);
  store.add("bias", std::span<zo::bfloat16>(bias), 1, 4);
  zo::io::save_store(dir.path / "store.safetensors", store);
  const auto saved = zo::io::safetensors_file::open(dir.path / "store.safetensors");
  BOOST_TEST(zo::io::dtype_name(saved.at("w").dtype) == "BF16");
  std::vector<zo::bfloat16> weights_back(12), bias_back(4);
  zo::view_store<zo::bfloat16> loaded;
  loaded.add("w", std::span<zo::bfloat16>(weights_back), 3, 4);
  loaded.add("bias", std::span<zo::bfloat16>(bias_back), 1, 4);
  zo::io::load_store(saved, loaded);
  for (std::size_t i = 0; i < 12; ++i)
    BOOST_TEST(weights_back[i].bits == weights[i].bits);
  for (std::size_t i = 0; i < 4; ++i)
    BOOST_TEST(bias_back[i].bits == bias[i].bits);
  // One tensor, one source.
  BOOST_CHECK_EXCEPTION(zo::io::write_safetensors(
                            dir.path / "two.safetensors",
                            {{.name = "x", .shape = {1}, .data = f32.data(), .bf16 = b.data()}}),
                        zo::invalid_argument, mentions({"'x'", "more than one"}));
}

BOOST_AUTO_TEST_CASE(truncated_files_name_the_header_or_the_tensor) {
  scratch_dir dir;
  const auto bytes = two_tensor_file(dir.path);
  const std::size_t data_start = bytes.size() - 40;
  struct cut {
    std::size_t size;
    std::vector<std::string> expect;
  };
  const std::vector<cut> cuts{
      {0, {"truncated header", "0 bytes"}},
      {5, {"truncated header", "5 bytes"}},
      {8, {"truncated header", "header length"}},
      {data_start / 2, {"truncated header"}},
      {data_start - 1, {"truncated header"}},
      {data_start, {"truncated: tensor '", "needs data bytes", "has only 0"}},
      {data_start + 30, {"truncated: tensor 'b'", "[24, 40)", "has only 30"}},
      {bytes.size() - 1, {"truncated: tensor 'b'", "has only 39"}},
  };
  for (const auto& c : cuts) {
    BOOST_TEST_CONTEXT("cut at " << c.size) {
      const std::vector<std::byte> cut_bytes(bytes.begin(),
                                             bytes.begin() + static_cast<std::ptrdiff_t>(c.size));
      BOOST_CHECK_EXCEPTION(parse(cut_bytes), zo::invalid_argument, mentions(c.expect));
      const auto path = dir.path / "cut.safetensors";
      write_bytes(path, cut_bytes);
      auto expect = c.expect;
      expect.push_back(path.string());
      BOOST_CHECK_EXCEPTION(safetensors_file::open(path), zo::invalid_argument, mentions(expect));
    }
  }
  BOOST_CHECK_EXCEPTION(safetensors_file::open(dir.path / "absent.safetensors"),
                        zo::invalid_argument, mentions({"cannot open", "absent.safetensors"}));
}

BOOST_AUTO_TEST_CASE(missing_and_misshaped_tensors_are_named) {
  scratch_dir dir;
  const std::vector<float> w(6, 1.0f), b(3, 2.0f);
  const auto path = dir.path / "m.safetensors";
  zo::io::write_safetensors(path,
                            {{"fc.weight", {2, 3}, w.data()}, {"fc.bias_renamed", {3}, b.data()}});
  const auto file = safetensors_file::open(path);
  BOOST_CHECK_EXCEPTION(file.read_float("fc.bias"), zo::invalid_argument,
                        mentions({"no tensor 'fc.bias' in " + path.string()}));
  BOOST_CHECK_EXCEPTION(file.read_float("fc.weight", {3, 2}), zo::invalid_argument,
                        mentions({"tensor 'fc.weight' has shape [2, 3], expected [3, 2]"}));
  std::vector<float> out(6);
  BOOST_CHECK_EXCEPTION(file.read_block("fc.weight", 1, 6, out), zo::invalid_argument,
                        mentions({"tensor 'fc.weight' has shape [2, 3], expected [1, 6] or [6]"}));

  // load_store checks every block before touching any: the store keeps its values.
  zo::eigen_store<float> store;
  store.add("fc.weight", 2, 3);
  store.add("fc.bias", 1, 3);
  BOOST_CHECK_EXCEPTION(zo::io::load_store(path, store), zo::invalid_argument,
                        mentions({"no tensor 'fc.bias'"}));
  BOOST_TEST(store.matrix(0).isZero());
  zo::eigen_store<float> transposed;
  transposed.add("fc.weight", 3, 2);
  BOOST_CHECK_EXCEPTION(zo::io::load_store(path, transposed), zo::invalid_argument,
                        mentions({"tensor 'fc.weight' has shape [2, 3], expected [3, 2]"}));
}

BOOST_AUTO_TEST_CASE(malformed_headers_are_reported) {
  const std::vector<std::uint8_t> data(16, 0);
  struct bad {
    std::string header;
    std::vector<std::string> expect;
  };
  const std::vector<bad> cases{
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", {"invalid JSON header"}},
      {"\xff\xfe", {"invalid JSON header"}},
      {"", {"invalid JSON header"}},
      {R"([1,2])", {"not a JSON object"}},
      {R"({"a":[[[[1]]]]})", {"nests deeper", "'a'"}},
      {R"({"a":5})", {"tensor 'a'", "not a JSON object"}},
      {R"({"a":{"shape":[4],"data_offsets":[0,16]}})", {"tensor 'a'", "no 'dtype'"}},
      {R"({"a":{"dtype":7,"shape":[4],"data_offsets":[0,16]}})",
       {"tensor 'a'", "'dtype' is not a string"}},
      {R"({"a":{"dtype":"Q8","shape":[4],"data_offsets":[0,16]}})",
       {"tensor 'a'", "unknown dtype 'Q8'"}},
      {R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", {"tensor 'a'", "no 'shape'"}},
      {R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", {"tensor 'a'", "not an array"}},
      {R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", {"tensor 'a'", "-4"}},
      {R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", {"tensor 'a'", "4.0"}},
      {R"({"a":{"dtype":"F32","shape":[4]}})", {"tensor 'a'", "no 'data_offsets'"}},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", {"tensor 'a'", "[0]"}},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", {"tensor 'a'", "begin > end"}},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
       {"tensor 'a'", "[3]", "12 bytes", "[0, 16)", "span 16"}},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
       {"truncated: tensor 'a'", "[8, 24)", "has only 16"}},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       {"tensors 'a' and 'b'", "overlap", "[0, 8)", "[4, 12)"}},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       {"duplicate tensor 'a'"}},
      {R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})",
       {"tensor 'a'", "duplicate key 'dtype'"}},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})",
       {"tensor 'a'", "[4294967296, 4294967296, 16]", "overflows"}},
      {R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]}})",
       {"tensor 'a'", "overflows"}},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551616]}})",
       {"tensor 'a'", "data_offsets"}},
      {R"({"__metadata__":{"k":1}})", {"__metadata__", "'k'", "strings"}},
      {R"({"__metadata__":[]})", {"__metadata__", "not a JSON object"}},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("header " << c.header) {
      BOOST_CHECK_EXCEPTION(parse(make_file(c.header, data)), zo::invalid_argument,
                            mentions(c.expect));
    }
  }

  // A header length beyond the file, and one beyond any sane header.
  auto bytes = make_file(R"({})", data);
  bytes[0] = std::byte{0xff};
  BOOST_CHECK_EXCEPTION(parse(bytes), zo::invalid_argument,
                        mentions({"truncated header", "header length 255", "only 18 bytes"}));
  for (int i = 0; i < 8; ++i)
    bytes[i] = std::byte{0xff};
  BOOST_CHECK_EXCEPTION(parse(bytes), zo::invalid_argument,
                        mentions({"header length 18446744073709551615", "exceeds"}));

  // Valid odd cases: an empty header, empty tensors anywhere, gaps between tensors.
  BOOST_TEST(parse(make_file("{}", {})).tensors().empty());
  const auto odd = parse(make_file(R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},)"
                                   R"("x":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}})",
                                   data));
  BOOST_TEST(odd.read_float("e").empty());
  BOOST_CHECK_EXCEPTION(odd.read_float("x"), zo::invalid_argument,
                        mentions({"tensor 'x'", "dtype I64"}));
}

BOOST_AUTO_TEST_CASE(random_and_mutated_bytes_throw_only_invalid_argument) {
  scratch_dir dir;
  const auto valid = two_tensor_file(dir.path);
  std::mt19937_64 rng(20240601);
  auto byte = [&] { return static_cast<std::byte>(rng() & 0xff); };
  std::size_t accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<std::byte> bytes;
    if (round < 500) {
      bytes.resize(rng() % 64);
      for (auto& b : bytes)
        b = byte();
    } else {
      bytes = valid;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const std::size_t at = rng() % bytes.size();
        switch (rng() % 4) {
          case 0:
            bytes[at] = byte();
            break;
          case 1:
            bytes.resize(at);
            break;
          case 2:
            bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), byte());
            break;
          default:  // Digits make shapes and offsets change without breaking the JSON.
            bytes[at] = static_cast<std::byte>('0' + rng() % 10);
        }
        if (bytes.empty()) break;
      }
    }
    try {
      (void)safetensors_file::parse(bytes);
      ++accepted;
    } catch (const zo::invalid_argument&) {
    }
    BOOST_CHECK_NO_THROW(parse_and_read_all(bytes));
  }
  BOOST_TEST_MESSAGE(accepted << " of 3000 inputs parsed");
}
