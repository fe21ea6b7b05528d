// SPDX-License-Identifier: Apache-2.0
// What every parameter block carries, and the lightweight view the ready-made stores hand out.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace zo {

// Options a caller gives when adding a block. Biases and normalisation weights are usually
// added with decay = false, which exempts them from weight decay as in the MeZO reference.
struct block_options {
  std::optional<int> layer = std::nullopt;
  bool decay = true;
};

struct block_info {
  std::size_t id = 0;
  std::string name;
  std::optional<int> layer;
  std::size_t rows = 0;
  std::size_t cols = 0;
  bool decay = true;
};

// A block as the algorithms see it: metadata plus a pointer to rows × cols elements stored
// row-major (element (r, c) at data()[r * cols + c], the layout of PyTorch and safetensors
// weights). The pointer may be device memory when the store's backend is a device backend.
template <class T>
class block_view {
 public:
  using value_type = T;

  block_view(const block_info& info, T* data) : info_(&info), data_(data) {}

  std::size_t id() const { return info_->id; }
  std::string_view name() const { return info_->name; }
  std::optional<int> layer() const { return info_->layer; }
  std::size_t rows() const { return info_->rows; }
  std::size_t cols() const { return info_->cols; }
  std::size_t size() const { return info_->rows * info_->cols; }
  bool decay() const { return info_->decay; }
  T* data() const { return data_; }

 private:
  const block_info* info_;
  T* data_;
};

}  // namespace zo
