// SPDX-License-Identifier: Apache-2.0
// Trajectory logs: a zeroth-order run is fixed by a few numbers per step (the seed, the step, the
// projected gradients, the learning rate and which blocks were trained), so a fine-tune can be
// stored in kilobytes and rebuilt from its base weights by replaying them (zo::io::replay).
//
// File format (all integers little-endian, doubles as their IEEE-754 bits):
//   header:  "zo-traj\n" · u32 version (3) · u32 n · n bytes of header payload · u32 CRC-32
//            payload: u64 seed · u32 block count · u32 m · m bytes of description (free text,
//            e.g. the optimizer and its hyperparameters) · u8 1 if a base fingerprint follows,
//            else 0 · u64 base fingerprint (zo::io::fingerprint of the starting weights, or 0) ·
//            u8 the directions' generator (zo::generator)
//   record:  u32 n · u32 ~n · n bytes of record payload · u32 CRC-32 of the payload
//            payload: u64 step · u64 seed · f64 learning rate · u8 status (0 completed,
//            1 skipped for a non-finite loss, 2 update refused: zo::step_status; a refused
//            step's gradients are recorded and its replay refuses it again) ·
//            u32 evaluations · u32 q · q × f64 projected gradients (and after them the
//            estimator's second differences, when it measures them: HiZOO's) ·
//            u32 b · b × u8 block roles (zo::block_role)
//   end:     framed as a record; payload (16 bytes, shorter than any step record's 37):
//            "zo-end\n" and a zero byte · u64 number of step records in the log
// Version 1 (zo 0.1.0) has neither the fingerprint nor the end record, version 2 no generator:
// both are still read, as runs of philox4x32-10, the only generator there was.
// A record is written with one write() call and the file is fsync'ed every `sync_every`
// records, so a crash leaves at most a torn last record. Reading stops at a torn record and
// reports where (the run can be replayed and resumed from there); the complemented length and
// the checksum make a damaged record an error rather than something silently skipped. Only a
// log that ends with the end record (trajectory_writer::finish) is known to hold the whole run.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "zo/core/binary.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/reports.hpp"
#include "zo/core/roles.hpp"
#include "zo/core/step_engine.hpp"

namespace zo::io {

namespace detail {

// The framing every binary file of zo's shares (zo/core/binary.hpp).
using zo::binary::byte_reader;
using zo::binary::byte_writer;
using zo::binary::crc32;
using zo::binary::u32_at;
using zo::binary::u64_at;

inline constexpr char trajectory_magic[8] = {'z', 'o', '-', 't', 'r', 'a', 'j', '\n'};
inline constexpr char block_values_magic[8] = {'z', 'o', '-', 'b', 'v', 'a', 'l', '\n'};
inline constexpr char end_record_marker[8] = {'z', 'o', '-', 'e', 'n', 'd', '\n', '\0'};
inline constexpr std::uint32_t trajectory_version = 3;
inline constexpr std::uint32_t block_values_version = 1;

// A record on disk: u32 n · u32 ~n · n bytes of payload · u32 CRC-32 of the payload.
inline std::vector<std::byte> frame(std::vector<std::byte>& payload) {
  const auto n = static_cast<std::uint32_t>(payload.size());
  byte_writer out;
  out.u32(n);
  out.u32(~n);
  out.raw(payload);
  out.u32(crc32(payload));
  return std::move(out.bytes());
}

// Where reading the records of a file stopped.
struct scan_end {
  bool complete = true;
  std::uint64_t stopped_at = 0;
  std::string reason;
};

// Calls on_record(payload, what) for each framed record from byte `at` on. A record cut off by
// the end of the input ends the scan (complete = false); a damaged one is an error.
template <class OnRecord>
scan_end scan_records(std::span<const std::byte> bytes, std::size_t at, const std::string& source,
                      OnRecord&& on_record) {
  scan_end end;
  for (std::size_t index = 0; at < bytes.size(); ++index) {
    const std::string what =
        source + ": record " + std::to_string(index) + " at byte " + std::to_string(at);
    const auto torn = [&](std::uint64_t needed) {
      end.complete = false;
      end.stopped_at = at;
      end.reason = what + " is cut off: it needs " + std::to_string(needed) +
                   " bytes, the file has " + std::to_string(bytes.size() - at);
    };
    if (bytes.size() - at < 8) {
      torn(8);
      break;
    }
    const std::uint32_t n = u32_at(bytes, at), check = u32_at(bytes, at + 4);
    zo::require(check == ~n, what + ": length field damaged (" + std::to_string(n) + " and ~" +
                                 std::to_string(~check) + " disagree)");
    const std::uint64_t total = 8 + std::uint64_t{n} + 4;
    if (bytes.size() - at < total) {
      torn(total);
      break;
    }
    const auto payload = bytes.subspan(at + 8, n);
    zo::require(crc32(payload) == u32_at(bytes, at + 8 + n), what + ": checksum mismatch");
    on_record(payload, what);
    at += static_cast<std::size_t>(total);
  }
  return end;
}

// An append-only file written whole records at a time and fsync'ed every sync_every records.
class append_file {
 public:
  append_file(const std::filesystem::path& path, int flags, std::size_t sync_every)
      : path_(path), sync_every_(sync_every) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    zo::require(fd_ >= 0, "cannot open " + path.string() + " for writing: " + std::strerror(errno));
  }
  append_file(append_file&& other) noexcept
      : path_(std::move(other.path_)),
        sync_every_(other.sync_every_),
        unsynced_(other.unsynced_),
        fd_(other.fd_) {
    other.fd_ = -1;
  }
  append_file& operator=(append_file&&) = delete;
  append_file(const append_file&) = delete;
  append_file& operator=(const append_file&) = delete;
  ~append_file() {
    if (fd_ >= 0) {
      ::fsync(fd_);
      ::close(fd_);
    }
  }

