// SPDX-License-Identifier: Apache-2.0
// Reading and writing safetensors files, the format Hugging Face checkpoints ship in, and saving
// and loading zo stores through them.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the data buffer that
// follows the header) plus an optional "__metadata__" string map, then the data buffer.
//
// The reader treats every file as hostile: each structural problem is reported as a
// zo::invalid_argument naming the tensor and the problem, and no other exception escapes from
// parsing or reading (I/O and JSON library errors are translated). Gaps between tensors and
// trailing bytes are accepted, unlike in the reference implementation: they are harmless, and
// only overlaps and out-of-range offsets can make one tensor read another's bytes.
//
// Not in the umbrella header zo/zo.hpp because it needs nlohmann-json, which the optimizers do
// not; a project including it links nlohmann_json::nlohmann_json itself.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#if __has_include(<unistd.h>)
#include <unistd.h>
#define ZO_SAFETENSORS_HAVE_FSYNC 1
#endif

#include "zo/backends/cpu.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/float16.hpp"

namespace zo::io {

// Offsets and sizes in the format are 64-bit; a narrower size_t could not address them.
static_assert(sizeof(std::size_t) >= sizeof(std::uint64_t), "zo: safetensors needs 64-bit size_t");

using tensor_shape = std::vector<std::size_t>;
using metadata_map = std::map<std::string, std::string>;

enum class dtype {
  boolean,
  u8,
  i8,
  f8_e5m2,
  f8_e4m3,
  f8_e8m0,
  i16,
  u16,
  f16,
  bf16,
  i32,
  u32,
  f32,
  f64,
  i64,
  u64
};

namespace detail {

struct dtype_entry {
  dtype type;
  std::string_view name;
  std::size_t size;
};

inline constexpr std::array<dtype_entry, 16> dtype_table{{
    {dtype::boolean, "BOOL", 1},
    {dtype::u8, "U8", 1},
    {dtype::i8, "I8", 1},
    {dtype::f8_e5m2, "F8_E5M2", 1},
    {dtype::f8_e4m3, "F8_E4M3", 1},
    {dtype::f8_e8m0, "F8_E8M0", 1},
    {dtype::i16, "I16", 2},
    {dtype::u16, "U16", 2},
    {dtype::f16, "F16", 2},
    {dtype::bf16, "BF16", 2},
    {dtype::i32, "I32", 4},
    {dtype::u32, "U32", 4},
    {dtype::f32, "F32", 4},
    {dtype::f64, "F64", 8},
    {dtype::i64, "I64", 8},
    {dtype::u64, "U64", 8},
}};

}  // namespace detail

inline std::string_view dtype_name(dtype t) {
  for (const auto& e : detail::dtype_table)
    if (e.type == t) return e.name;
  return "?";
}

inline std::size_t dtype_size(dtype t) {
  for (const auto& e : detail::dtype_table)
    if (e.type == t) return e.size;
  return 0;
}

inline std::optional<dtype> parse_dtype(std::string_view name) {
  for (const auto& e : detail::dtype_table)
    if (e.name == name) return e.type;
  return std::nullopt;
}

// The dtypes read_float converts; integer and 8-bit float tensors are not model weights zo
// optimizes.
inline bool float_convertible(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 || t == dtype::f64;
}

// The dtype a tensor of element type T is written as: F32, BF16 or F16.
template <class T>
inline constexpr dtype dtype_of = std::is_same_v<T, bfloat16>  ? dtype::bf16
                                  : std::is_same_v<T, float16> ? dtype::f16
                                                               : dtype::f32;

// The element types a tensor is read into and written from.
template <class T>
inline constexpr bool element_type = std::is_same_v<T, float> || is_16bit<T>;

// "[2, 3]", the way PyTorch prints shapes, so messages read like the Python side.
inline std::string shape_string(std::span<const std::size_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Element count of a shape; nullopt when it does not fit in 64 bits.
inline std::optional<std::size_t> element_count(std::span<const std::size_t> shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (d != 0 && n > std::numeric_limits<std::size_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

// Whether a tensor of `shape` can fill a rows × cols block: [rows, cols] always, and [n] for a
// 1 × n or n × 1 block, since Hugging Face stores biases and LayerNorm parameters 1-D and
// both layouts hold the same elements in the same order.
inline bool shape_fits_block(std::span<const std::size_t> shape, std::size_t rows,
                             std::size_t cols) {
  if (shape.size() == 2) return shape[0] == rows && shape[1] == cols;
  if (shape.size() == 1) return (rows == 1 && shape[0] == cols) || (cols == 1 && shape[0] == rows);
  return false;
}

// How a block's expected shape reads in messages: "[1, 4] or [4]" for vector blocks.
inline std::string block_shape_string(std::size_t rows, std::size_t cols) {
  std::string s = shape_string(tensor_shape{rows, cols});
  if (rows == 1) s += " or " + shape_string(tensor_shape{cols});
  if (cols == 1 && rows != 1) s += " or " + shape_string(tensor_shape{rows});
  return s;
}

struct tensor_info {
  std::string name;
  io::dtype dtype = io::dtype::f32;
  tensor_shape shape;
  // [begin, end) within the data buffer that follows the header.
  std::size_t begin = 0;
  std::size_t end = 0;

  std::size_t elements() const { return end - begin == 0 ? 0 : (end - begin) / dtype_size(dtype); }
};

namespace detail {

inline std::uint16_t load_u16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_u32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_u64(const unsigned char* p) {
  return static_cast<std::uint64_t>(load_u32(p)) |
         (static_cast<std::uint64_t>(load_u32(p + 4)) << 32);
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa × 2^-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline float bfloat16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// A double beyond float's range rounds to infinity as IEEE conversion does; the explicit branch
// keeps the cast within the range where C++ defines it.
inline float double_to_float(double d) {
  constexpr double overflow = 0x1.ffffffp127;  // FLT_MAX plus half an ulp: rounds to infinity.
  if (d >= overflow) return std::numeric_limits<float>::infinity();
  if (d <= -overflow) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

// Converts `count` little-endian elements of type t at src to float.
inline void decode(io::dtype t, const unsigned char* src, std::size_t count, float* dst) {
  switch (t) {
    case io::dtype::f32:
      for (std::size_t i = 0; i < count; ++i)
        dst[i] = std::bit_cast<float>(load_u32(src + 4 * i));
      break;
    case io::dtype::f16:
      for (std::size_t i = 0; i < count; ++i)
        dst[i] = half_to_float(load_u16(src + 2 * i));
      break;
    case io::dtype::bf16:
      for (std::size_t i = 0; i < count; ++i)
        dst[i] = bfloat16_to_float(load_u16(src + 2 * i));
      break;
    case io::dtype::f64:
      for (std::size_t i = 0; i < count; ++i)
        dst[i] = double_to_float(std::bit_cast<double>(load_u64(src + 8 * i)));
      break;
    default:
      break;
  }
}

// Into a 16-bit type: a tensor of that dtype is copied bit for bit; any other is converted to
// float first (exact but for F64) and rounded to the nearest value, ties to even.
template <class T>
requires is_16bit<T>
void decode(io::dtype t, const unsigned char* src, std::size_t count, T* dst) {
  if (t == dtype_of<T>) {
    for (std::size_t i = 0; i < count; ++i)
      dst[i].bits = load_u16(src + 2 * i);
    return;
  }
  const std::size_t size = dtype_size(t);
  std::array<float, 256> widened;
  for (std::size_t done = 0; done < count; done += widened.size()) {
    const std::size_t n = std::min(widened.size(), count - done);
    decode(t, src + done * size, n, widened.data());
    for (std::size_t i = 0; i < n; ++i)
      dst[done + i] = round_nearest<T>(widened[i]);
  }
}

// The reference implementation's cap; a larger header is a corrupt or hostile file.
inline constexpr std::size_t max_header_bytes = 100'000'000;

inline std::string quoted(std::string_view s) {
  return "'" + std::string(s) + "'";
}

}  // namespace detail

// A parsed safetensors file: the validated tensor table, read on demand.
//
// open() reads only the header and reads tensor data from the file at each read call, so a
// multi-gigabyte checkpoint is never held in memory twice. parse() works on bytes the caller
// keeps alive and unchanged for as long as this object is used.
class safetensors_file {
 public:
  static safetensors_file open(const std::filesystem::path& path) {
    safetensors_file f;
    f.source_ = path.string();
    f.stream_ = std::make_shared<stream>();
    std::ifstream& in = f.stream_->in;
    in.open(path, std::ios::binary);
    require(static_cast<bool>(in), "cannot open " + f.source_ + ": " + error_text());
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    require(size >= 0, "cannot determine the size of " + f.source_);
    in.seekg(0, std::ios::beg);
    f.file_size_ = static_cast<std::size_t>(size);
    unsigned char length_bytes[8] = {};
    const std::size_t have = std::min<std::size_t>(8, f.file_size_);
    in.read(reinterpret_cast<char*>(length_bytes), static_cast<std::streamsize>(have));
    require(static_cast<std::size_t>(in.gcount()) == have,
            "cannot read " + f.source_ + ": " + error_text());
    const std::size_t header_length = f.check_length(length_bytes, have);
    std::string header(header_length, '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_length));
    require(static_cast<std::size_t>(in.gcount()) == header_length,
            "truncated header in " + f.source_ + ": it changed while being read");
    f.parse_header(header);
    return f;
  }

  static safetensors_file parse(std::span<const std::byte> bytes,
                                std::string source_name = "<memory>") {
    safetensors_file f;
    f.source_ = std::move(source_name);
    f.bytes_ = bytes;
    f.file_size_ = bytes.size();
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t header_length = f.check_length(p, std::min<std::size_t>(8, bytes.size()));
    f.parse_header(std::string_view(reinterpret_cast<const char*>(p) + 8, header_length));
    return f;
  }

  // The tensors in the order of their data in the file (for files zo writes, the order given
  // to the writer).
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  const metadata_map& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }

  const tensor_info* find(std::string_view name) const {
    auto it = std::find_if(tensors_.begin(), tensors_.end(),
                           [&](const tensor_info& t) { return t.name == name; });
    return it == tensors_.end() ? nullptr : &*it;
  }

  const tensor_info& at(std::string_view name) const {
    const tensor_info* t = find(name);
    require(t != nullptr, "no tensor " + detail::quoted(name) + " in " + source_);
    return *t;
  }

  // Reads a tensor of any shape as float.
  std::vector<float> read_float(std::string_view name) const {
    const tensor_info& t = at(name);
    require_convertible(t);
    std::vector<float> out(t.elements());
    read_into(t, std::span<float>(out));
    return out;
  }

  // Reads a tensor that must have exactly `expected` shape.
  std::vector<float> read_float(std::string_view name, const tensor_shape& expected) const {
    const tensor_info& t = at(name);
    require_shape(t, expected);
    std::vector<float> out(t.elements());
    read_into(t, std::span<float>(out));
    return out;
  }

  void read_float(std::string_view name, const tensor_shape& expected, std::span<float> out) const {
    const tensor_info& t = at(name);
    require_shape(t, expected);
    require_size(t, out.size());
    read_into(t, out);
  }

  // Reads a tensor into 16-bit elements: bit for bit from its own dtype, rounded to the nearest
  // value from any other.
  template <class T>
  requires is_16bit<T>
  void read(std::string_view name, const tensor_shape& expected, std::span<T> out) const {
    const tensor_info& t = at(name);
    require_shape(t, expected);
    require_size(t, out.size());
    read_into(t, out);
  }

  // Reads a tensor into a rows × cols row-major block: [rows, cols], or [n] for a 1 × n or
  // n × 1 block (see shape_fits_block).
  void read_block(std::string_view name, std::size_t rows, std::size_t cols,
                  std::span<float> out) const {
    const tensor_info& t = at(name);
    require_block_shape(t, rows, cols);
    require_size(t, out.size());
    read_into(t, out);
  }
  // The same into a block of 16-bit elements (see read).
  template <class T>
  requires is_16bit<T>
  void read_block(std::string_view name, std::size_t rows, std::size_t cols,
                  std::span<T> out) const {
    const tensor_info& t = at(name);
    require_block_shape(t, rows, cols);
    require_size(t, out.size());
    read_into(t, out);
  }

  // The checks read_block makes before reading, for callers that validate a whole store first.
  void require_block_shape(const tensor_info& t, std::size_t rows, std::size_t cols) const {
    require(shape_fits_block(t.shape, rows, cols),
            "tensor " + detail::quoted(t.name) + " has shape " + shape_string(t.shape) +
                ", expected " + block_shape_string(rows, cols) + " (in " + source_ + ")");
    require_convertible(t);
  }

 private:
  safetensors_file() = default;

  static std::string error_text() { return std::generic_category().message(errno); }

  // Validates the length field against what the file holds and returns N.
  std::size_t check_length(const unsigned char* length_bytes, std::size_t have) {
    require(have == 8, "truncated header in " + source_ + ": the file has " +
                           std::to_string(file_size_) +
                           " bytes, fewer than the 8-byte header length");
    const std::uint64_t n = detail::load_u64(length_bytes);
    require(n <= detail::max_header_bytes, "header length " + std::to_string(n) + " in " + source_ +
                                               " exceeds the limit of " +
                                               std::to_string(detail::max_header_bytes) + " bytes");
    require(n <= file_size_ - 8,
            "truncated header in " + source_ + ": header length " + std::to_string(n) +
                " but only " + std::to_string(file_size_ - 8) + " bytes follow the length field");
    data_start_ = 8 + static_cast<std::size_t>(n);
    return static_cast<std::size_t>(n);
  }

  void parse_header(std::string_view text) {
    const std::string where = " in " + source_;
    const nlohmann::json header = parse_json(text, where);
    const std::size_t data_bytes = file_size_ - data_start_;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        read_metadata(entry, where);
      } else {
        tensors_.push_back(parse_entry(name, entry, where, data_bytes));
      }
    }
    require_disjoint(where);
  }

  static nlohmann::json parse_json(std::string_view text, const std::string& where) {
    using json = nlohmann::json;
    // nlohmann keeps the last of duplicate keys silently and nests without bound, so both are
    // caught while parsing: a safetensors header is never deeper than object → entry → shape.
    std::set<std::string> top_keys;
    std::set<std::string> entry_keys;
    std::string current;
    auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
      if ((event == json::parse_event_t::object_start ||
           event == json::parse_event_t::array_start) &&
          depth > 2)
        throw zo::invalid_argument("header" + where + " nests deeper than a safetensors header " +
                                   "(entry " + detail::quoted(current) + ")");
      if (event == json::parse_event_t::key && depth == 1) {
        current = parsed.get<std::string>();
        if (!top_keys.insert(current).second)
          throw zo::invalid_argument("duplicate tensor " + detail::quoted(current) + where);
        entry_keys.clear();
      }
      if (event == json::parse_event_t::key && depth == 2 &&
          !entry_keys.insert(parsed.get<std::string>()).second)
        throw zo::invalid_argument("tensor " + detail::quoted(current) + where +
                                   " has a duplicate key " +
                                   detail::quoted(parsed.get<std::string>()));
      return true;
    };
    json header;
    try {
      header = json::parse(text.begin(), text.end(), callback);
    } catch (const json::exception& e) {
      throw zo::invalid_argument("invalid JSON header" + where + ": " + e.what());
    }
    require(header.is_object(), "header" + where + " is not a JSON object");
    return header;
  }

  // One tensor's entry, checked against itself and the data section's size.
  static tensor_info parse_entry(const std::string& name, const nlohmann::json& entry,
                                 const std::string& where, std::size_t data_bytes) {
    const std::string tensor = "tensor " + detail::quoted(name) + where;
    require(entry.is_object(), tensor + ": entry is not a JSON object");
    tensor_info t;
    t.name = name;

    const auto dt = entry.find("dtype");
    require(dt != entry.end(), tensor + " has no 'dtype'");
    require(dt->is_string(), tensor + ": 'dtype' is not a string");
    const auto& dtype_text = dt->get_ref<const std::string&>();
    const auto parsed = parse_dtype(dtype_text);
    require(parsed.has_value(), tensor + " has unknown dtype " + detail::quoted(dtype_text));
    t.dtype = *parsed;

    const auto sh = entry.find("shape");
    require(sh != entry.end(), tensor + " has no 'shape'");
    require(sh->is_array(), tensor + ": 'shape' is not an array");
    for (const auto& d : *sh) {
      require(d.is_number_unsigned(),
              tensor + ": 'shape' holds " + d.dump() + ", not a non-negative integer");
      t.shape.push_back(d.get<std::size_t>());
    }

    const auto off = entry.find("data_offsets");
    require(off != entry.end(), tensor + " has no 'data_offsets'");
    require(off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                (*off)[1].is_number_unsigned(),
            tensor + ": 'data_offsets' is " + off->dump() + ", not two non-negative integers");
    t.begin = (*off)[0].get<std::size_t>();
    t.end = (*off)[1].get<std::size_t>();
    const std::string range = "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ")";
    require(t.begin <= t.end, tensor + " has data_offsets " + range + " with begin > end");

    const auto count = element_count(t.shape);
    const std::size_t size = dtype_size(t.dtype);
    require(count.has_value() && *count <= std::numeric_limits<std::size_t>::max() / size,
            tensor + " has shape " + shape_string(t.shape) + " whose byte size overflows 64 bits");
    require(*count * size == t.end - t.begin, tensor + " has shape " + shape_string(t.shape) +
                                                  " of " + std::string(dtype_name(t.dtype)) + " (" +
                                                  std::to_string(*count * size) +
                                                  " bytes) but data_offsets " + range + " span " +
                                                  std::to_string(t.end - t.begin) + " bytes");
    require(t.end <= data_bytes, "truncated: tensor " + detail::quoted(name) +
                                     " needs data bytes " + range + " but the file has only " +
                                     std::to_string(data_bytes) + where);
    return t;
  }

  void require_disjoint(const std::string& where) {
    std::sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    // Empty tensors occupy no bytes and so overlap nothing.
    const tensor_info* previous = nullptr;
    for (const auto& t : tensors_) {
      if (t.begin == t.end) continue;
      if (previous != nullptr)
        require(t.begin >= previous->end,
                "tensors " + detail::quoted(previous->name) + " and " + detail::quoted(t.name) +
                    where + " overlap: [" + std::to_string(previous->begin) + ", " +
                    std::to_string(previous->end) + ") and [" + std::to_string(t.begin) + ", " +
                    std::to_string(t.end) + ")");
      previous = &t;
    }
  }

  void read_metadata(const nlohmann::json& entry, const std::string& where) {
    require(entry.is_object(), "__metadata__" + where + " is not a JSON object");
    for (const auto& [key, value] : entry.items()) {
      require(value.is_string(), "__metadata__" + where + " must map strings to strings; " +
                                     detail::quoted(key) + " holds " + value.dump());
      metadata_[key] = value.get<std::string>();
    }
  }

  void require_shape(const tensor_info& t, const tensor_shape& expected) const {
    require(t.shape == expected, "tensor " + detail::quoted(t.name) + " has shape " +
                                     shape_string(t.shape) + ", expected " +
                                     shape_string(expected) + " (in " + source_ + ")");
    require_convertible(t);
  }

  void require_convertible(const tensor_info& t) const {
    require(float_convertible(t.dtype), "tensor " + detail::quoted(t.name) + " in " + source_ +
                                            " has dtype " + std::string(dtype_name(t.dtype)) +
                                            "; only F32, F16, BF16 and F64 convert to float");
  }

  void require_size(const tensor_info& t, std::size_t out_size) const {
    require(out_size == t.elements(),
            "tensor " + detail::quoted(t.name) + " has " + std::to_string(t.elements()) +
                " elements but the destination holds " + std::to_string(out_size));
  }

  template <class T>
  void read_into(const tensor_info& t, std::span<T> out) const {
    require_convertible(t);
    const std::size_t size = dtype_size(t.dtype);
    const std::size_t count = t.elements();
    if (count == 0) return;
    if (!stream_) {
      const auto* p = reinterpret_cast<const unsigned char*>(bytes_.data()) + data_start_ + t.begin;
      detail::decode(t.dtype, p, count, out.data());
      return;
    }
    std::lock_guard lock(stream_->mutex);
    std::ifstream& in = stream_->in;
    in.clear();
    in.seekg(static_cast<std::streamoff>(data_start_ + t.begin));
    // Chunked so that reading a large tensor needs only a small staging buffer.
    constexpr std::size_t chunk_elements = std::size_t{1} << 18;
    std::vector<unsigned char> staging(std::min(count, chunk_elements) * size);
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min(chunk_elements, count - done);
      in.read(reinterpret_cast<char*>(staging.data()), static_cast<std::streamsize>(n * size));
      require(static_cast<std::size_t>(in.gcount()) == n * size,
              "truncated: tensor " + detail::quoted(t.name) + " in " + source_ +
                  " could not be read in full (the file changed since it was opened?)");
      detail::decode(t.dtype, staging.data(), n, out.data() + done);
      done += n;
    }
  }

  // The stream open() used stays open, so reads see the file that was validated even after a
  // writer renames a new checkpoint over the same path. Shared, with a lock, so copies of this
  // object and concurrent reads are safe.
  struct stream {
    std::mutex mutex;
    std::ifstream in;
  };

  std::string source_;
  std::shared_ptr<stream> stream_;
  std::span<const std::byte> bytes_;
  std::size_t file_size_ = 0;
  std::size_t data_start_ = 0;
  std::vector<tensor_info> tensors_;
  metadata_map metadata_;
};

// One tensor to write: the shape's element count in row-major order, from exactly one of `data`
// (written as F32), `bf16` (BF16) or `f16` (F16); the 16-bit ones are written as they are.
struct tensor_to_write {
  std::string name;
  tensor_shape shape;
  const float* data = nullptr;
  const bfloat16* bf16 = nullptr;
  const float16* f16 = nullptr;

