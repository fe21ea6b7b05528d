// SPDX-License-Identifier: Apache-2.0
// How the example tools (zo-finetune, zo-replay) write their outputs so that nothing is lost
// silently: every write is checked through its flush, fsync and close, and a failure is an
// exception naming the file; a file is replaced as a whole (a uniquely named temporary in the
// same directory, fsync'ed, renamed into place, the directory fsync'ed); an output that would
// overwrite one of the run's inputs is refused before any work; an output prefix is locked for
// the run; and the output directory is probed for writability before any work. POSIX only.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zo_examples {

namespace fs = std::filesystem;

inline std::string errno_text(int error) {
  return std::strerror(error);
}

// The path `path` is written through: symbolic links (of the file and of the directories above
// it) followed, so that a link keeps pointing at the file it named and the temporary file is
// made next to the real one; a link to a file not yet there is followed too. A path with a
// trailing separator ("dir/") names "dir".
inline fs::path resolved_output(const fs::path& path) {
  fs::path p = fs::absolute(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  p = fs::weakly_canonical(p);
  // weakly_canonical stops at a link whose target does not exist: follow such links by hand.
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(p)); ++hops) {
    const fs::path target = fs::read_symlink(p);
    p = fs::weakly_canonical(target.is_absolute() ? target : p.parent_path() / target);
  }
  return p;
}

// A sibling of `target` no other process picks: "NAME.KIND.<pid>.<random>".
inline fs::path unique_sibling(const fs::path& target, const std::string& kind) {
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  char random[17];
  std::snprintf(random, sizeof random, "%016llx", static_cast<unsigned long long>(engine()));
  return target.parent_path() / (target.filename().string() + "." + kind + "." +
                                 std::to_string(::getpid()) + "." + random);
}

// Writes every byte, through partial writes and interruptions; false with errno set otherwise.
inline bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Flushes a directory's entries (a rename or a new file in it) to disk.
inline void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error("cannot open the directory " + dir.string() + ": " +
                             errno_text(errno));
  const bool ok = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok)
    throw std::runtime_error("cannot flush the directory " + dir.string() + ": " +
                             errno_text(error));
}

// Writes `content` to a new file `path` (which must not exist), fsync'ed and closed, each step
// checked; a failure removes the file and throws naming `shown` (the name the user gave).
inline void write_new_file(const fs::path& path, std::string_view content,
                           const std::string& shown) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    throw std::runtime_error("cannot write " + shown + ": cannot create " + path.string() + ": " +
                             errno_text(errno));
  bool ok = write_all(fd, content) && ::fsync(fd) == 0;
  int error = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (!ok) {
    ::unlink(path.c_str());
    throw std::runtime_error("cannot write " + shown + ": " + errno_text(error));
  }
}

// Replaces the file `path` with `content` as a whole: a reader (or a crash, a kill, a full disk)
// sees the old file or the new one, never a part. Written to a unique temporary file next to the
// file `path` resolves to, fsync'ed, renamed over it, and the directory fsync'ed; on any failure
// the temporary is removed, the old file is left as it was, and the error names `path`. Where
// `path` is (or links to) something other than a regular file, such as /dev/null or /dev/full,
// it cannot be renamed over: the content is written into it, and the write is checked the same.
inline void write_file_atomically(const fs::path& path, std::string_view content) {
  const fs::path target = resolved_output(path);
  std::error_code ec;
  const auto status = fs::status(target, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    if (fs::is_directory(status))
      throw std::runtime_error("cannot write " + path.string() + ": it is a directory");
    const int fd = ::open(target.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
      throw std::runtime_error("cannot write " + path.string() + ": " + errno_text(errno));
    bool ok = write_all(fd, content);
    int error = errno;
    if (::close(fd) != 0 && ok) {
      ok = false;
      error = errno;
    }
    if (!ok) throw std::runtime_error("cannot write " + path.string() + ": " + errno_text(error));
    return;
  }
  const fs::path temporary = unique_sibling(target, "tmp");
  write_new_file(temporary, content, path.string());
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    throw std::runtime_error("cannot write " + path.string() + ": cannot rename " +
                             temporary.string() + " to " + target.string() + ": " +
                             errno_text(error));
  }
  try {
    fsync_directory(target.parent_path());
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot write " + path.string() + ": " + e.what());
  }
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path.string());
  return out.str();
}

