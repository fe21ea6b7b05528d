# SPDX-License-Identifier: Apache-2.0
# Builds TARGET in BUILD_DIR and passes only if the build fails and its first error matches EXPECT.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not")
endif()
if(NOT output MATCHES "${EXPECT}")
  message(FATAL_ERROR "${TARGET} failed to compile, but without '${EXPECT}':\n${output}")
endif()
# The zo: message must be the first error a user reads, not one among a page of others.
string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${output}")
if(NOT first_error MATCHES "${EXPECT}")
  message(FATAL_ERROR "${TARGET}: the first error is not '${EXPECT}' but:\n${first_error}")
endif()
message(STATUS "${TARGET} failed to compile as required: '${EXPECT}'")
