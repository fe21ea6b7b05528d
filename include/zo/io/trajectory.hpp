// Trajectory logs: a zeroth-order run is fixed by a few numbers per step (the seed, the step, the
// projected gradients, the learning rate and which blocks were trained), so a fine-tune can be
// stored in kilobytes and rebuilt from its base weights by replaying them (zo::io::replay).
//
// File format (all integers little-endian, doubles as their IEEE-754 bits):
//   header:  "zo-traj\n" · u32 version (1) · u32 n · n bytes of header payload · u32 CRC-32
//            payload: u64 seed · u32 block count · u32 m · m bytes of description (free text,
//            e.g. the optimizer and its hyperparameters)
//   record:  u32 n · u32 ~n · n bytes of record payload · u32 CRC-32 of the payload
//            payload: u64 step · u64 seed · f64 learning rate · u8 status (0 completed,
//            1 skipped) · u32 evaluations · u32 q · q × f64 projected gradients ·
//            u32 b · b × u8 block roles (zo::block_role)
// A record is written with one write() call and the file is fsync'ed every `sync_every`
// records, so a crash leaves at most a torn last record. Reading stops at a torn record and
// reports where (the run can be replayed and resumed from there); the complemented length and
// the checksum make a damaged record an error rather than something silently skipped.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "zo/errors.hpp"
#include "zo/optimizers/reports.hpp"
#include "zo/selectors/all_blocks.hpp"

namespace zo::io {

namespace detail {

// CRC-32 as zlib and PNG compute it (reflected polynomial 0xEDB88320).
constexpr std::array<std::uint32_t, 256> crc32_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k)
      c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}

