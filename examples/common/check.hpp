// SPDX-License-Identifier: Apache-2.0
// The examples' precondition check is the library's public one, zo::require: it throws
// zo::invalid_argument, so that an example's error and the library's read alike ("zo: ...") and a
// caller catches both as one type.
#pragma once

#include <zo/core/errors.hpp>

namespace zo_examples {

using zo::require;

}  // namespace zo_examples
