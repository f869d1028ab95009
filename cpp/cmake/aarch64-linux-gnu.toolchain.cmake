# CMake toolchain file: cross-build the vitedge C++ runner for aarch64 (arm64) Linux on an x86-64 Debian host.
#
#   cmake -S . -B build/arm64 -DCMAKE_BUILD_TYPE=Release \
#         -DCMAKE_TOOLCHAIN_FILE=cpp/cmake/aarch64-linux-gnu.toolchain.cmake \
#         -DVITEDGE_AARCH64_DEPS=$PWD/build/arm64-deps \
#         -DTorch_DIR=$PWD/build/arm64-deps/wheel/torch/share/cmake/Torch \
#         -Dnlohmann_json_DIR=$PWD/build/arm64-deps/host-headers/share/cmake/nlohmann_json \
#         -DSTB_INCLUDE_DIR=$PWD/build/arm64-deps/host-headers/include \
#         -DVITEDGE_PYTHON= \
#         -DVITEDGE_WITH_EXECUTORCH=ON \
#         -Dexecutorch_DIR=$PWD/build/arm64-deps/et-wheel/unpacked/executorch/share/cmake
#
# scripts/arm64_qemu.sh prepares VITEDGE_AARCH64_DEPS and runs exactly this; it holds:
#   wheel/         the unpacked torch aarch64 manylinux wheel (PyPI): arm64 libtorch in wheel/torch,
#                  its bundled OpenBLAS / Arm Compute Library / libgomp / libgfortran in wheel/torch.libs
#   et-wheel/      the executorch aarch64 manylinux wheel (PyPI), unpacked in et-wheel/unpacked: the ExecuTorch C++
#                  runtime (executorch/lib/libexecutorch*.so: runtime, XNNPACK delegate, CPU kernels, thread pool),
#                  its headers and CMake config (executorch/share/cmake, passed as executorch_DIR; the config
#                  locates its files relative to itself, so the find-root settings below do not apply to it)
#   sysroot/       Debian arm64 packages unpacked (dpkg-deb -x): zlib1g (libgfortran in torch.libs needs
#                  libz.so.1; the cross toolchain lacks it), libssl-dev + libssl3 (the runner's SHA-256 uses
#                  OpenSSL's libcrypto)
#   host-headers/  header-only host packages (libstb-dev, nlohmann-json3-dev) re-rooted here, so the cross
#                  compiler never sees the host's /usr/include (x86 glibc headers)
#
# Compilers: Debian's g++-aarch64-linux-gnu (its sysroot is /usr/aarch64-linux-gnu).
# Executables run through CMAKE_CROSSCOMPILING_EMULATOR (qemu-user's qemu-aarch64), so `ctest` works on the host
# for tests registered as add_test(COMMAND <target>). QEMU proves behaviour and accuracy, not speed.

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(VITEDGE_AARCH64_TRIPLE aarch64-linux-gnu)
set(VITEDGE_AARCH64_SYSROOT /usr/${VITEDGE_AARCH64_TRIPLE})

# Toolchain files are re-read for every try_compile: keep the deps folder in the environment as well.
if(NOT VITEDGE_AARCH64_DEPS AND DEFINED ENV{VITEDGE_AARCH64_DEPS})
  set(VITEDGE_AARCH64_DEPS "$ENV{VITEDGE_AARCH64_DEPS}")
endif()
if(NOT VITEDGE_AARCH64_DEPS)
  message(FATAL_ERROR "aarch64 toolchain: set -DVITEDGE_AARCH64_DEPS=<folder with wheel/, sysroot/, host-headers/> "
                      "(scripts/arm64_qemu.sh prepares build/arm64-deps)")
endif()
set(ENV{VITEDGE_AARCH64_DEPS} "${VITEDGE_AARCH64_DEPS}")
list(APPEND CMAKE_TRYCOMPILE_PLATFORM_VARIABLES VITEDGE_AARCH64_DEPS)

set(CMAKE_C_COMPILER ${VITEDGE_AARCH64_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${VITEDGE_AARCH64_TRIPLE}-g++)

# Search arm64 libraries, headers and CMake packages only inside these roots; host programs outside.
set(CMAKE_FIND_ROOT_PATH
    "${VITEDGE_AARCH64_SYSROOT}"
    "${VITEDGE_AARCH64_DEPS}/wheel"
    "${VITEDGE_AARCH64_DEPS}/sysroot"
    "${VITEDGE_AARCH64_DEPS}/host-headers")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Debian multiarch layout inside sysroot/: libraries in usr/lib/aarch64-linux-gnu, configuration headers
# (openssl/configuration.h) in usr/include/aarch64-linux-gnu, which native Debian gcc searches by default.
set(CMAKE_LIBRARY_ARCHITECTURE ${VITEDGE_AARCH64_TRIPLE})
set(CMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES "${VITEDGE_AARCH64_DEPS}/sysroot/usr/include/${VITEDGE_AARCH64_TRIPLE}")
set(CMAKE_C_STANDARD_INCLUDE_DIRECTORIES "${VITEDGE_AARCH64_DEPS}/sysroot/usr/include/${VITEDGE_AARCH64_TRIPLE}")
# pkg-config (FindOpenSSL asks it first) must read the arm64 .pc files, not the host's.
set(ENV{PKG_CONFIG_LIBDIR} "${VITEDGE_AARCH64_DEPS}/sysroot/usr/lib/${VITEDGE_AARCH64_TRIPLE}/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${VITEDGE_AARCH64_DEPS}/sysroot")

# libtorch_cpu.so needs the wheel's bundled libraries (torch.libs) and those need libz: let the linker resolve
# them without adding them to the executables' runpath (libtorch's own $ORIGIN runpath finds torch.libs at run time).
# Likewise the ExecuTorch libraries need each other (libexecutorch_backend_xnnpack.so -> libexecutorch_threadpool.so):
# a cross linker does not follow their $ORIGIN runpath, so executables linking libvitedge.so need the folder here.
set(_vitedge_rpath_link
    "-Wl,-rpath-link,${VITEDGE_AARCH64_DEPS}/wheel/torch/lib"
    "-Wl,-rpath-link,${VITEDGE_AARCH64_DEPS}/wheel/torch.libs"
    "-Wl,-rpath-link,${VITEDGE_AARCH64_DEPS}/et-wheel/unpacked/executorch/lib"
    "-Wl,-rpath-link,${VITEDGE_AARCH64_DEPS}/sysroot/lib/${VITEDGE_AARCH64_TRIPLE}"
    "-Wl,-rpath-link,${VITEDGE_AARCH64_DEPS}/sysroot/usr/lib/${VITEDGE_AARCH64_TRIPLE}")
string(JOIN " " _vitedge_rpath_link ${_vitedge_rpath_link})
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_vitedge_rpath_link}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_vitedge_rpath_link}")

# Run target executables (ctest, try_run) under qemu-user with the cross sysroot's loader and libc; zlib from
# the unpacked Debian packages (set in the guest's environment only, via -E).
find_program(VITEDGE_QEMU_AARCH64 qemu-aarch64)
if(VITEDGE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      "${VITEDGE_QEMU_AARCH64};-L;${VITEDGE_AARCH64_SYSROOT};-E;LD_LIBRARY_PATH=${VITEDGE_AARCH64_DEPS}/sysroot/lib/${VITEDGE_AARCH64_TRIPLE}:${VITEDGE_AARCH64_DEPS}/sysroot/usr/lib/${VITEDGE_AARCH64_TRIPLE}")
endif()