  // One write() per record where the system allows, so a record is never interleaved.
  void write_all(const std::vector<std::byte>& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      zo::require(n > 0, "cannot write " + path_.string() + ": " + std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
  }
  void append(const std::vector<std::byte>& record) {
    write_all(record);
    if (sync_every_ > 0 && ++unsynced_ >= sync_every_) sync();
  }
  void sync() {
    zo::require(::fsync(fd_) == 0, "cannot sync " + path_.string() + ": " + std::strerror(errno));
    unsynced_ = 0;
  }
  // Drops everything from byte `size` on and continues writing there.
  void cut_at(std::uint64_t size) {
    zo::require(::ftruncate(fd_, static_cast<off_t>(size)) == 0 &&
                    ::lseek(fd_, static_cast<off_t>(size), SEEK_SET) >= 0,
                "cannot cut " + path_.string() + " at byte " + std::to_string(size) + ": " +
                    std::strerror(errno));
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::size_t sync_every_ = 1;
  std::size_t unsynced_ = 0;
  int fd_ = -1;
};

inline std::vector<std::byte> read_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  zo::require(file.good(), "cannot open " + path.string());
  std::vector<char> chars((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

}  // namespace detail

struct trajectory_header {
  trajectory_header() = default;
  trajectory_header(std::uint64_t seed_, std::uint32_t block_count_, std::string description_,
                    std::optional<std::uint64_t> base_fingerprint_ = std::nullopt,
                    zo::generator generator_ = default_generator)
      : seed(seed_),
        block_count(block_count_),
        description(std::move(description_)),
        base_fingerprint(base_fingerprint_),
        generator(generator_) {}

  std::uint64_t seed = 0;
  std::uint32_t block_count = 0;
  std::string description;
  // zo::io::fingerprint of the parameters the logged run started from; replay checks it.
  // Absent in a version-1 log, or when the writer did not give one.
  std::optional<std::uint64_t> base_fingerprint;
  // The run's zo_options::generator; replay checks it.
  zo::generator generator = default_generator;
};

// A 64-bit FNV-1a hash of a host store's parameters, which a log's header records so that
// replay refuses other base weights: over the block count, then for each block in order its
// rows, columns and element size (each as u64 little-endian) and its values' bytes (the host's
// byte order, little-endian). Any store whose blocks' data() the CPU can read.
template <class Store>
std::uint64_t fingerprint(const Store& store) {
  using T = typename Store::value_type;
  static_assert(std::endian::native == std::endian::little,
                "fingerprints hash the values' bytes in little-endian order");
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto add = [&h](std::span<const std::byte> bytes) {
    for (const std::byte b : bytes)
      h = (h ^ static_cast<std::uint64_t>(b)) * 0x100000001b3ull;
  };
  const auto add_u64 = [&](std::uint64_t v) {
    binary::byte_writer w;
    w.u64(v);
    add(w.bytes());
  };
  add_u64(store.size());
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    add_u64(b.rows());
    add_u64(b.cols());
    add_u64(sizeof(T));
    add(std::as_bytes(std::span<const T>(b.data(), b.size())));
  }
  return h;
}

// The header of a log of a run on `store` (its block count and fingerprint) by an optimizer with
// these options (its seed and generator).
template <class Store>
trajectory_header run_header(const Store& store, const zo_options& options,
                             std::string description) {
  return {options.seed, static_cast<std::uint32_t>(store.size()), std::move(description),
          fingerprint(store), options.generator};
}

struct trajectory_record {
  std::uint64_t step = 0;
  std::uint64_t seed = 0;
  double learning_rate = 0;
  step_status status = step_status::completed;
  std::uint32_t evaluations = 0;
  std::vector<double> projected_gradients;
  std::vector<block_role> roles;

  bool skipped() const { return status != step_status::completed; }
};

// A log as read back: the records up to the last complete one.
// - complete is false when the file ends inside a record (a crash while appending); stopped_at
//   is then the offset of that torn record, and reason says how far it got.
// - finished is true only when the log ends with the end record a finished run's writer wrote
//   (trajectory_writer::finish). A log without it is not known to hold the whole run, even when
//   complete: a crash or kill between two records, a copy cut at a record boundary, a run still
//   going, or a version-1 log (which has no end record) all read that way.
// - records_end is the offset after the last step record (where the end record or a torn
//   record starts, else the file's size); version the format version the file was written in.
struct trajectory {
  trajectory_header header;
  std::vector<trajectory_record> records;
  bool complete = true;
  std::uint64_t stopped_at = 0;
  std::string reason;
  bool finished = false;
  std::uint64_t records_end = 0;
  std::uint32_t version = detail::trajectory_version;
};

// A header in the given format version (1 cannot hold a fingerprint, 1 and 2 only the first
// generator).
inline std::vector<std::byte> encode_header(const trajectory_header& header,
                                            std::uint32_t version = detail::trajectory_version) {
  zo::require(version >= 1 && version <= detail::trajectory_version,
              "trajectory format version " + std::to_string(version) + " is not known");
  zo::require(version >= 2 || !header.base_fingerprint,
              "a version-1 trajectory header cannot hold a base fingerprint");
  zo::require(version >= 3 || header.generator == generator::philox4x32_10, [&] {
    return "a version-" + std::to_string(version) + " trajectory header cannot name generator " +
           generator_name(header.generator) + " (only philox4x32-10)";
  });
  binary::byte_writer payload;
  payload.u64(header.seed);
  payload.u32(header.block_count);
  payload.u32(static_cast<std::uint32_t>(header.description.size()));
  payload.raw(std::as_bytes(std::span(header.description)));
  if (version >= 2) {
    payload.u8(header.base_fingerprint ? 1 : 0);
    payload.u64(header.base_fingerprint.value_or(0));
  }
  if (version >= 3) payload.u8(static_cast<std::uint8_t>(header.generator));
  binary::byte_writer out;
  out.raw(std::as_bytes(std::span(detail::trajectory_magic)));
  out.u32(version);
  out.u32(static_cast<std::uint32_t>(payload.bytes().size()));
  out.raw(payload.bytes());
  out.u32(binary::crc32(payload.bytes()));
  return std::move(out.bytes());
}

inline std::vector<std::byte> encode_record(const trajectory_record& r) {
  binary::byte_writer payload;
  payload.u64(r.step);
  payload.u64(r.seed);
  payload.f64(r.learning_rate);
  payload.u8(static_cast<std::uint8_t>(r.status));
  payload.u32(r.evaluations);
  payload.u32(static_cast<std::uint32_t>(r.projected_gradients.size()));
  for (const double g : r.projected_gradients)
    payload.f64(g);
  payload.u32(static_cast<std::uint32_t>(r.roles.size()));
  for (const block_role role : r.roles)
    payload.u8(static_cast<std::uint8_t>(role));
  return detail::frame(payload.bytes());
}

// The end record of a finished log of `records` step records (version 2 on).
inline std::vector<std::byte> encode_end(std::uint64_t records) {
  binary::byte_writer payload;
  payload.raw(std::as_bytes(std::span(detail::end_record_marker)));
  payload.u64(records);
  return detail::frame(payload.bytes());
}

namespace detail {

// One step record's payload.
inline trajectory_record decode_record(std::span<const std::byte> payload,
                                       const std::string& what) {
  binary::byte_reader in(payload, what);
  trajectory_record r;
  r.step = in.u64();
  r.seed = in.u64();
  r.learning_rate = in.f64();
  const std::uint8_t status = in.u8();
  require(status <= 2, what + ": unknown status " + std::to_string(status));
  r.status = static_cast<step_status>(status);
  r.evaluations = in.u32();
  const std::uint32_t q = in.u32();
  require(q <= in.remaining() / 8,
          what + ": " + std::to_string(q) + " projected gradients do not fit in the record");
  r.projected_gradients.resize(q);
  for (auto& g : r.projected_gradients)
    g = in.f64();
  const std::uint32_t roles = in.u32();
  require(roles <= in.remaining(),
          what + ": " + std::to_string(roles) + " roles do not fit in the record");
  r.roles.resize(roles);
  for (auto& role : r.roles) {
    const std::uint8_t value = in.u8();
    require(value <= static_cast<std::uint8_t>(block_role::mixed),
            what + ": unknown block role " + std::to_string(value));
    role = static_cast<block_role>(value);
  }
  in.finish();
  return r;
}

}  // namespace detail

// Parses a log. Throws zo::invalid_argument for a bad or truncated header and for a damaged
// record (a checksum or length mismatch, or fields that do not fit), naming the record and its
// byte offset; a record cut off by the end of the input ends the log instead (see trajectory).
inline trajectory read_trajectory(std::span<const std::byte> bytes,
                                  const std::string& source = "<memory>") {
  trajectory log;
  const auto u32_at = [&](std::size_t at) { return binary::u32_at(bytes, at); };
  constexpr std::size_t fixed = sizeof(detail::trajectory_magic) + 8;
  require(bytes.size() >= fixed, "trajectory " + source + ": truncated header (" +
                                     std::to_string(bytes.size()) + " bytes)");
  require(std::memcmp(bytes.data(), detail::trajectory_magic, sizeof detail::trajectory_magic) == 0,
          "trajectory " + source + " does not start with the zo trajectory magic");
  const std::uint32_t version = u32_at(8);
  require(version >= 1 && version <= detail::trajectory_version,
          "trajectory " + source + " has version " + std::to_string(version) +
              ", this build reads versions 1 to " + std::to_string(detail::trajectory_version));
  log.version = version;
  const std::uint64_t header_size = u32_at(12);
  require(bytes.size() - fixed >= header_size + 4,
          "trajectory " + source + ": truncated header (needs " +
              std::to_string(fixed + header_size + 4) + " bytes, has " +
              std::to_string(bytes.size()) + ")");
  const auto header_payload = bytes.subspan(fixed, header_size);
  require(binary::crc32(header_payload) == u32_at(fixed + header_size),
          "trajectory " + source + ": header checksum mismatch");
  binary::byte_reader header(header_payload, "trajectory " + source + " header");
  log.header.seed = header.u64();
  log.header.block_count = header.u32();
  const std::uint32_t description_size = header.u32();
  const auto description = header.raw(description_size);
  log.header.description.assign(reinterpret_cast<const char*>(description.data()),
                                description.size());
  if (version >= 2) {
    const std::uint8_t has_fingerprint = header.u8();
    const std::uint64_t base = header.u64();
    require(has_fingerprint == 1 || (has_fingerprint == 0 && base == 0),
            "trajectory " + source + " header: fingerprint flag " +
                std::to_string(has_fingerprint) + " with fingerprint " + std::to_string(base));
    if (has_fingerprint == 1) log.header.base_fingerprint = base;
  }
  log.header.generator = generator::philox4x32_10;
  if (version >= 3) {
    const std::uint8_t code = header.u8();
    require(known_generator(code),
            "trajectory " + source + " header: unknown generator " + std::to_string(code));
    log.header.generator = static_cast<zo::generator>(code);
  }
  header.finish();

  log.records_end = fixed + header_size + 4;
  const auto end = detail::scan_records(
      bytes, fixed + header_size + 4, "trajectory " + source,
      [&](std::span<const std::byte> payload, const std::string& what) {
        require(!log.finished, what + " follows the end record");
        const auto at = static_cast<std::uint64_t>(payload.data() - bytes.data()) - 8;
        if (version >= 2 && payload.size() == 16 &&
            std::memcmp(payload.data(), detail::end_record_marker, 8) == 0) {
          const std::uint64_t count = binary::u64_at(payload, 8);
          require(count == log.records.size(),
                  what + ": the end record counts " + std::to_string(count) +
                      " step records, the log holds " + std::to_string(log.records.size()));
          log.finished = true;
          return;
        }
        trajectory_record r = detail::decode_record(payload, what);
        log.records.push_back(std::move(r));
        log.records_end = at + 12 + payload.size();
      });
  require(!log.finished || end.complete,
          "trajectory " + source + ": " + end.reason + ", after the end record");
  log.complete = end.complete;
  log.stopped_at = end.stopped_at;
  log.reason = end.reason;
  return log;
}

inline trajectory read_trajectory(const std::filesystem::path& path) {
  return read_trajectory(detail::read_file(path), path.string());
}

// Appends records to a log file. As an optimizer callback (after_step) it logs every step.
class trajectory_writer {
 public:
  // Creates the file (replacing one there) with this header. The file is fsync'ed every
  // sync_every records (0: only by sync() and on destruction).
  trajectory_writer(const std::filesystem::path& path, const trajectory_header& header,
                    std::size_t sync_every = 1)
      : file_(path, O_WRONLY | O_CREAT | O_TRUNC, sync_every) {
    file_.write_all(encode_header(header));
    file_.sync();
  }

  // Continues a log after a crash or a resumed run: the file is read, a torn last record and
  // the end record of a finished log are cut off, and records are appended after the last step
  // record (call finish() again when the continued run ends). `log` receives what was there. A
  // version-1 log is first rewritten in the current format (without a base fingerprint, which
  // it never had), through a temporary file renamed over it.
  static trajectory_writer append_to(const std::filesystem::path& path, trajectory& log,
                                     std::size_t sync_every = 1) {
    log = read_trajectory(path);
    if (log.version < detail::trajectory_version) {
      auto bytes = encode_header(log.header);
      for (const auto& r : log.records) {
        const auto record = encode_record(r);
        bytes.insert(bytes.end(), record.begin(), record.end());
      }
      const std::filesystem::path temporary =
          path.string() + ".zo-upgrade." + std::to_string(::getpid());
      try {
        detail::append_file upgraded(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0);
        upgraded.write_all(bytes);
        upgraded.sync();
      } catch (...) {
        std::error_code ignored;
        std::filesystem::remove(temporary, ignored);
        throw;
      }
      std::filesystem::rename(temporary, path);
      trajectory_writer w(detail::append_file(path, O_WRONLY | O_APPEND, sync_every),
                          log.records.size());
      return w;
    }
    trajectory_writer w(detail::append_file(path, O_WRONLY, sync_every), log.records.size());
    w.file_.cut_at(log.records_end);
    return w;
  }

  void append(const trajectory_record& record) {
    zo::require(!finished_, "cannot append to " + file_.path().string() +
                                ": the log was finished (its end record is written)");
    file_.append(encode_record(record));
    ++records_;
  }
  void sync() { file_.sync(); }

  // Ends the log of a finished run: appends the end record (the number of step records) and
  // syncs. A log without it reads as not finished (trajectory::finished): a run that crashed
  // or was killed between two records, or a copy cut at a record boundary, is told apart from
  // a finished one. Nothing may be appended afterwards. The destructor never writes it.
  void finish() {
    zo::require(!finished_, file_.path().string() + " is already finished");
    file_.write_all(encode_end(records_));
    file_.sync();
    finished_ = true;
  }

  // Optimizer callback: logs the step just taken.
  void after_step(const step_report& report) {
    trajectory_record r;
    r.step = report.step;
    r.seed = report.seed;
    r.learning_rate = report.learning_rate;
    r.status = report.status;
    r.evaluations = static_cast<std::uint32_t>(report.evaluations);
    r.projected_gradients.assign(report.projected_gradients.begin(),
                                 report.projected_gradients.end());
    r.roles.assign(report.roles.begin(), report.roles.end());
    append(r);
  }

 private:
  trajectory_writer(detail::append_file file, std::uint64_t records)
      : file_(std::move(file)), records_(records) {}
  detail::append_file file_;
  std::uint64_t records_ = 0;
  bool finished_ = false;
};

// The values of a hybrid's first-order blocks after each step: those blocks follow gradients,
// which cannot be rebuilt from the log's scalars, so a LoHO run is replayed from its log plus
// this file beside it. Format: "zo-bval\n" · u32 version (1), then framed records as in the
// trajectory log, each: u64 step · u32 k · k × (u32 block index · u32 element size · u64 n ·
// n elements, little-endian). Unlike the log, it grows with the first-order parameters every step.
struct block_values_record {
  std::uint64_t step = 0;
  struct block {
    std::uint32_t index = 0;
    std::uint32_t element_size = 0;
    std::vector<std::byte> values;
  };
  std::vector<block> blocks;
};

struct block_values_log {
  std::vector<block_values_record> records;
  bool complete = true;
  std::uint64_t stopped_at = 0;
  std::string reason;
};

inline block_values_log read_block_values(std::span<const std::byte> bytes,
                                          const std::string& source = "<memory>") {
  require(bytes.size() >= 12 && std::memcmp(bytes.data(), detail::block_values_magic, 8) == 0,
          "block values file " + source + " does not start with the zo block-values magic");
  require(
      binary::u32_at(bytes, 8) == detail::block_values_version,
      "block values file " + source + " has version " + std::to_string(binary::u32_at(bytes, 8)));
  block_values_log log;
  const auto end = detail::scan_records(
      bytes, 12, "block values " + source,
      [&](std::span<const std::byte> payload, const std::string& what) {
        binary::byte_reader in(payload, what);
        block_values_record r;
        r.step = in.u64();
        const std::uint32_t count = in.u32();
        for (std::uint32_t k = 0; k < count; ++k) {
          block_values_record::block b;
          b.index = in.u32();
          b.element_size = in.u32();
          require(b.element_size == 4 || b.element_size == 8,
                  what + ": element size " + std::to_string(b.element_size));
          const std::uint64_t n = in.u64();
          require(n <= in.remaining() / b.element_size,
                  what + ": " + std::to_string(n) + " values do not fit in the record");
          const auto values = in.raw(static_cast<std::size_t>(n * b.element_size));
          b.values.assign(values.begin(), values.end());
          r.blocks.push_back(std::move(b));
        }
        in.finish();
        log.records.push_back(std::move(r));
      });
  log.complete = end.complete;
  log.stopped_at = end.stopped_at;
  log.reason = end.reason;
  return log;
}

inline block_values_log read_block_values(const std::filesystem::path& path) {
  return read_block_values(detail::read_file(path), path.string());
}

class block_values_writer {
 public:
  explicit block_values_writer(const std::filesystem::path& path, std::size_t sync_every = 1)
      : file_(path, O_WRONLY | O_CREAT | O_TRUNC, sync_every) {
    binary::byte_writer header;
    header.raw(std::as_bytes(std::span(detail::block_values_magic)));
    header.u32(detail::block_values_version);
    file_.write_all(header.bytes());
    file_.sync();
  }

  // Records the current values of the given blocks (host memory) after `step`.
  template <class Store>
  void append(std::uint64_t step, const Store& store, std::span<const std::size_t> blocks) {
    using T = typename Store::value_type;
    static_assert(std::endian::native == std::endian::little,
                  "block values are written in the host's byte order, little-endian");
    binary::byte_writer payload;
    payload.u64(step);
    payload.u32(static_cast<std::uint32_t>(blocks.size()));
    for (const std::size_t i : blocks) {
      const auto b = store.block(i);
      payload.u32(static_cast<std::uint32_t>(i));
      payload.u32(sizeof(T));
      payload.u64(b.size());
      payload.raw(std::as_bytes(std::span<const T>(b.data(), b.size())));
    }
    file_.append(detail::frame(payload.bytes()));
  }
  void sync() { file_.sync(); }

 private:
  detail::append_file file_;
};

namespace detail {

// A log replays only on a store of its block count with an optimizer of its seed and generator.
inline void require_same_run(const trajectory& log, std::size_t blocks, const zo_options& options) {
  zo::require(log.header.block_count == blocks,
              "the trajectory was recorded on " + std::to_string(log.header.block_count) +
                  " blocks, the store has " + std::to_string(blocks));
  zo::require(log.header.seed == options.seed,
              "the trajectory was recorded with seed " + std::to_string(log.header.seed) +
                  ", the optimizer has seed " + std::to_string(options.seed));
  zo::require(log.header.generator == options.generator, [&] {
    return std::string("the trajectory was recorded with generator ") +
           generator_name(log.header.generator) + ", the optimizer uses " +
           generator_name(options.generator) +
           ": build it with zo_options::generator set to the log's (trajectory_header::generator)";
  });
}

// A log whose header has a base fingerprint replays only on those weights. The store holds the
// base when no record is skipped (an optimizer resumed past the log's first step holds later
// weights, which the fingerprint cannot check).
template <class Store>
void require_same_base(const trajectory& log, const Store& store, std::uint64_t first_step) {
  if (!log.header.base_fingerprint) return;
  if (!log.records.empty() && first_step > log.records.front().step) return;
  const std::uint64_t found = fingerprint(store);
  if (found == *log.header.base_fingerprint) return;
  char text[240];
  std::snprintf(text, sizeof text,
                "the trajectory was recorded from base weights with fingerprint %016llx, the "
                "store's weights have fingerprint %016llx: replay on the weights the run started "
                "from",
                static_cast<unsigned long long>(*log.header.base_fingerprint),
                static_cast<unsigned long long>(found));
  throw zo::invalid_argument(text);
}

// Each record carries the rate its step used; a replay with another schedule (a constant rate
// for a cosine run, say) would rebuild other weights. So before anything is replayed, the first
// record from `first_step` on whose rate is not the step rule's, bit for bit, is refused.
template <class StepRule>
void require_logged_rates(const trajectory& log, std::uint64_t first_step, const StepRule& rule) {
  for (const auto& r : log.records) {
    if (r.step < first_step) continue;
    const double rate = rule.learning_rate(r.step);
    if (r.learning_rate == rate) continue;
    char text[200];
    std::snprintf(text, sizeof text,
                  "step %llu was logged with learning rate %.17g, the replaying step rule gives "
                  "%.17g: replay with the schedule the run used",
                  static_cast<unsigned long long>(r.step), r.learning_rate, rate);
    throw zo::invalid_argument(text);
  }
}

// Checks a record against the optimizer before it is replayed.
template <class ZoPart>
void require_replayable(const ZoPart& zo_part, const trajectory_record& r) {
  zo::require(r.step == zo_part.step_count(), [&] {
    return "the log's step " + std::to_string(r.step) + " is not the optimizer's next step " +
           std::to_string(zo_part.step_count());
  });
  const std::size_t measured = measured_values(zo_part.estimator());
  zo::require(
      r.status == step_status::skipped_nonfinite_loss || r.projected_gradients.size() == measured,
      [&] {
        return "step " + std::to_string(r.step) + " logged " +
               std::to_string(r.projected_gradients.size()) +
               " measured values; the estimator makes " + std::to_string(measured);
      });
}

// A logged step, through the step engine's phases as the live step went through them: the probe
// moves as the estimator asks and reports the logged outcome (finite, or non-finite at the
// logged evaluation of a skipped step), and the update uses the logged projected gradients, so
// the passes and the update are the live ones bit for bit. `first_order_work`: the live step
// returned to the base point for a hybrid's first-order work before its update.
template <class ZoPart, class Store>
void replay_phases(ZoPart& zo_part, Store& store, const trajectory_record& r,
                   std::span<const block_role> roles, const element_mask& mask, bool fuse,
                   bool first_order_work) {
  const auto next = zo_part.begin_step(store, roles, mask, fuse);
  const bool skipped = r.status == step_status::skipped_nonfinite_loss;
  std::size_t calls = 0;
  const auto logged_outcome = [&]() -> double {
    return skipped && ++calls == r.evaluations ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  };
  try {
    const measurement m = zo_part.measure_step(store, logged_outcome);
    if (!skipped) std::ranges::copy(r.projected_gradients, zo_part.projected_gradients().begin());
    if (first_order_work && !m.nonfinite) zo_part.return_to_base(store);
    zo_part.commit_step(store, m, next);
  } catch (...) {
    zo_part.abandon_step(store);
    throw;
  }
}

}  // namespace detail

// Replays a log's records on the parameters the logged run started from (or, with a resumed
// optimizer, from where it stopped): optimizer must be built as the live one was (policies,
// hyperparameters, schedule, options); a record whose learning rate differs from the step
// rule's is an error, raised before any step is replayed. Records before the optimizer's step
// are skipped; the rest must follow on from it. Returns the number of steps replayed.
template <class Optimizer, class Store>
std::size_t replay(Optimizer& optimizer, Store& store, const trajectory& log) {
  detail::require_same_run(log, store.size(), optimizer.options());
  detail::require_same_base(log, store, optimizer.step_count());
  detail::require_logged_rates(log, optimizer.step_count(), optimizer.step_rule());
  std::size_t replayed = 0;
  std::vector<block_role> roles;
  for (const auto& r : log.records) {
    if (r.step < optimizer.step_count()) continue;
    zo::require(r.seed == log.header.seed,
                "record of step " + std::to_string(r.step) + " has seed " + std::to_string(r.seed) +
                    ", the log's header " + std::to_string(log.header.seed));
    detail::require_replayable(optimizer, r);
    optimizer.select_roles(store, r.step, roles);
    zo::require(r.roles.empty() || std::ranges::equal(r.roles, roles), [&] {
      return "the logged roles of step " + std::to_string(r.step) +
             " differ from the selector's: the log was recorded with another selector";
    });
    detail::replay_phases(optimizer, store, r, roles, element_mask{},
                          optimizer.options().fused_steps, false);
    ++replayed;
  }
  optimizer.remove_pending_perturbation(store);
  return replayed;
}

// Replays a hybrid (LoHO) run: the log's zeroth-order steps, and after each completed step the
// first-order blocks' values from the block values file written beside the log. The records'
// rates are checked against the zeroth-order step rule's, as above.
template <class Hybrid, class Store>
std::size_t replay(Hybrid& hybrid, Store& store, const trajectory& log,
                   const block_values_log& values) {
  using T = typename Store::value_type;
  detail::require_same_run(log, store.size(), hybrid.zeroth_order_part().options());
  detail::require_same_base(log, store, hybrid.step_count());
  detail::require_logged_rates(log, hybrid.step_count(), hybrid.zeroth_order_part().step_rule());
  std::size_t replayed = 0, next_values = 0;
  for (const auto& r : log.records) {
    if (r.step < hybrid.step_count()) continue;
    // The logged roles; the first-order blocks are not touched here (their values come from
    // the block values file below), and the first-order rule's state does not advance, so a
    // replayed hybrid cannot continue training without its saved state.
    zo::require(r.roles.size() == store.size(), [&] {
      return "step " + std::to_string(r.step) + " logged " + std::to_string(r.roles.size()) +
             " roles for a store of " + std::to_string(store.size()) + " blocks";
    });
    detail::require_replayable(hybrid.zeroth_order_part(), r);
    detail::replay_phases(hybrid.zeroth_order_part(), store, r, r.roles, hybrid.selector_mask(),
                          false, true);
    ++replayed;
    if (r.skipped()) continue;
    while (next_values < values.records.size() && values.records[next_values].step < r.step)
      ++next_values;
    zo::require(next_values < values.records.size() && values.records[next_values].step == r.step,
                "the block values file has no record for step " + std::to_string(r.step) +
                    (values.complete ? std::string() : " (it was cut off: " + values.reason + ")"));
    for (const auto& b : values.records[next_values].blocks) {
      zo::require(b.index < store.size() && b.element_size == sizeof(T) &&
                      b.values.size() == store.block(b.index).size() * sizeof(T),
                  "the block values of step " + std::to_string(r.step) + " do not fit block " +
                      std::to_string(b.index) + " of the store");
      std::memcpy(store.block(b.index).data(), b.values.data(), b.values.size());
    }
  }
  return replayed;
}

}  // namespace zo::io
