# The CUDA toolkit (nvcc) a CUDA LibTorch's CMake needs, checked before and after
# find_package(Torch), so that a cluster without it gets a CPU-only build that says so
# loudly (SFT_CUDA=AUTO) or an error naming nvcc (SFT_CUDA=ON), never a silent CPU build
# nor Torch's own "Your installed Caffe2 version uses CUDA but I cannot find the CUDA
# libraries".
#
# Why the stub works: Torch's Caffe2/public/cuda.cmake, which looks for the toolkit with
# FindCUDA and stops without one (or with an nvcc older than 12.6), begins with an include
# guard, `if(TARGET torch::cudart) return()`. When sft will not compile CUDA (SFT_CUDA=OFF,
# or AUTO without a usable nvcc), sft_cuda_before_torch() defines torch::cudart itself, as
# an empty interface target: Torch's CMake then never looks for the toolkit, and the torch
# target still links libtorch_cuda.so, whose CUDA libraries come with the LibTorch (pip
# wheel, libtorch zip), so the binary runs wherever that LibTorch loads.

# nvcc where Torch's FindCUDA looks for it: $CUDA_NVCC_EXECUTABLE, CUDA_TOOLKIT_ROOT_DIR,
# $CUDA_TOOLKIT_ROOT, $CUDA_PATH, $CUDA_BIN_PATH, then PATH, the system prefixes' bin,
# <prefix>/cuda/bin and /opt/cuda/bin. Sets SFT_NVCC ("" if none) and SFT_NVCC_VERSION.
function(sft_find_nvcc)
  set(nvcc "")
  if(DEFINED ENV{CUDA_NVCC_EXECUTABLE})
    set(nvcc "$ENV{CUDA_NVCC_EXECUTABLE}")
  else()
    find_program(_sft_nvcc NAMES nvcc PATHS ${CUDA_TOOLKIT_ROOT_DIR} ENV CUDA_TOOLKIT_ROOT ENV CUDA_PATH ENV CUDA_BIN_PATH
                 PATH_SUFFIXES bin bin64 NO_DEFAULT_PATH)
    find_program(_sft_nvcc NAMES nvcc PATHS /opt/cuda/bin PATH_SUFFIXES cuda/bin)
    if(_sft_nvcc)
      set(nvcc "${_sft_nvcc}")
    endif()
    unset(_sft_nvcc CACHE)
  endif()
  set(version "")
  if(nvcc)
    execute_process(COMMAND "${nvcc}" --version OUTPUT_VARIABLE out ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND out MATCHES "release ([0-9]+)\\.([0-9]+)")
      set(version "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    endif()
  endif()
  set(SFT_NVCC "${nvcc}" PARENT_SCOPE)
  set(SFT_NVCC_VERSION "${version}" PARENT_SCOPE)
endfunction()

# Reads SFT_CUDA (AUTO, ON or OFF; any CMake boolean for the last two), finds nvcc and, when
# sft will not compile CUDA, stubs Torch's CUDA lookup. Sets SFT_CUDA_REQUEST (AUTO|ON|OFF),
# SFT_NVCC_USABLE and SFT_NVCC_PROBLEM (why not usable, for messages).
macro(sft_cuda_before_torch)
  string(TOUPPER "${SFT_CUDA}" SFT_CUDA_REQUEST)
  if(NOT SFT_CUDA_REQUEST STREQUAL "AUTO")
    if(SFT_CUDA)
      set(SFT_CUDA_REQUEST ON)
    else()
      set(SFT_CUDA_REQUEST OFF)
    endif()
  endif()
  sft_find_nvcc()
  sft_locate_torch(_sft_torch_root)
  set(_sft_torch_cuda_early "")
  if(_sft_torch_root)
    sft_torch_cuda_version("${_sft_torch_root}" _sft_torch_cuda_early)
  endif()
  string(REGEX MATCH "^[0-9]+" _sft_torch_major_early "${_sft_torch_cuda_early}")
  string(REGEX MATCH "^[0-9]+" _sft_nvcc_major "${SFT_NVCC_VERSION}")
  set(SFT_NVCC_USABLE OFF)
  set(SFT_NVCC_PROBLEM "")
  if(NOT SFT_NVCC)
    set(SFT_NVCC_PROBLEM "no nvcc was found (looked on PATH, in CUDA_TOOLKIT_ROOT_DIR, $CUDA_PATH, /usr/local/cuda/bin and /opt/cuda/bin)")
  elseif(NOT SFT_NVCC_VERSION)
    set(SFT_NVCC_PROBLEM "${SFT_NVCC} --version did not say which CUDA it is")
  elseif(SFT_NVCC_VERSION VERSION_LESS 12.6)
    set(SFT_NVCC_PROBLEM "nvcc at ${SFT_NVCC} is CUDA ${SFT_NVCC_VERSION}, older than the 12.6 that LibTorch's CMake requires")
  elseif(_sft_torch_major_early AND NOT _sft_nvcc_major STREQUAL _sft_torch_major_early)
    # sft would compile against this CUDA's headers and link its runtime beside LibTorch's.
    string(CONCAT SFT_NVCC_PROBLEM "nvcc at ${SFT_NVCC} is CUDA ${SFT_NVCC_VERSION}, another major release than "
                  "the CUDA ${_sft_torch_cuda_early} this LibTorch is built for")
  else()
    set(SFT_NVCC_USABLE ON)
    message(STATUS "sft: nvcc ${SFT_NVCC} (CUDA ${SFT_NVCC_VERSION})")
  endif()
  if(SFT_NVCC_PROBLEM)
    message(STATUS "sft: ${SFT_NVCC_PROBLEM}")
  endif()
  set(_sft_torch_cuda_stubbed OFF)
  if((SFT_CUDA_REQUEST STREQUAL "OFF" OR NOT SFT_NVCC_USABLE) AND NOT TARGET torch::cudart)
    add_library(torch::cudart INTERFACE IMPORTED)
    set(_sft_torch_cuda_stubbed ON)
  endif()
endmacro()

# The folder TorchConfig.cmake will be found in, before find_package(Torch) looks: Torch_DIR,
# else CMAKE_PREFIX_PATH (the variable, then the environment's, as cluster modules set it)
# holding Torch/TorchConfig.cmake (a pip torch's share/cmake) or share/cmake/Torch (a
# libtorch zip's root). Sets ${out} to LibTorch's root (TORCH_INSTALL_PREFIX), or "".
function(sft_locate_torch out)
  set(root "")
  if(Torch_DIR AND EXISTS "${Torch_DIR}/TorchConfig.cmake")
    get_filename_component(root "${Torch_DIR}/../../.." ABSOLUTE)
  else()
    set(prefixes ${CMAKE_PREFIX_PATH})
    if(DEFINED ENV{CMAKE_PREFIX_PATH})
      string(REPLACE ":" ";" env_prefixes "$ENV{CMAKE_PREFIX_PATH}")
      list(APPEND prefixes ${env_prefixes})
    endif()
    foreach(p IN LISTS prefixes)
      if(EXISTS "${p}/Torch/TorchConfig.cmake")
        get_filename_component(root "${p}/../.." ABSOLUTE)
        break()
      elseif(EXISTS "${p}/share/cmake/Torch/TorchConfig.cmake")
        get_filename_component(root "${p}" ABSOLUTE)
        break()
      endif()
    endforeach()
  endif()
  set(${out} "${root}" PARENT_SCOPE)
endfunction()

# The CUDA version the LibTorch at `root` was built for ("13.0"; "" if it cannot tell): a
# pip torch's version.py (cuda = '13.0'), else a libtorch zip's build-version (2.x.y+cu130).
function(sft_torch_cuda_version root out)
  set(v "")
  if(EXISTS "${root}/version.py")
    file(STRINGS "${root}/version.py" line REGEX "^cuda[^=]*= *'[0-9.]+'")
    if(line MATCHES "'([0-9]+\\.[0-9]+)")
      set(v "${CMAKE_MATCH_1}")
    endif()
  elseif(EXISTS "${root}/build-version")
    file(STRINGS "${root}/build-version" line LIMIT_COUNT 1)
    if(line MATCHES "\\+cu([0-9]+)([0-9])$")
      set(v "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    endif()
  endif()
  set(${out} "${v}" PARENT_SCOPE)
endfunction()

# After find_package(Torch): decides SFT_CUDA_ENABLED, with the warning or error.
macro(sft_cuda_after_torch)
  set(_sft_torch_has_cuda OFF)
  if(CAFFE2_USE_CUDA)  # set by a CUDA LibTorch's Caffe2Config, stubbed or not
    set(_sft_torch_has_cuda ON)
  endif()
  sft_torch_cuda_version("${TORCH_INSTALL_PREFIX}" SFT_TORCH_CUDA_VERSION)
  set(_sft_for "")
  set(_sft_built_for "has CUDA")
  if(SFT_TORCH_CUDA_VERSION)
    string(REGEX MATCH "^[0-9]+" _sft_torch_cuda_major "${SFT_TORCH_CUDA_VERSION}")
    set(_sft_for " (CUDA ${_sft_torch_cuda_major} for this LibTorch)")
    set(_sft_built_for "is built for CUDA ${SFT_TORCH_CUDA_VERSION}")
  endif()
  string(CONCAT _sft_fix "put the bin folder of a CUDA toolkit >= 12.6${_sft_for} on PATH (e.g. `module load cuda`, "
                "or `export PATH=/usr/local/cuda/bin:$PATH`) and configure again")
  set(SFT_CUDA_ENABLED OFF)
  if(SFT_CUDA_REQUEST STREQUAL "ON")
    if(NOT _sft_torch_has_cuda)
      message(FATAL_ERROR "SFT_CUDA=ON but the LibTorch at ${TORCH_INSTALL_PREFIX} has no CUDA")
    endif()
    if(NOT SFT_NVCC_USABLE)
      message(FATAL_ERROR "SFT_CUDA=ON, but ${SFT_NVCC_PROBLEM}: compiling sft's CUDA code against LibTorch "
                          "${Torch_VERSION} needs the CUDA toolkit's nvcc. To build for GPUs, ${_sft_fix}. "
                          "For a CPU-only build, configure with -DSFT_CUDA=OFF.")
    endif()
    set(SFT_CUDA_ENABLED ON)
  elseif(SFT_CUDA_REQUEST STREQUAL "AUTO")
    if(_sft_torch_has_cuda AND NOT SFT_NVCC_USABLE)
      message(WARNING "sft: the LibTorch at ${TORCH_INSTALL_PREFIX} ${_sft_built_for}, but "
                      "${SFT_NVCC_PROBLEM}. This build is CPU-ONLY (SFT_CUDA=OFF): sft will not use a GPU. To build for "
                      "GPUs, ${_sft_fix}. -DSFT_CUDA=ON turns this warning into an error; -DSFT_CUDA=OFF silences it.")
    elseif(_sft_torch_has_cuda)
      set(SFT_CUDA_ENABLED ON)
    endif()
  endif()
  # LibTorch found somewhere sft_locate_torch did not look: its CUDA major checked only now.
  if(SFT_CUDA_ENABLED AND SFT_TORCH_CUDA_VERSION)
    string(REGEX MATCH "^[0-9]+" _sft_nvcc_major "${SFT_NVCC_VERSION}")
    if(NOT _sft_nvcc_major STREQUAL _sft_torch_cuda_major)
      message(FATAL_ERROR "nvcc at ${SFT_NVCC} is CUDA ${SFT_NVCC_VERSION}, another major release than the CUDA "
                          "${SFT_TORCH_CUDA_VERSION} the LibTorch at ${TORCH_INSTALL_PREFIX} is built for. To build for "
                          "GPUs, ${_sft_fix}; or use a LibTorch built for CUDA ${_sft_nvcc_major} (README, \"On a "
                          "cluster\"). For a CPU-only build, configure with -DSFT_CUDA=OFF.")
    endif()
  endif()
endmacro()
