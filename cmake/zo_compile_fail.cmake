# SPDX-License-Identifier: Apache-2.0
# Builds TARGET in BUILD_DIR and passes only if the build fails with output matching EXPECT.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not")
endif()
if(NOT output MATCHES "${EXPECT}")
  message(FATAL_ERROR "${TARGET} failed to compile, but without '${EXPECT}':\n${output}")
endif()
message(STATUS "${TARGET} failed to compile as required: '${EXPECT}'")
