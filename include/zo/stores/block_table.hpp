// SPDX-License-Identifier: Apache-2.0
// Bookkeeping shared by the ready-made stores: ids, unique names and shape checks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "zo/core/errors.hpp"
#include "zo/stores/block.hpp"

namespace zo::detail {

class block_table {
 public:
  // Validates a new block and records it; storage_elements is how many elements the caller's
  // storage actually holds, so a shape that does not match it is rejected here.
  const block_info& add(std::string name, std::size_t rows, std::size_t cols,
                        std::size_t storage_elements, const block_options& options) {
    require(!name.empty(), "a block needs a non-empty name");
    require(!find(name).has_value(), "a block named '" + name + "' is already in the store");
    require(rows > 0 && cols > 0, "block '" + name + "' has an empty shape " +
                                      std::to_string(rows) + "x" + std::to_string(cols));
    require(storage_elements == rows * cols,
            "block '" + name + "' has shape " + std::to_string(rows) + "x" + std::to_string(cols) +
                " (" + std::to_string(rows * cols) + " elements) but its storage holds " +
                std::to_string(storage_elements));
    infos_.push_back(
        block_info{infos_.size(), std::move(name), options.layer, rows, cols, options.decay});
    return infos_.back();
  }

  std::size_t size() const { return infos_.size(); }
  const block_info& operator[](std::size_t i) const { return infos_.at(i); }

  std::optional<std::size_t> find(std::string_view name) const {
    auto it = std::find_if(infos_.begin(), infos_.end(),
                           [&](const block_info& b) { return b.name == name; });
    if (it == infos_.end()) return std::nullopt;
    return static_cast<std::size_t>(it - infos_.begin());
  }

  std::size_t parameter_count() const {
    std::size_t n = 0;
    for (const auto& b : infos_)
      n += b.rows * b.cols;
    return n;
  }

 private:
  // A deque would keep references stable too, but block_view holds a pointer into this vector
  // only for the duration of one call, so a vector is enough.
  std::vector<block_info> infos_;
};

// What every ready-made store answers from its table: block count, lookup by name, size.
class table_store {
 public:
  std::size_t size() const { return table_.size(); }
  std::optional<std::size_t> find(std::string_view name) const { return table_.find(name); }
  std::size_t parameter_count() const { return table_.parameter_count(); }

 protected:
  block_table table_;
};

}  // namespace zo::detail
