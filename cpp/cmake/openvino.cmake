# OpenVINO backend (src/openvino_backend.cpp): OpenVINO's C++ runtime (openvino::runtime) from the CMake config that
# the openvino Python wheel ships (site-packages/openvino/cmake; headers in openvino/include, libraries in
# openvino/libs), or any OpenVINO install found through OpenVINO_DIR / CMAKE_PREFIX_PATH.
#   VITEDGE_WITH_OPENVINO=AUTO (default): built when the config is found, else one status line says why not.
#   ON: required (configure fails without it).  OFF: not built (the runner refuses OpenVINO artifacts, saying how
#   to rebuild).
# Included by cpp/CMakeLists.txt after cpp/cmake/backends.cmake and before vitedge_finish_backends(): the backend is
# the plugin libvitedge_backend_openvino.so (compiled into libvitedge in a static build).
set(VITEDGE_WITH_OPENVINO AUTO CACHE STRING "OpenVINO backend: AUTO (when the OpenVINO CMake config is found), ON, OFF")
set_property(CACHE VITEDGE_WITH_OPENVINO PROPERTY STRINGS AUTO ON OFF)
if(VITEDGE_WITH_OPENVINO STREQUAL "AUTO")
  set(_vitedge_ov_mode AUTO)
elseif(VITEDGE_WITH_OPENVINO)
  set(_vitedge_ov_mode ON)
else()
  set(_vitedge_ov_mode OFF)
endif()

set(VITEDGE_WITH_OPENVINO_BUILT OFF)
if(_vitedge_ov_mode STREQUAL "OFF")
  message(STATUS "OpenVINO backend: off (VITEDGE_WITH_OPENVINO=OFF)")
else()
  # Without an explicit OpenVINO_DIR, ask VITEDGE_PYTHON's openvino wheel (not when cross-compiling: the wheel
  # holds libraries for the build machine).
  if(NOT OpenVINO_DIR AND NOT CMAKE_CROSSCOMPILING AND EXISTS "${VITEDGE_PYTHON}")
    execute_process(COMMAND "${VITEDGE_PYTHON}" -c
                      "import importlib.util, os; s = importlib.util.find_spec('openvino'); print(os.path.join(list(s.submodule_search_locations)[0], 'cmake'))"
                    OUTPUT_VARIABLE _vitedge_ov_dir OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _vitedge_ov_rc ERROR_QUIET)
    if(_vitedge_ov_rc EQUAL 0 AND EXISTS "${_vitedge_ov_dir}/OpenVINOConfig.cmake")
      set(OpenVINO_DIR "${_vitedge_ov_dir}" CACHE PATH "OpenVINO's CMake config directory (the openvino wheel's)")
    endif()
  endif()
  find_package(OpenVINO CONFIG QUIET COMPONENTS Runtime)
  if(NOT OpenVINO_FOUND OR NOT TARGET openvino::runtime)
    if(_vitedge_ov_mode STREQUAL "ON")
      message(FATAL_ERROR "VITEDGE_WITH_OPENVINO=ON but the OpenVINO CMake config was not found "
                          "(pip install 'vitedge[openvino]' into VITEDGE_PYTHON, or set OpenVINO_DIR)")
    endif()
    message(STATUS "OpenVINO backend: off (no OpenVINO CMake config; pip install 'vitedge[openvino]' or set OpenVINO_DIR)")
  else()
    # The directory of the wheel's libopenvino.so.<ver>: OpenVINO loads its CPU plugin and IR frontend from there.
    get_target_property(_vitedge_ov_lib openvino::runtime IMPORTED_LOCATION_RELEASE)
    if(NOT _vitedge_ov_lib)
      get_target_property(_vitedge_ov_lib openvino::runtime IMPORTED_LOCATION)
    endif()
    get_filename_component(_vitedge_ov_libdir "${_vitedge_ov_lib}" DIRECTORY)
    # RUNTIME_LIBS: what OpenVINO dlopens itself (not NEEDED, so not found by file(GET_RUNTIME_DEPENDENCIES)): the
    # CPU plugin, the IR frontend, TBB's NUMA binding and its hwloc.
    file(GLOB _vitedge_ov_dlopened "${_vitedge_ov_libdir}/libopenvino_intel_cpu_plugin.so"
         "${_vitedge_ov_libdir}/libopenvino_ir_frontend.so*" "${_vitedge_ov_libdir}/libtbbbind*.so*"
         "${_vitedge_ov_libdir}/libhwloc.so*")
    vitedge_add_backend(openvino
      SOURCES src/openvino_backend.cpp
      ROWS openvino:openvino:make_openvino_backend
      LINK openvino::runtime
      RUNTIME_DIRS "${_vitedge_ov_libdir}"
      RUNTIME_LIBS ${_vitedge_ov_dlopened})
    set(VITEDGE_WITH_OPENVINO_BUILT ON)
    message(STATUS "OpenVINO backend: on (OpenVINO ${OpenVINO_VERSION}, ${_vitedge_ov_lib})")
  endif()
endif()

if(NOT VITEDGE_WITH_OPENVINO_BUILT)
  vitedge_backend_off(ROWS openvino:openvino:-
                      HINT "-DVITEDGE_WITH_OPENVINO=ON (needs the openvino wheel's C++ runtime and CMake config)")
endif()

# ctest: C++ vs Python OpenVINO on the bundled photos, and hostile manifests/IR files refused by both.
# (VITEDGE_BUILD_TESTS may be declared after this file is included: undefined means its default, ON)
if(VITEDGE_WITH_OPENVINO_BUILT AND (NOT DEFINED VITEDGE_BUILD_TESTS OR VITEDGE_BUILD_TESTS) AND EXISTS "${VITEDGE_PYTHON}")
  add_test(NAME cpp_openvino
           COMMAND "${VITEDGE_PYTHON}" "${CMAKE_CURRENT_SOURCE_DIR}/tests/openvino_backend.py"
                   --bench $<TARGET_FILE:vitedge-bench> --classify $<TARGET_FILE:classify>
                   --lib $<TARGET_FILE:vitedge_runner> --workdir "${CMAKE_CURRENT_BINARY_DIR}/test-openvino")
  set_tests_properties(cpp_openvino PROPERTIES
                       ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1" TIMEOUT 900)
endif()
