// SPDX-License-Identifier: Apache-2.0
// Per-block state of a step rule: momentum, Adam's moments, step counts. It lives on the
// store's backend in the store's element type, which a rule learns only at its first step, so
// the state is typed then; a state loaded before that waits on the host.
//
// A rule states its record, what it keeps for one block, and how the record's fields are
// encoded, in the order they are saved:
//
//   template <class Backend, class T>
//   struct record {
//     typename Backend::template buffer<T> m, v;
//     std::uint64_t steps = 0;
//     void encode(auto& out) const { out.u64(steps); out.buffers(m, v); }
//     void decode(auto& in) { steps = in.u64("a block's step count"); in.buffers(m, v); }
//   };
//
// and block_state<record> does the rest. It saves the records as
//   u32 element size (0 before the first step) · u64 block count · per block: u64 id · fields
// where u32 and u64 are little-endian (zo/core/binary.hpp), buffer(b) is u64 n · n bytes of
// elements, each little-endian, and buffers(b...) is u32 count · buffer(b) for each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "zo/core/binary.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/state_io.hpp"
#include "zo/core/typed_slot.hpp"

namespace zo::state_io {

// The host as a backend, for records loaded before a step names the element type: their
// buffers hold the elements' bytes as saved.
struct host_bytes {
  template <class T>
  using buffer = std::vector<T>;
  template <class T>
  static void to_host(const buffer<T>& from, std::vector<T>& to) {
    to = from;
  }
  template <class T>
  static void from_host(std::vector<T> from, buffer<T>& to) {
    to = std::move(from);
  }
};

// What a record's encode() writes to.
template <class Backend, class T>
class record_writer {
 public:
  void u32(std::uint32_t value) { out_.u32(value); }
  void u64(std::uint64_t value) { out_.u64(value); }
  void buffer(const typename Backend::template buffer<T>& from) {
    std::vector<T> values;
    Backend::to_host(from, values);
    out_.u64(values.size() * sizeof(T));
    out_.elements(std::span<const T>(values));
  }
  template <class... Buffers>
  void buffers(const Buffers&... from) {
    out_.u32(sizeof...(from));
    (buffer(from), ...);
  }
  std::vector<std::byte>& bytes() { return out_.bytes(); }

 private:
  binary::byte_writer out_;
};

// What a record's decode() reads from: a state being loaded, whose sizes are checked against
// the bytes left before anything is allocated (zo/core/state_io.hpp).
template <class Backend, class T>
class record_reader {
 public:
  record_reader(std::istream& in, const char* rule, std::uint32_t element_size)
      : in_(in), rule_(rule), element_size_(element_size) {}

  std::uint32_t u32(const char* what) { return read_value<std::uint32_t>(in_, what); }
  std::uint64_t u64(const char* what) { return read_value<std::uint64_t>(in_, what); }
  void buffer(typename Backend::template buffer<T>& to) {
    const auto size = u64("a buffer size");
    require(element_size_ > 0 && size % element_size_ == 0, [&] {
      return std::string(rule_) + " state has a buffer of " + std::to_string(size) +
             " bytes, not a whole number of elements";
    });
    const auto bytes = read_buffer(in_, size, "buffer values");
    Backend::from_host(binary::elements_from<T>(std::as_bytes(std::span(bytes))), to);
  }
  template <class... Buffers>
  void buffers(Buffers&... to) {
    const auto count = u32("a block's buffer count");
    require(count == sizeof...(to), [&] {
      return std::string(rule_) + " state has a block with " + std::to_string(count) +
             " buffers; the rule keeps " + std::to_string(sizeof...(to));
    });
    (buffer(to), ...);
  }

 private:
  std::istream& in_;
  const char* rule_;
  std::uint32_t element_size_;
};

template <template <class Backend, class T> class Record>
class block_state {
 public:
  // `rule` names the rule in error messages.
  explicit block_state(const char* rule) : rule_(rule) {}

  // The records on one backend, for one element type.
  template <class Backend, class T>
  struct typed_blocks {
    std::map<std::size_t, Record<Backend, T>> blocks;
    // Working memory a step shares across blocks (LOZO-M's factors): typed like the records, so
    // it lives here, but never saved.
    typename Backend::template buffer<T> scratch;

    T* transient(std::size_t count) {
      if (scratch.size() < count) scratch.resize(count);
      return Backend::data(scratch);
    }
  };