inline std::uint32_t crc32(std::span<const std::byte> bytes) {
  static constexpr auto table = crc32_table();
  std::uint32_t c = 0xFFFFFFFFu;
  for (const std::byte b : bytes)
    c = table[(c ^ static_cast<std::uint32_t>(b)) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

class byte_writer {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(static_cast<std::byte>(v)); }
  void u32(std::uint32_t v) {
    for (int k = 0; k < 4; ++k)
      u8(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void u64(std::uint64_t v) {
    for (int k = 0; k < 8; ++k)
      u8(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void f64(double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    u64(bits);
  }
  void raw(std::span<const std::byte> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// Reads a payload whose length and checksum were verified; running out is a malformed payload.
class byte_reader {
 public:
  byte_reader(std::span<const std::byte> bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}
  std::uint8_t u8() {
    need(1);
    return static_cast<std::uint8_t>(bytes_[at_++]);
  }
  std::uint32_t u32() {
    need(4);
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k)
      v |= static_cast<std::uint32_t>(bytes_[at_++]) << (8 * k);
    return v;
  }
  std::uint64_t u64() {
    need(8);
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k)
      v |= static_cast<std::uint64_t>(bytes_[at_++]) << (8 * k);
    return v;
  }
  double f64() {
    const std::uint64_t bits = u64();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  std::span<const std::byte> raw(std::size_t n) {
    need(n);
    const auto out = bytes_.subspan(at_, n);
    at_ += n;
    return out;
  }
  std::size_t remaining() const { return bytes_.size() - at_; }
  void finish() const {
    zo::detail::require(at_ == bytes_.size(),
                        what_ + " has " + std::to_string(remaining()) + " bytes beyond its fields");
  }

 private:
  void need(std::size_t n) const {
    zo::detail::require(bytes_.size() - at_ >= n, what_ + " is shorter than its fields");
  }
  std::span<const std::byte> bytes_;
  std::string what_;
  std::size_t at_ = 0;
};

inline constexpr char trajectory_magic[8] = {'z', 'o', '-', 't', 'r', 'a', 'j', '\n'};
inline constexpr std::uint32_t trajectory_version = 1;

}  // namespace detail

struct trajectory_header {
  std::uint64_t seed = 0;
  std::uint32_t block_count = 0;
  std::string description;
};

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

// A log as read back: the records up to the last complete one. complete is false when the
// file ends inside a record (a crash while appending); stopped_at is then the offset of that
// torn record, and reason says how far it got.
struct trajectory {
  trajectory_header header;
  std::vector<trajectory_record> records;
  bool complete = true;
  std::uint64_t stopped_at = 0;
  std::string reason;
};

inline std::vector<std::byte> encode_header(const trajectory_header& header) {
  detail::byte_writer payload;
  payload.u64(header.seed);
  payload.u32(header.block_count);
  payload.u32(static_cast<std::uint32_t>(header.description.size()));
  payload.raw(std::as_bytes(std::span(header.description)));
  detail::byte_writer out;
  out.raw(std::as_bytes(std::span(detail::trajectory_magic)));
  out.u32(detail::trajectory_version);
  out.u32(static_cast<std::uint32_t>(payload.bytes().size()));
  out.raw(payload.bytes());
  out.u32(detail::crc32(payload.bytes()));
  return std::move(out.bytes());
}

inline std::vector<std::byte> encode_record(const trajectory_record& r) {
  detail::byte_writer payload;
  payload.u64(r.step);
  payload.u64(r.seed);
  payload.f64(r.learning_rate);
  payload.u8(r.skipped() ? 1 : 0);
  payload.u32(r.evaluations);
  payload.u32(static_cast<std::uint32_t>(r.projected_gradients.size()));
  for (const double g : r.projected_gradients)
    payload.f64(g);
  payload.u32(static_cast<std::uint32_t>(r.roles.size()));
  for (const block_role role : r.roles)
    payload.u8(static_cast<std::uint8_t>(role));
  const auto n = static_cast<std::uint32_t>(payload.bytes().size());
  detail::byte_writer out;
  out.u32(n);
  out.u32(~n);
  out.raw(payload.bytes());
  out.u32(detail::crc32(payload.bytes()));
  return std::move(out.bytes());
}

// Parses a log. Throws zo::invalid_argument for a bad or truncated header and for a damaged
// record (a checksum or length mismatch, or fields that do not fit), naming the record and its
// byte offset; a record cut off by the end of the input ends the log instead (see trajectory).
inline trajectory read_trajectory(std::span<const std::byte> bytes,
                                  const std::string& source = "<memory>") {
  using zo::detail::require;
  trajectory log;
  const auto u32_at = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k)
      v |= static_cast<std::uint32_t>(bytes[at + static_cast<std::size_t>(k)]) << (8 * k);
    return v;
  };
  constexpr std::size_t fixed = sizeof(detail::trajectory_magic) + 8;
  require(bytes.size() >= fixed, "trajectory " + source + ": truncated header (" +
                                     std::to_string(bytes.size()) + " bytes)");
  require(std::memcmp(bytes.data(), detail::trajectory_magic, sizeof detail::trajectory_magic) == 0,
          "trajectory " + source + " does not start with the zo trajectory magic");
  const std::uint32_t version = u32_at(8);
  require(version == detail::trajectory_version,
          "trajectory " + source + " has version " + std::to_string(version) +
              ", this build reads version " + std::to_string(detail::trajectory_version));
  const std::uint64_t header_size = u32_at(12);
  require(bytes.size() - fixed >= header_size + 4,
          "trajectory " + source + ": truncated header (needs " +
              std::to_string(fixed + header_size + 4) + " bytes, has " +
              std::to_string(bytes.size()) + ")");
  const auto header_payload = bytes.subspan(fixed, header_size);
  require(detail::crc32(header_payload) == u32_at(fixed + header_size),
          "trajectory " + source + ": header checksum mismatch");
  detail::byte_reader header(header_payload, "trajectory " + source + " header");
  log.header.seed = header.u64();
  log.header.block_count = header.u32();
  const std::uint32_t description_size = header.u32();
  const auto description = header.raw(description_size);
  log.header.description.assign(reinterpret_cast<const char*>(description.data()),
                                description.size());
  header.finish();

  std::size_t at = fixed + header_size + 4;
  while (at < bytes.size()) {
    const std::string what = "trajectory " + source + ": record " +
                             std::to_string(log.records.size()) + " at byte " + std::to_string(at);
    const auto torn = [&](std::size_t needed) {
      log.complete = false;
      log.stopped_at = at;
      log.reason = what + " is cut off: it needs " + std::to_string(needed) +
                   " bytes, the file has " + std::to_string(bytes.size() - at);
    };
    if (bytes.size() - at < 8) {
      torn(8);
      break;
    }
    const std::uint32_t n = u32_at(at), check = u32_at(at + 4);
    require(check == ~n, what + ": length field damaged (" + std::to_string(n) + " and ~" +
                             std::to_string(~check) + " disagree)");
    const std::uint64_t total = 8 + std::uint64_t{n} + 4;
    if (bytes.size() - at < total) {
      torn(static_cast<std::size_t>(total));
      break;
    }
    const auto payload = bytes.subspan(at + 8, n);
    require(detail::crc32(payload) == u32_at(at + 8 + n), what + ": checksum mismatch");
    detail::byte_reader in(payload, what);
    trajectory_record r;
    r.step = in.u64();
    r.seed = in.u64();
    r.learning_rate = in.f64();
    const std::uint8_t status = in.u8();
    require(status <= 1, what + ": unknown status " + std::to_string(status));
    r.status = status == 0 ? step_status::completed : step_status::skipped_nonfinite_loss;
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
    log.records.push_back(std::move(r));
    at += static_cast<std::size_t>(total);
  }
  return log;
}

inline trajectory read_trajectory(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  zo::detail::require(file.good(), "cannot open trajectory " + path.string());
  std::vector<char> chars((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return read_trajectory(std::as_bytes(std::span(chars)), path.string());
}

// Appends records to a log file. As an optimizer callback (after_step) it logs every step.
class trajectory_writer {
 public:
  // Creates the file (replacing one there) with this header. The file is fsync'ed every
  // sync_every records (0: only by sync() and on destruction).
  trajectory_writer(const std::filesystem::path& path, const trajectory_header& header,
                    std::size_t sync_every = 1)
      : path_(path), sync_every_(sync_every) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    zo::detail::require(fd_ >= 0,
                        "cannot create trajectory " + path.string() + ": " + std::strerror(errno));
    write_all(encode_header(header));
    sync();
  }

  // Continues a log after a crash or a resumed run: the file is read, a torn last record is cut
  // off, and records are appended after the last complete one. `log` receives what was there.
  static trajectory_writer append_to(const std::filesystem::path& path, trajectory& log,
                                     std::size_t sync_every = 1) {
    log = read_trajectory(path);
    const auto size = std::filesystem::file_size(path);
    trajectory_writer w(path, sync_every);
    if (!log.complete) {
      zo::detail::require(
          ::ftruncate(w.fd_, static_cast<off_t>(log.stopped_at)) == 0,
          "cannot cut the torn record off " + path.string() + ": " + std::strerror(errno));
    }
    ::lseek(w.fd_, static_cast<off_t>(log.complete ? size : log.stopped_at), SEEK_SET);
    return w;
  }

  trajectory_writer(trajectory_writer&& other) noexcept
      : path_(std::move(other.path_)),
        sync_every_(other.sync_every_),
        unsynced_(other.unsynced_),
        fd_(other.fd_) {
    other.fd_ = -1;
  }
  trajectory_writer& operator=(trajectory_writer&&) = delete;
  trajectory_writer(const trajectory_writer&) = delete;
  trajectory_writer& operator=(const trajectory_writer&) = delete;
  ~trajectory_writer() {
    if (fd_ >= 0) {
      ::fsync(fd_);
      ::close(fd_);
    }
  }

  void append(const trajectory_record& record) {
    write_all(encode_record(record));
    if (sync_every_ > 0 && ++unsynced_ >= sync_every_) sync();
  }

  void sync() {
    zo::detail::require(::fsync(fd_) == 0,
                        "cannot sync trajectory " + path_.string() + ": " + std::strerror(errno));
    unsynced_ = 0;
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
  trajectory_writer(const std::filesystem::path& path, std::size_t sync_every)
      : path_(path), sync_every_(sync_every) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    zo::detail::require(fd_ >= 0,
                        "cannot open trajectory " + path.string() + ": " + std::strerror(errno));
  }

  // One write() per record where the system allows, so a record is never interleaved.
  void write_all(const std::vector<std::byte>& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      zo::detail::require(
          n > 0, "cannot write trajectory " + path_.string() + ": " + std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
  }

  std::filesystem::path path_;
  std::size_t sync_every_ = 1;
  std::size_t unsynced_ = 0;
  int fd_ = -1;
};

// Replays a log's records on the parameters the logged run started from (or, with a resumed
// optimizer, from where it stopped): optimizer must be built as the live one was (policies,
// hyperparameters, options). Records before the optimizer's step are skipped; the rest must
// follow on from it. Returns the number of steps replayed.
template <class Optimizer, class Store>
std::size_t replay(Optimizer& optimizer, Store& store, const trajectory& log) {
  zo::detail::require(log.header.block_count == store.size(),
                      "the trajectory was recorded on " + std::to_string(log.header.block_count) +
                          " blocks, the store has " + std::to_string(store.size()));
  zo::detail::require(log.header.seed == optimizer.options().seed,
                      "the trajectory was recorded with seed " + std::to_string(log.header.seed) +
                          ", the optimizer has seed " + std::to_string(optimizer.options().seed));
  std::size_t replayed = 0;
  for (const auto& r : log.records) {
    if (r.step < optimizer.step_count()) continue;
    zo::detail::require(r.seed == log.header.seed, "record of step " + std::to_string(r.step) +
                                                       " has seed " + std::to_string(r.seed) +
                                                       ", the log's header " +
                                                       std::to_string(log.header.seed));
    optimizer.replay_step(store, r.step, r.projected_gradients, r.evaluations, r.skipped(),
                          r.roles);
    ++replayed;
  }
  optimizer.remove_pending_perturbation(store);
  return replayed;
}

}  // namespace zo::io