  io::dtype dtype() const {
    return bf16 != nullptr ? io::dtype::bf16 : f16 != nullptr ? io::dtype::f16 : io::dtype::f32;
  }
};

namespace detail {

inline std::string write_error(const std::filesystem::path& path) {
  return "cannot write " + path.string() + ": " + std::generic_category().message(errno);
}

// A name no concurrent writer of the same target picks.
inline std::filesystem::path temporary_path(const std::filesystem::path& path) {
  std::random_device device;
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(stamp) + "." + std::to_string(device());
  return tmp;
}

}  // namespace detail

// Writes the tensors (F32, BF16 or F16) in the given order. The file appears complete or not at
// all: it is written to a temporary file in the same directory, flushed to disk, then renamed over
// `path`.
inline void write_safetensors(const std::filesystem::path& path,
                              std::span<const tensor_to_write> tensors,
                              const metadata_map& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> names;
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    const std::string tensor = "tensor " + detail::quoted(t.name);
    require(!t.name.empty(), "a tensor to write needs a non-empty name");
    require(t.name != "__metadata__", "'__metadata__' is reserved, not a tensor name");
    require(names.insert(t.name).second, "duplicate " + tensor + " to write");
    const int sources = (t.data != nullptr) + (t.bf16 != nullptr) + (t.f16 != nullptr);
    require(sources <= 1, tensor + " has more than one of data, bf16 and f16");
    const std::size_t size = dtype_size(t.dtype());
    const auto count = element_count(t.shape);
    require(
        count.has_value() && *count <= (std::numeric_limits<std::size_t>::max() - offset) / size,
        tensor + " has shape " + shape_string(t.shape) + " whose size overflows");
    require(sources == 1 || *count == 0, tensor + " has a null data pointer");
    header[t.name] = {{"dtype", dtype_name(t.dtype())},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + *count * size}}};
    offset += *count * size;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw zo::invalid_argument("cannot write " + path.string() + ": " + e.what());
  }
  // Padding keeps the data buffer 8-byte aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::filesystem::path tmp = detail::temporary_path(path);
  std::FILE* file = std::fopen(tmp.c_str(), "wb");
  require(file != nullptr, detail::write_error(tmp));
  bool ok = true;
  unsigned char length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  ok = ok && std::fwrite(length, 1, 8, file) == 8;
  ok = ok && std::fwrite(text.data(), 1, text.size(), file) == text.size();
  std::vector<unsigned char> buffer;
  for (const auto& t : tensors) {
    const std::size_t count = *element_count(t.shape);
    if (!ok || count == 0) continue;
    const std::size_t size = dtype_size(t.dtype());
    const void* data = t.data != nullptr   ? static_cast<const void*>(t.data)
                       : t.bf16 != nullptr ? static_cast<const void*>(t.bf16)
                                           : static_cast<const void*>(t.f16);
    if constexpr (std::endian::native == std::endian::little) {
      ok = std::fwrite(data, size, count, file) == count;
    } else {
      buffer.resize(size * count);
      for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t bits = t.data != nullptr   ? std::bit_cast<std::uint32_t>(t.data[i])
                                   : t.bf16 != nullptr ? t.bf16[i].bits
                                                       : t.f16[i].bits;
        for (std::size_t b = 0; b < size; ++b)
          buffer[size * i + b] = static_cast<unsigned char>(bits >> (8 * b));
      }
      ok = std::fwrite(buffer.data(), 1, buffer.size(), file) == buffer.size();
    }
  }
  ok = ok && std::fflush(file) == 0;