  // The records on the store a step runs on. The first step creates them, from the loaded
  // state if there is one.
  template <class Backend, class T>
  typed_blocks<Backend, T>& typed() {
    using typed_type = typed_blocks<Backend, T>;
    if (auto* state = typed_.find<typed_type>()) return *state;
    auto& state = typed_.get_or<typed_type>([&] { return adopt_loaded<Backend, T>(); });
    save_typed_ = [](const typed_slot& slot, std::ostream& out) {
      write_section<Backend, T>(out, sizeof(T), slot.find<typed_type>()->blocks);
    };
    return state;
  }

  template <class Backend, class T>
  Record<Backend, T>& at(std::size_t block_id) {
    return typed<Backend, T>().blocks[block_id];
  }

  void save(std::ostream& out) const {
    if (save_typed_ != nullptr) {
      save_typed_(typed_, out);
    } else {
      write_section<host_bytes, std::byte>(out, loaded_element_size_, loaded_);
    }
  }

  // The loaded records take effect at the next step; until then they are saved as loaded.
  void load(std::istream& in) {
    const auto element_size = read_value<std::uint32_t>(in, "the element size");
    require(element_size == 0 || element_size == 4 || element_size == 8, [&] {
      return std::string(rule_) + " state has " + std::to_string(element_size) +
             "-byte elements; 4 and 8 are known (0 when empty)";
    });
    const auto count = read_value<std::uint64_t>(in, "the block count");
    require_fits(in, count, smallest_block(), (std::string(rule_) + " blocks").c_str());
    std::vector<std::pair<std::uint64_t, loaded_record>> loaded;
    for (std::uint64_t k = 0; k < count; ++k) {
      const auto id = read_value<std::uint64_t>(in, "a block id");
      record_reader<host_bytes, std::byte> fields(in, rule_, element_size);
      loaded.emplace_back(id, loaded_record{});
      loaded.back().second.decode(fields);
    }
    loaded_element_size_ = element_size;
    loaded_ = std::move(loaded);
    typed_.reset();
    save_typed_ = nullptr;
  }

 private:
  using loaded_record = Record<host_bytes, std::byte>;

  // Each block takes at least its id and an empty record's fields, which bounds the block
  // count by the bytes left.
  static std::uint64_t smallest_block() {
    record_writer<host_bytes, std::byte> empty;
    empty.u64(0);
    loaded_record{}.encode(empty);
    return empty.bytes().size();
  }

  // Saving encodes a block at a time, so only one block's values are on the host at once.
  template <class Backend, class T, class Blocks>
  static void write_section(std::ostream& out, std::uint32_t element_size, const Blocks& blocks) {
    binary::byte_writer head;
    head.u32(element_size);
    head.u64(blocks.size());
    write_bytes(out, head.bytes());
    for (const auto& [id, record] : blocks) {
      record_writer<Backend, T> block;
      block.u64(id);
      record.encode(block);
      write_bytes(out, block.bytes());
    }
  }

  // A loaded record reaches the backend the way it was saved: encoded, then decoded with the
  // element type the step revealed.
  template <class Backend, class T>
  typed_blocks<Backend, T> adopt_loaded() {
    typed_blocks<Backend, T> state;
    require(loaded_.empty() || loaded_element_size_ == sizeof(T), [&] {
      return std::string(rule_) + ": the loaded state has " + std::to_string(loaded_element_size_) +
             "-byte elements, the store " + std::to_string(sizeof(T)) + "-byte ones";
    });
    for (const auto& [id, host] : loaded_) {
      record_writer<host_bytes, std::byte> saved;
      host.encode(saved);
      auto& bytes = saved.bytes();
      state_payload payload(std::span(reinterpret_cast<char*>(bytes.data()), bytes.size()));
      std::istream in(&payload);
      record_reader<Backend, T> fields(in, rule_, sizeof(T));
      state.blocks[static_cast<std::size_t>(id)].decode(fields);
    }
    loaded_.clear();
    loaded_element_size_ = 0;
    return state;
  }

  const char* rule_;
  typed_slot typed_;
  // Saves typed_, whose type only the step that created it knew.
  void (*save_typed_)(const typed_slot&, std::ostream&) = nullptr;
  std::uint32_t loaded_element_size_ = 0;
  std::vector<std::pair<std::uint64_t, loaded_record>> loaded_;
};

}  // namespace zo::state_io
