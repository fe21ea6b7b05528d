// A non-owning store over memory the caller owns: the way into any framework. The caller keeps
// the memory alive and unmoved for as long as the store is used.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "zo/backends/cpu.hpp"
#include "zo/errors.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/block_table.hpp"

namespace zo {

template <class T, class Backend = backends::cpu>
class view_store {
 public:
  using value_type = T;
  using backend_type = Backend;
  using block_type = block_view<T>;

  // Registers rows × cols elements stored row-major in `storage`; the shape must account for
  // every element of the span, no more and no fewer. Returns the block's id.
  std::size_t add(std::string name, std::span<T> storage, std::size_t rows, std::size_t cols,
                  block_options options = {}) {
    detail::require(storage.data() != nullptr || storage.empty(),
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

  std::size_t size() const { return table_.size(); }
  block_type block(std::size_t i) const { return block_type(table_[i], data_.at(i)); }
  std::optional<std::size_t> find(std::string_view name) const { return table_.find(name); }
  std::size_t parameter_count() const { return table_.parameter_count(); }

 private:
  detail::block_table table_;
  std::vector<T*> data_;
};

}  // namespace zo
