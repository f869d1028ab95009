# Hardening tools and tests (issue 9), included at the end of cpp/CMakeLists.txt:
#   vitedge-load        load test tool (tools/vitedge_load.cpp; benchmarks/cpp_load.py runs it for 60 s)
#   fuzz_manifest/image libFuzzer targets (cpp/fuzz, built with clang as a separate project: no libtorch)
#   vitedge-load (TSan) the runner + vitedge-load built again with -fsanitize=thread (a separate project)
# Tests: cpp_fuzz_manifest, cpp_fuzz_image (5 s each, skipped when clang++ is absent), cpp_load_tsan (~10 s),
#        cpp_api_bad_inputs (NaN/Inf/shape/size inputs and SHA-256 checks through the C++ API).
include(ExternalProject)

add_executable(vitedge-load tools/vitedge_load.cpp)
target_link_libraries(vitedge-load PRIVATE vitedge_runner nlohmann_json::nlohmann_json Threads::Threads)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(vitedge-load PRIVATE -Wall -Wextra)
endif()

# ---- fuzzing: clang + libFuzzer (Debian 12: apt-get install clang) ----
set(VITEDGE_FUZZ AUTO CACHE STRING "Build the libFuzzer targets: AUTO (when clang++ is found), ON, OFF")
set_property(CACHE VITEDGE_FUZZ PROPERTY STRINGS AUTO ON OFF)
set(_vitedge_fuzz_bin "${CMAKE_BINARY_DIR}/fuzz")
if(NOT VITEDGE_FUZZ STREQUAL "OFF")
  find_program(VITEDGE_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14 DOC "clang++ for the libFuzzer targets")
  if(VITEDGE_CLANGXX)
    ExternalProject_Add(vitedge_fuzz
      SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}/fuzz" BINARY_DIR "${_vitedge_fuzz_bin}"
      CMAKE_ARGS -DCMAKE_CXX_COMPILER=${VITEDGE_CLANGXX} -DCMAKE_BUILD_TYPE=RelWithDebInfo
      INSTALL_COMMAND "" BUILD_ALWAYS ON)
  elseif(VITEDGE_FUZZ STREQUAL "ON")
    message(FATAL_ERROR "VITEDGE_FUZZ=ON but clang++ was not found (apt-get install clang)")
  else()
    message(STATUS "Fuzz targets: off (clang++ not found; apt-get install clang)")
  endif()
endif()

# ---- ThreadSanitizer build of the runner + vitedge-load (GCC or Clang on Linux) ----
option(VITEDGE_TSAN "Build the runner and vitedge-load again with -fsanitize=thread for the cpp_load_tsan test" ON)
set(_vitedge_tsan_bin "${CMAKE_BINARY_DIR}/tsan")
if(VITEDGE_TSAN AND VITEDGE_WITH_TORCH AND CMAKE_SYSTEM_NAME STREQUAL "Linux" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  ExternalProject_Add(vitedge_tsan
    SOURCE_DIR "${PROJECT_SOURCE_DIR}" BINARY_DIR "${_vitedge_tsan_bin}"
    CMAKE_ARGS -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER} -DCMAKE_BUILD_TYPE=RelWithDebInfo
               "-DCMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer"
               -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread
               "-DCMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH}" "-DVITEDGE_PYTHON=${VITEDGE_PYTHON}"
               -DVITEDGE_SHARED=OFF -DVITEDGE_BUILD_TESTS=OFF -DVITEDGE_FUZZ=OFF -DVITEDGE_TSAN=OFF
               -DVITEDGE_WITH_TENSORRT=OFF -DVITEDGE_WITH_OPENVINO=OFF
    BUILD_COMMAND ${CMAKE_COMMAND} --build . --target vitedge-load --parallel 2
    INSTALL_COMMAND "" BUILD_ALWAYS ON)
  set(_vitedge_tsan_load "${_vitedge_tsan_bin}/cpp/vitedge-load")
endif()

if(VITEDGE_BUILD_TESTS)
  foreach(name manifest image)
    if(VITEDGE_CLANGXX AND NOT VITEDGE_FUZZ STREQUAL "OFF")
      add_test(NAME cpp_fuzz_${name}
               COMMAND sh "${CMAKE_CURRENT_SOURCE_DIR}/fuzz/run_fuzz.sh" "${_vitedge_fuzz_bin}/fuzz_${name}"
                          "${CMAKE_CURRENT_SOURCE_DIR}/fuzz/seeds/${name}" "${CMAKE_CURRENT_SOURCE_DIR}/fuzz/regressions"
                          "${CMAKE_CURRENT_BINARY_DIR}/test-fuzz-${name}" 5)
      set_tests_properties(cpp_fuzz_${name} PROPERTIES TIMEOUT 120)
    elseif(NOT VITEDGE_FUZZ STREQUAL "OFF")
      add_test(NAME cpp_fuzz_${name} COMMAND sh -c "echo 'SKIP: clang++ not found (apt-get install clang), fuzz target not built'; exit 77")
      set_tests_properties(cpp_fuzz_${name} PROPERTIES SKIP_RETURN_CODE 77)
    endif()
  endforeach()
  if(EXISTS "${VITEDGE_PYTHON}" AND VITEDGE_WITH_TORCH)
    add_executable(vitedge_api_checks tests/api_checks.cpp)
    target_link_libraries(vitedge_api_checks PRIVATE vitedge_runner)
    add_test(NAME cpp_api_bad_inputs COMMAND vitedge_api_checks "${CMAKE_CURRENT_BINARY_DIR}/test-fixtures/torchscript"
                                             "${CMAKE_CURRENT_BINARY_DIR}/test-api-checks")
    set_tests_properties(cpp_api_bad_inputs PROPERTIES FIXTURES_REQUIRED vitedge_artifacts TIMEOUT 120)
  endif()
  if(_vitedge_tsan_load AND EXISTS "${VITEDGE_PYTHON}" AND VITEDGE_WITH_TORCH)
    # One TorchScript Runner shared by 4 caller threads for 8 s on the fixture artifact and photos; OMP_NUM_THREADS=1
    # so libtorch runs no OpenMP workers (their barriers are invisible to TSan). No suppressions.
    set(_vitedge_fx "${CMAKE_CURRENT_BINARY_DIR}/test-fixtures")
    add_test(NAME cpp_load_tsan
             COMMAND "${_vitedge_tsan_load}" "${_vitedge_fx}/torchscript" "${_vitedge_fx}/photos64"
                     --key "${_vitedge_fx}/keys/pub.pem"
                     --threads 4 --seconds 8 --warmup-seconds 2)
    set_tests_properties(cpp_load_tsan PROPERTIES FIXTURES_REQUIRED vitedge_artifacts TIMEOUT 300
      ENVIRONMENT "OMP_NUM_THREADS=1;TSAN_OPTIONS=halt_on_error=1 exitcode=66 second_deadlock_stack=1")
  endif()
endif()