// Whether writing `output` would replace `input`: the same file (hard or symbolic links
// included) where both exist, the same path once links, "." and ".." are resolved otherwise.
inline bool same_file(const fs::path& output, const fs::path& input) {
  std::error_code ec;
  if (fs::exists(output, ec) && fs::exists(input, ec)) {
    const bool same = fs::equivalent(output, input, ec);
    if (!ec) return same;
  }
  const auto left = resolved_output(output), right = resolved_output(input);
  return left == right;
}

struct named_path {
  fs::path path;
  std::string what;  // e.g. "the summary (--out)"
};

// Refuses, before any work, an output that would overwrite one of the inputs.
inline void refuse_overwriting_inputs(const std::vector<named_path>& outputs,
                                      const std::vector<named_path>& inputs) {
  for (const auto& out : outputs) {
    for (const auto& in : inputs) {
      if (same_file(out.path, in.path))
        throw std::invalid_argument(out.what + " " + out.path.string() + " would overwrite " +
                                    in.what + " " + in.path.string() + "; choose another output");
    }
  }
}

// Checks, before any work, that files can be made in `dir` (created, with its parents, where
// missing): makes and removes a probe file. `what` names the option the directory comes from.
inline void require_writable_directory(const fs::path& dir, const std::string& what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw std::runtime_error(what + ": cannot create the directory " + dir.string() + ": " +
                             ec.message());
  const fs::path probe = unique_sibling(dir / ".zo-write-probe", "tmp");
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    throw std::runtime_error(what + ": cannot write in " + dir.string() + ": " + errno_text(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

// Checks, before any work, that write_file_atomically(path, ...) can write: the directory of
// the file `path` resolves to (see require_writable_directory), or, where `path` is (or links
// to) a device or other non-regular file, which is written in place, that it is writable.
inline void require_writable_output(const fs::path& path, const std::string& what) {
  const fs::path target = resolved_output(path);
  std::error_code ec;
  const auto status = fs::status(target, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    if (fs::is_directory(status))
      throw std::runtime_error(what + ": " + path.string() + " is a directory");
    if (::access(target.c_str(), W_OK) != 0)
      throw std::runtime_error(what + ": cannot write " + path.string() + ": " + errno_text(errno));
    return;
  }
  require_writable_directory(target.parent_path(), what);
}

// An exclusive lock on PREFIX.lock (flock(2)) for the life of the object, so that a second run
// writing the same outputs is refused rather than interleaving with this one. The lock file is
// removed when the run ends; one left by a killed run holds no lock and is reused.
class prefix_lock {
 public:
  prefix_lock(const fs::path& lock_path, const std::string& prefix) : path_(lock_path) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
      if (fd_ < 0)
        throw std::runtime_error("cannot create the lock file " + path_.string() + ": " +
                                 errno_text(errno));
      if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int error = errno;
        ::close(fd_);
        fd_ = -1;
        if (error == EWOULDBLOCK)
          throw std::runtime_error("the output prefix " + prefix + " is locked by another run (" +
                                   path_.string() + "); wait for it or choose another --out");
        throw std::runtime_error("cannot lock " + path_.string() + ": " + errno_text(error));
      }
      // The file may have been removed (by the run that held it) between open and flock: the
      // lock counts only on the file the path still names.
      struct stat held {
      }, named{};
      if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &named) == 0 &&
          held.st_dev == named.st_dev && held.st_ino == named.st_ino)
        return;
      ::close(fd_);
      fd_ = -1;
    }
    throw std::runtime_error("cannot lock " + path_.string() + ": it keeps being replaced");
  }
  prefix_lock(const prefix_lock&) = delete;
  prefix_lock& operator=(const prefix_lock&) = delete;
  ~prefix_lock() {
    if (fd_ < 0) return;
    ::unlink(path_.c_str());  // while still locked, so no other run holds a removed file
    ::close(fd_);
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

}  // namespace zo_examples
