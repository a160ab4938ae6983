# The nccl.h that src/dist/context.cpp compiles against must be LibTorch's own NCCL version:
# ProcessGroupNCCL.hpp holds NCCL's ncclConfig_t by value, so a header of another NCCL
# changes the layout of a class LibTorch compiled (an ABI hazard that shows only at run time).
#
# LibTorch's NCCL version, in this order (the first that answers):
#  1. LibTorch itself: a small program linked to libtorch_cuda.so prints
#     torch::cuda::nccl::version(), which is the NCCL_MAJOR/MINOR/PATCH of the nccl.h
#     LibTorch was compiled with (torch/csrc/cuda/nccl.cpp; torch.cuda.nccl.version() in Python).
#  2. a pip torch's NCCL wheel: site-packages/nvidia_nccl_cu*-X.Y.Z.dist-info.
#  3. the "NCCL version X.Y.Z+cudaA.B" string inside the NCCL library shipped with LibTorch
#     (site-packages/nvidia/nccl/lib, or libnccl* in LibTorch's lib folder).
# The header: SFT_NCCL_INCLUDE_DIR when given, else a pip torch's nvidia/nccl/include, else
# what the compiler would find (the CUDA toolkit's include folder, /usr/local/include,
# /usr/include). Its NCCL_MAJOR.NCCL_MINOR must equal LibTorch's; a different patch
# level only notes it (NCCL keeps its structs within a minor release).
# Sets SFT_NCCL_INCLUDE, the folder context.cpp gets first with -I.

set(SFT_NCCL_INCLUDE_DIR "" CACHE PATH
    "folder holding the nccl.h of LibTorch's NCCL version (default: a pip torch's site-packages/nvidia/nccl/include)")