#ifdef ZO_SAFETENSORS_HAVE_FSYNC
  // Without it a power loss after the rename can leave an empty file under the final name.
  ok = ok && ::fsync(::fileno(file)) == 0;
#endif
  const std::string error = detail::write_error(tmp);
  ok = (std::fclose(file) == 0) && ok;
  std::error_code ec;
  if (!ok) {
    std::filesystem::remove(tmp, ec);
    throw zo::invalid_argument(error);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw zo::invalid_argument("cannot rename " + tmp.string() + " to " + path.string() + ": " +
                               ec.message());
  }
}

inline void write_safetensors(const std::filesystem::path& path,
                              std::initializer_list<tensor_to_write> tensors,
                              const metadata_map& metadata = {}) {
  write_safetensors(path, std::span<const tensor_to_write>(tensors.begin(), tensors.size()),
                    metadata);
}

// The tensor shape a block is saved with: [cols] for a 1 × n block (biases and LayerNorm
// parameters, which Hugging Face stores 1-D), [rows, cols] otherwise.
struct default_tensor_shape {
  template <class Block>
  tensor_shape operator()(const Block& block) const {
    if (block.rows() == 1) return {block.cols()};
    return {block.rows(), block.cols()};
  }
};

namespace detail {

// Only stores whose blocks live in host memory can be read or written with plain pointers.
template <class Store>
void check_host_float_store() {
  static_assert(element_type<typename Store::value_type>,
                "zo: save_store/load_store need a store of float, bfloat16 or float16 blocks");
  static_assert(
      std::is_same_v<typename Store::backend_type, backends::cpu>,
      "zo: save_store/load_store need a store whose blocks are host memory (cpu backend)");
}

}  // namespace detail

