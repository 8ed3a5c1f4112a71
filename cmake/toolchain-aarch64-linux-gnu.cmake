# Cross build for 64-bit Arm Linux with Debian's cross compilers (gcc-aarch64-linux-gnu,
# g++-aarch64-linux-gnu); tests run through qemu user-mode emulation (qemu-user).
#
#   cmake -S . -B build/aarch64 -G Ninja \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake -DMEGATAX_CUDA=OFF
#   ctest --test-dir build/aarch64        # each test binary runs under qemu-aarch64
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(MEGATAX_AARCH64_TRIPLE "aarch64-linux-gnu")
set(MEGATAX_AARCH64_SYSROOT "/usr/${MEGATAX_AARCH64_TRIPLE}")

set(CMAKE_C_COMPILER "${MEGATAX_AARCH64_TRIPLE}-gcc")
set(CMAKE_CXX_COMPILER "${MEGATAX_AARCH64_TRIPLE}-g++")

# Libraries and headers of the target come from the cross sysroot only; programs (ccache, qemu)
# from the host.
set(CMAKE_FIND_ROOT_PATH "${MEGATAX_AARCH64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# try_run, gtest_discover_tests and ctest run target programs through qemu; -L points its
# dynamic loader at the cross sysroot's libc and libstdc++.
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-L;${MEGATAX_AARCH64_SYSROOT}")
