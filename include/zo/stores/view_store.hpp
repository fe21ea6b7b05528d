// SPDX-License-Identifier: Apache-2.0
// A non-owning store over memory the caller owns: the way into any framework. The caller keeps
// the memory alive and unmoved for as long as the store is used.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "zo/backends/cpu.hpp"
#include "zo/core/errors.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/block_table.hpp"

namespace zo {

template <class T, class Backend = backends::cpu>
class view_store : public detail::table_store {
 public:
  using value_type = T;
  using backend_type = Backend;
  using block_type = block_view<T>;

  // The backend every pass over these blocks runs on (its threads, or its execution policy).
  explicit view_store(Backend backend = Backend{}) : backend_(std::move(backend)) {}
  const Backend& backend() const { return backend_; }

  // Registers rows × cols elements stored row-major in `storage`; the shape must account for
  // every element of the span, no more and no fewer. Returns the block's id.
  std::size_t add(std::string name, std::span<T> storage, std::size_t rows, std::size_t cols,
                  block_options options = {}) {
    require(storage.data() != nullptr || storage.empty(),
            "block '" + name + "' has a null data pointer");
    const auto& info = table_.add(std::move(name), rows, cols, storage.size(), options);
    data_.push_back(storage.data());
    return info.id;
  }

  // A vector block (n × 1), e.g. a bias.
  std::size_t add(std::string name, std::span<T> storage, block_options options = {}) {
    const std::size_t n = storage.size();
    return add(std::move(name), storage, n, 1, options);
  }

  block_type block(std::size_t i) const { return block_type(table_[i], data_.at(i)); }

 private:
  Backend backend_;
  std::vector<T*> data_;
};

}  // namespace zo