// Saves every block of the store under its name as an F32 tensor (BF16 or F16 for a store of
// bfloat16 or float16 blocks, bit for bit), in block order. shape_of
// maps a block to its tensor shape (e.g. to save an n × 1 view_store bias as [n]); the shape
// must hold exactly the block's elements.
template <class Store, class ShapeOf = default_tensor_shape>
void save_store(const std::filesystem::path& path, const Store& store,
                const metadata_map& metadata = {}, ShapeOf shape_of = {}) {
  detail::check_host_float_store<Store>();
  std::vector<tensor_to_write> tensors;
  tensors.reserve(store.size());
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto block = store.block(i);
    tensor_shape shape = shape_of(block);
    const auto count = element_count(shape);
    require(count.has_value() && *count == block.size(),
            "shape " + shape_string(shape) + " given for block " + detail::quoted(block.name()) +
                " does not hold its " + std::to_string(block.rows()) + "x" +
                std::to_string(block.cols()) + " elements");
    tensor_to_write tensor{.name = std::string(block.name()), .shape = std::move(shape)};
    using T = typename Store::value_type;
    if constexpr (std::is_same_v<T, bfloat16>) {
      tensor.bf16 = block.data();
    } else if constexpr (std::is_same_v<T, float16>) {
      tensor.f16 = block.data();
    } else {
      tensor.data = block.data();
    }
    tensors.push_back(std::move(tensor));
  }
  write_safetensors(path, tensors, metadata);
}

