// SPDX-License-Identifier: Apache-2.0
// The gradient buffers a hybrid optimizer hands its objective.
#pragma once

#include <cstddef>
#include <span>

namespace zo {

// The gradients an objective is asked for: one zero-initialised buffer per requested block,
// rows × cols elements row-major like the block, on the store's backend.
template <class T>
class gradient_view {
 public:
  gradient_view(std::span<const std::size_t> blocks, std::span<T* const> buffers)
      : blocks_(blocks), buffers_(buffers) {}

  // Store indices of the requested blocks, in store order.
  std::span<const std::size_t> blocks() const { return blocks_; }
  // The buffer of blocks()[k].
  T* operator[](std::size_t k) const { return buffers_[k]; }
  // The buffer of the block with this store index, or nullptr when it was not requested.
  T* find(std::size_t block_index) const {
    for (std::size_t k = 0; k < blocks_.size(); ++k) {
      if (blocks_[k] == block_index) return buffers_[k];
    }
    return nullptr;
  }

 private:
  std::span<const std::size_t> blocks_;
  std::span<T* const> buffers_;
};

}  // namespace zo