# "X.Y.Z" from a nccl.h, or "".
function(sft_nccl_header_version header out)
  file(STRINGS "${header}" lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  set(v "")
  foreach(part MAJOR MINOR PATCH)
    set(n "")
    foreach(line IN LISTS lines)
      if(line MATCHES "^#define NCCL_${part} +([0-9]+)")
        set(n "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    if(n STREQUAL "")
      set(${out} "" PARENT_SCOPE)
      return()
    endif()
    list(APPEND v "${n}")
  endforeach()
  list(JOIN v "." v)
  set(${out} "${v}" PARENT_SCOPE)
endfunction()

# LibTorch's NCCL: sets ${out} ("X.Y.Z" or "") and ${how} (how it was determined).
function(sft_torch_nccl_version out how)
  get_filename_component(site "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
  # 1. Ask LibTorch.
  set(cuda_lib "${TORCH_INSTALL_PREFIX}/lib/libtorch_cuda.so")
  if(EXISTS "${cuda_lib}")
    set(src "${CMAKE_BINARY_DIR}/sft_nccl_version/main.cpp")
    file(WRITE "${src}" "#include <cstdint>\n#include <cstdio>\n"
         "namespace torch::cuda::nccl { std::uint64_t version(); }\n"
         "int main() {\n  const std::uint64_t v = torch::cuda::nccl::version();\n"
         "  std::printf(\"%llu.%llu.%llu\", (unsigned long long)(v >> 32), (unsigned long long)((v >> 16) & 0xffff),"
         " (unsigned long long)(v & 0xffff));\n}\n")
    try_run(_sft_nccl_run_rc _sft_nccl_compiled "${CMAKE_BINARY_DIR}/sft_nccl_version" "${src}"
            LINK_LIBRARIES "${cuda_lib}" LINK_OPTIONS "LINKER:-rpath-link,${_sft_rpath_link}"
            RUN_OUTPUT_VARIABLE printed)
    set(ok OFF)
    if(_sft_nccl_compiled AND _sft_nccl_run_rc EQUAL 0)
      set(ok ON)
    endif()
    unset(_sft_nccl_run_rc CACHE)
    unset(_sft_nccl_compiled CACHE)
    # 0.0.0: LibTorch without NCCL; 1.0.0: with an NCCL too old to say.
    if(ok AND printed MATCHES "^([0-9]+)\\.[0-9]+\\.[0-9]+$")
      if(CMAKE_MATCH_1 GREATER 1)
        set(${out} "${printed}" PARENT_SCOPE)
        set(${how} "torch::cuda::nccl::version() of ${cuda_lib}" PARENT_SCOPE)
        return()
      endif()
    endif()
  endif()
  # 2. A pip torch's NCCL wheel.
  file(GLOB infos LIST_DIRECTORIES true "${site}/nvidia_nccl_cu*-*.dist-info")
  foreach(info IN LISTS infos)
    get_filename_component(name "${info}" NAME)
    if(name MATCHES "-([0-9]+\\.[0-9]+\\.[0-9]+)")
      get_filename_component(name "${info}" ABSOLUTE)
      set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
      set(${how} "the pip wheel ${name}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  # 3. The NCCL library that comes with LibTorch.
  file(GLOB libs "${site}/nvidia/nccl/lib/libnccl.so*" "${TORCH_INSTALL_PREFIX}/lib/libnccl*.so*")
  foreach(lib IN LISTS libs)
    file(STRINGS "${lib}" found REGEX "^NCCL version [0-9]+\\.[0-9]+\\.[0-9]+\\+cuda[0-9.]+$" LIMIT_COUNT 1)
    if(found MATCHES "([0-9]+\\.[0-9]+\\.[0-9]+)")
      set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
      set(${how} "the version string in ${lib}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
  set(${how} "" PARENT_SCOPE)
endfunction()

function(sft_check_nccl_header)
  # The header.
  set(dir "")
  set(chosen_by "")
  if(SFT_NCCL_INCLUDE_DIR)
    get_filename_component(dir "${SFT_NCCL_INCLUDE_DIR}" ABSOLUTE)
    if(NOT EXISTS "${dir}/nccl.h")
      message(FATAL_ERROR "SFT_NCCL_INCLUDE_DIR=${SFT_NCCL_INCLUDE_DIR} holds no nccl.h")
    endif()
    set(chosen_by "SFT_NCCL_INCLUDE_DIR")
  elseif(EXISTS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include/nccl.h")
    get_filename_component(dir "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include" ABSOLUTE)
    set(chosen_by "the pip torch's NCCL wheel")
  endif()
  if(NOT dir)
    # What the compiler would find: the CUDA toolkit's include folder (-isystem), then the
    # system's. sft then puts that folder first with -I, so the header checked is the one used.
    find_path(_sft_nccl_dir nccl.h PATHS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/include /usr/include NO_DEFAULT_PATH)
    if(_sft_nccl_dir)
      set(dir "${_sft_nccl_dir}")
      set(chosen_by "the compiler's search path; set SFT_NCCL_INCLUDE_DIR to choose another")
    endif()
    unset(_sft_nccl_dir CACHE)
  endif()
  if(NOT dir)
    message(FATAL_ERROR "no nccl.h found for src/dist/context.cpp (ProcessGroupNCCL.hpp includes it): set "
                        "-DSFT_NCCL_INCLUDE_DIR to the include folder of LibTorch's NCCL version (for a pip torch: "
                        "pip install nvidia-nccl-cuXX==<that version>, then site-packages/nvidia/nccl/include)")
  endif()
  sft_nccl_header_version("${dir}/nccl.h" header_version)
  sft_torch_nccl_version(torch_version how)
  if(NOT header_version)
    message(FATAL_ERROR "${dir}/nccl.h (from ${chosen_by}) defines no NCCL_MAJOR/NCCL_MINOR/NCCL_PATCH; point "
                        "-DSFT_NCCL_INCLUDE_DIR at the include folder of an NCCL release")
  endif()
  if(NOT torch_version)
    message(WARNING "sft: could not tell which NCCL LibTorch ${Torch_VERSION} was built with (no libtorch_cuda.so "
                    "that answers torch::cuda::nccl::version(), no nvidia_nccl wheel, no libnccl beside it); using "
                    "${dir}/nccl.h (NCCL ${header_version}, from ${chosen_by}) unchecked: it must be LibTorch's NCCL "
                    "major.minor, or ProcessGroupNCCL's layout differs from LibTorch's")
  else()
    string(REGEX MATCH "^[0-9]+\\.[0-9]+" header_mm "${header_version}")
    string(REGEX MATCH "^[0-9]+\\.[0-9]+" torch_mm "${torch_version}")
    if(NOT header_mm STREQUAL torch_mm)
      message(FATAL_ERROR "${dir}/nccl.h (from ${chosen_by}) is NCCL ${header_version}, but LibTorch ${Torch_VERSION} "
                          "was built with NCCL ${torch_version} (${how}): ProcessGroupNCCL holds NCCL's ncclConfig_t by "
                          "value, so a header of another NCCL release gives sft a different class layout than "
                          "LibTorch's. Set -DSFT_NCCL_INCLUDE_DIR to the include folder of NCCL ${torch_mm}.x (for a "
                          "pip torch: pip install the nvidia-nccl-cuXX==${torch_version} wheel, then its "
                          "site-packages/nvidia/nccl/include).")
    endif()
    if(NOT header_version STREQUAL torch_version)
      message(STATUS "sft: nccl.h is NCCL ${header_version}, LibTorch's is ${torch_version}: same ${torch_mm} release")
    endif()
    message(STATUS "sft: NCCL header ${dir}/nccl.h (NCCL ${header_version}, from ${chosen_by}) matches LibTorch's NCCL "
                   "${torch_version} (${how})")
  endif()
  set(SFT_NCCL_INCLUDE "${dir}" PARENT_SCOPE)
endfunction()
