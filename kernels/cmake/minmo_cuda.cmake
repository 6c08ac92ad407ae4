# Decides whether the CUDA kernels are built (MINMO_CUDA: ON / OFF / AUTO = when a CUDA compiler is
# found) and enables CUDA with the default architectures sm_87 (Jetson Orin) and sm_90 (H100 /
# H200). Sets MINMO_CUDA_ENABLED in the including scope. Included by the top-level project and by
# kernels/ built standalone.
set(MINMO_CUDA_ENABLED OFF)
if(MINMO_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(MINMO_CUDA_ENABLED ON)
  endif()
elseif(MINMO_CUDA)
  set(MINMO_CUDA_ENABLED ON)
endif()
if(MINMO_CUDA_ENABLED)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES "87;90")
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  message(STATUS "minmo: CUDA kernels for architectures ${CMAKE_CUDA_ARCHITECTURES}")
endif()