// Fills every block of the store from the tensor of the same name (converting F16, BF16 and
// F64 to float; for a store of bfloat16 or float16 blocks, a tensor of that dtype is copied bit
// for bit and any other rounded to the nearest value). Every block is checked for presence, shape
// and dtype before any is modified; the first missing or mismatched one is reported by name.
//
// Tensors the store has no block for are returned, not rejected: real checkpoints carry such
// tensors legitimately (OPT's lm_head.weight is tied to the token embedding, and a store often
// holds only the blocks being fine-tuned), so the caller decides whether they matter.
template <class Store>
std::vector<std::string> load_store(const safetensors_file& file, Store& store) {
  detail::check_host_float_store<Store>();
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto block = store.block(i);
    const tensor_info* t = file.find(block.name());
    require(t != nullptr, "no tensor " + detail::quoted(block.name()) + " in " + file.source() +
                              " for the store's block of that name");
    file.require_block_shape(*t, block.rows(), block.cols());
  }
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto block = store.block(i);
    file.read_block(block.name(), block.rows(), block.cols(),
                    std::span<typename Store::value_type>(block.data(), block.size()));
  }
  std::vector<std::string> ignored;
  for (const auto& t : file.tensors())
    if (!store.find(t.name).has_value()) ignored.push_back(t.name);
  return ignored;
}

template <class Store>
std::vector<std::string> load_store(const std::filesystem::path& path, Store& store) {
  return load_store(safetensors_file::open(path), store);
}

}  // namespace zo::io
