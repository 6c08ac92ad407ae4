"""ctypes access to the kernels' CPU twins (kernels/cpu/*.cc), compiled once per test session into
a shared library, so their tests run without CUDA and without the pybind module."""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")

F32P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
I32P = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")


class SamplingParams(ctypes.Structure):
    """minmo_sampling_params (kernels/include/minmo_kernels/sampling.h)."""
    _fields_ = [("top_k", ctypes.c_int32), ("top_p", ctypes.c_float), ("temperature", ctypes.c_float),
                ("ras_window", ctypes.c_int32), ("ras_tau", ctypes.c_float), ("force_id", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("counter", ctypes.c_uint64)]


def build_cpu_kernels(out_dir: str) -> ctypes.CDLL:
    """Compile every kernels/cpu/*.cc into out_dir/libminmo_kernels_cpu.so and load it."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler (set CXX) to build the kernels' CPU twins")
    lib = os.path.join(out_dir, "libminmo_kernels_cpu.so")
    srcs = sorted(glob.glob(os.path.join(KERNELS, "cpu", "*.cc")))
    subprocess.run([cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-fopenmp", "-Wall", "-Wextra",
                    "-I" + os.path.join(KERNELS, "include"), *srcs, "-o", lib], check=True)
    L = ctypes.CDLL(lib)
    i64, f32, i32, vp = ctypes.c_int64, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p
    sig = {
        "minmo_fsmn_attn_f32_cpu": [vp, vp, vp, vp, i64, i64, i64, i64, i64],
        "minmo_flow_euler_cfg_f32_cpu": [vp, vp, vp, i64, f32, f32],
        "minmo_hift_istft_f32_cpu": [vp, vp, i64, i32, i32, f32],
        "minmo_hamming_crossfade_f32_cpu": [vp, vp, i64],
        "minmo_sample_ras_f32_cpu": [vp, i64, vp, i64, vp, i64, SamplingParams, ctypes.POINTER(ctypes.c_int32)],
        "minmo_philox4x32_cpu": [ctypes.c_uint64, ctypes.c_uint64, vp, vp],
    }
    for name, args in sig.items():
        fn = getattr(L, name)
        fn.argtypes = args
        fn.restype = ctypes.c_int if name != "minmo_philox4x32_cpu" else None
    return L


def ptr(a):
    """Data pointer of a C-contiguous numpy array (None passes a null pointer)."""
    if a is None:
        return None
    assert a.flags.c_contiguous
    return a.ctypes.data
