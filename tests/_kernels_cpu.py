"""ctypes access to the speech-path kernels' CPU twins in libminmo_kernels.so (the C-ABI library of
kernels/, built as a standalone CMake project by kernels/python/minmo_kernels_ctypes.py, shared
with tests/test_kernels.py). Their signatures (a struct passed by value, int32 arguments) are
declared here."""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")
sys.path.insert(0, os.path.join(KERNELS, "python"))
from minmo_kernels_ctypes import HiftNsf, HiftWindow, RasParams, RasState, SamplingParams  # noqa: E402,F401  (re-exported)


def load_cpu_kernels() -> ctypes.CDLL:
    """Builds (once; incremental afterwards) and loads libminmo_kernels.so, CPU twins only."""
    import minmo_kernels_ctypes as mk

    L = ctypes.CDLL(str(mk.build(os.path.join(ROOT, "build", "kernels-py"))))
    i64, f32, i32, vp = ctypes.c_int64, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p
    sig = {
        "minmo_fsmn_attn_f32_cpu": [vp, vp, vp, vp, i64, i64, i64, i64, i64],
        "minmo_flow_euler_cfg_f32_cpu": [vp, vp, vp, i64, f32, f32],
        "minmo_hift_istft_f32_cpu": [vp, vp, i64, i32, i32, f32],
        "minmo_hamming_crossfade_f32_cpu": [vp, vp, i64],
        "minmo_conv1d_im2col_f32_cpu": [vp, vp, vp, i64, i64, i64, i64, i32, i32, i32, i32, i32, f32],
        "minmo_conv_transpose1d_col2im_f32_cpu": [vp, vp, vp, i64, i64, i32, i32, i32, i32],
        "minmo_hift_stft_f32_cpu": [vp, vp, i64, i32, i32],
        "minmo_axpby_f32_cpu": [vp, vp, i64, f32, f32],
        "minmo_hift_phase_f64_cpu": [vp, ctypes.POINTER(HiftWindow), vp, vp, i64, vp, vp, i64, HiftNsf],
        "minmo_hift_source_f32_cpu": [vp, vp, ctypes.POINTER(HiftWindow), vp, vp, vp, i64, HiftNsf],
        "minmo_counter_normal_f32_cpu": [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, i64, vp],
        "minmo_sample_ras_f32_cpu": [vp, i64, vp, i64, vp, i64, SamplingParams, ctypes.POINTER(ctypes.c_int32)],
        "minmo_philox4x32_cpu": [ctypes.c_uint64, ctypes.c_uint64, vp, vp],
        "minmo_sample_ras_loop_f32_cpu": [vp, i64, vp, i64, ctypes.POINTER(RasState), vp, RasParams,
                                          ctypes.POINTER(ctypes.c_int32)],
        "minmo_sample_ras_loop_bf16_cpu": [vp, i64, vp, i64, ctypes.POINTER(RasState), vp, RasParams,
                                           ctypes.POINTER(ctypes.c_int32)],
        "minmo_embedding_row_f32_cpu": [vp, i64, i64, vp, vp],
        "minmo_rel_attention_f32_cpu": [vp, i64, vp, vp, i64, vp, vp, i64, vp, i64, vp, vp, vp, i64, i64, i32, i32,
                                        f32],
        "minmo_rel_pos_enc_f32_cpu": [vp, i64, i64, vp],
        "minmo_layernorm_f32_cpu": [vp, i64, vp, vp, vp, i64, i64, i64, f32, f32],
        "minmo_silu_rows_f32_cpu": [vp, i64, i64, i64],
        "minmo_embedding_rows_f32_cpu": [vp, vp, vp, i64, i64, i64, i64],
        "minmo_repeat_rows_f32_cpu": [vp, i64, vp, i64, i64, i32, vp],
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
