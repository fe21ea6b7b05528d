// SPDX-License-Identifier: Apache-2.0
// zo-replay: rebuilds fine-tuned weights from a base checkpoint and a trajectory log.
//
//   zo-replay BASE.safetensors RUN.zotraj OUT.safetensors
//
// The log's description names the optimizer and its settings (see replay_run.hpp); the base
// checkpoint must be the one the run started from, with its tensors in the same order (a log
// whose header has a base fingerprint refuses any other). A log without the end record a
// finished run writes replays, with a note that it may not hold the whole run.
#include <csignal>
#include <cstdio>
#include <exception>

#include "replay_run.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s BASE.safetensors RUN.zotraj OUT.safetensors\n", argv[0]);
    return 2;
  }
  // A write past the file-size limit (ulimit -f) fails with EFBIG and is reported, rather than
  // killing the process in the middle of it.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    const auto result = zo_replay::replay_file(argv[1], argv[2], argv[3]);
    std::printf("replayed %zu steps from %s into %s\n", result.steps, argv[2], argv[3]);
    if (!result.log.complete) {
      std::printf("the log was cut off: %s; the weights are those after the last complete step\n",
                  result.log.reason.c_str());
    } else if (!result.log.finished) {
      std::printf(
          "the log has no end record, so it is not known to hold the whole run (%s); the "
          "weights are those after the last logged step\n",
          result.log.version < 2 ? "a version-1 log has none"
                                 : "the run stopped, or the file was cut, between records");
    }
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      std::fprintf(stderr, "cannot write to standard output\n");
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
