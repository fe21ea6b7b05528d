# SPDX-License-Identifier: Apache-2.0
# Installs the zo build in BUILD_DIR into a scratch prefix, then configures, builds and runs the
# consumer project in CONSUMER_SOURCE against it through find_package(zo), twice:
#   full  with what this machine has: zo::eigen (and zo::mpi and zo::torch where installed) too,
#         and OpenMP where the compiler has it;
#   bare  as on a machine with neither Eigen nor OpenMP (nor libtorch): finding them is disabled,
#         and zo::zo must still be found, build without them and run.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    list(JOIN ARGV " " command)
    message(FATAL_ERROR "failed (${result}): ${command}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
set(full_options)
set(bare_options -DZO_CONSUMER_BARE=ON -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON
                 -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON)
foreach(kind full bare)
  set(consumer_build ${WORK_DIR}/build-${kind})
  message(STATUS "zo install test: the ${kind} consumer")
  run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${consumer_build} -DCMAKE_PREFIX_PATH=${prefix}
      -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release ${${kind}_options})
  run(${CMAKE_COMMAND} --build ${consumer_build})
  run(${consumer_build}/zo_consumer)
  if(kind STREQUAL "full")
    run(${consumer_build}/zo_eigen_consumer)
    if(EXISTS ${consumer_build}/zo_torch_consumer)
      run(${consumer_build}/zo_torch_consumer)
    endif()
  endif()
endforeach()
