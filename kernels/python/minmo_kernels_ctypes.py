"""ctypes binding of libminmo_kernels.so, the C ABI of kernels/include/minmo_kernels.h.

Used by tests/test_kernels.py (CPU twins on numpy arrays) and bench/gpu/decode_bench.py (CUDA
kernels on torch tensors). Pointers are passed as integers (``array.ctypes.data``,
``tensor.data_ptr()``); a non-zero status raises KernelError. ``build()`` configures and builds
the standalone CMake project in kernels/ (C++ compiler + OpenMP; CUDA optional)."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

KERNELS_DIR = Path(__file__).resolve().parent.parent

_SIGNATURES = {
    "rmsnorm_residual_f32": "ppppqqf",
    "rmsnorm_residual_bf16": "ppppqqf",
    "silu_mul_bf16": "ppqq",
    "silu_mul_f32": "ppqq",
    "gemv_bf16": "pppqqq",
    "gemv_int8": "ppppqqq",
    "gemv_int4": "pppppqqqq",
    "gemv_fp8": "ppppqqq",
    "gemv_silu_bf16": "pppqqq",
    "gemv_silu_int8": "ppppqqq",
    "gemv_silu_int4": "pppppqqqq",
    "gemv_silu_fp8": "ppppqqq",
    "qkv_rope_append_bf16": "ppppppqqqqqf",
    "decode_attention_bf16": "ppppppqqqqqf",
    "prefill_attention_bf16": "pppppqqqqqf",
    "decode_attention_fused_bf16": "pppppppqqqqqf",
    # fused decode-step products (minmo_kernels/fused.h)
    "gemv_norm_bf16": "ppppppqqf",
    "gemv_norm_int8": "pppppppqqf",
    "gemv_norm_int4": "ppppppppqqqf",
    "gemv_norm_fp8": "pppppppqqf",
    "gemv_qkv_rope_bf16": "pppppppqqqqqf",
    "gemv_qkv_rope_int8": "ppppppppqqqqqf",
    "gemv_qkv_rope_int4": "pppppppppqqqqqqf",
    "gemv_qkv_rope_fp8": "ppppppppqqqqqf",
    # speech kernels
    "fsmn_attn_f32": "ppppqqqqq",
    "flow_euler_cfg_f32": "pppqff",
    "hift_istft_f32": "ppqiif",
    "hamming_crossfade_f32": "ppq",
    "sample_ras_f32": "pqpqpqSp",
    "sample_ras_loop_f32": "pqpqppRp",
    "sample_ras_loop_bf16": "pqpqppRp",
    "embedding_row_f32": "pqqpp",
    # speech encoder (norm.h, mlp.h, attention.h, conv.h)
    "layernorm_residual_bf16": "pppppqqf",
    "bias_act_bf16": "ppqqi",
    "bias_residual_bf16": "pppqq",
    "f32_to_bf16": "ppq",
    "window_attention_bf16": "ppppppqqqqqf",
    "im2col_k3s2_bf16": "ppqqqqqq",
    # HiFT filter network (hift_net.h)
    "conv1d_im2col_f32": "pppqqqqiiiiif",
    "conv_transpose1d_col2im_f32": "pppqqiiii",
    "hift_stft_f32": "ppqii",
    "axpby_f32": "ppqff",
    # flow encoder (rel_attention.h)
    "rel_attention_f32": "pqppqppqpqpppqqiif",
    "rel_pos_enc_f32": "pqqp",
    "layernorm_f32": "pqpppqqqff",
    "silu_rows_f32": "pqqq",
    "embedding_rows_f32": "pppqqqq",
    "repeat_rows_f32": "pqpqqip",
    # HiFT NSF source (hift.h)
    "hift_phase_f64": "ppppqppqN",
    "hift_source_f32": "ppppppqN",
    "counter_normal_f32": "uuuqp",
}


class SamplingParams(ctypes.Structure):
    """minmo_sampling_params (kernels/include/minmo_kernels/sampling.h), passed by value."""
    _fields_ = [("top_k", ctypes.c_int32), ("top_p", ctypes.c_float), ("temperature", ctypes.c_float),
                ("ras_window", ctypes.c_int32), ("ras_tau", ctypes.c_float), ("force_id", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("counter", ctypes.c_uint64)]


class RasParams(ctypes.Structure):
    """minmo_ras_params (sampling.h), passed by value."""
    _fields_ = [("top_k", ctypes.c_int32), ("win_size", ctypes.c_int32), ("top_p", ctypes.c_double),
                ("tau_r", ctypes.c_double)]


class RasState(ctypes.Structure):
    """minmo_ras_state (sampling.h): the loop's SplitMix64 state and history count."""
    _fields_ = [("rng", ctypes.c_uint64), ("n_history", ctypes.c_int64)]


class HiftWindow(ctypes.Structure):
    """minmo_hift_window (hift.h): a window's place in its utterance (passed by pointer)."""
    _fields_ = [("a0", ctypes.c_int64), ("e0", ctypes.c_int64), ("e1", ctypes.c_int64), ("seed", ctypes.c_uint64)]


class HiftNsf(ctypes.Structure):
    """minmo_hift_nsf (hift.h): the NSF source's constants, passed by value."""
    _fields_ = [("harmonics", ctypes.c_int32), ("samples_per_frame", ctypes.c_int32), ("sample_rate", ctypes.c_double),
                ("alpha", ctypes.c_double), ("sigma", ctypes.c_double), ("voiced_threshold", ctypes.c_double),
                ("noise_stream", ctypes.c_uint64)]


# Argument codes: p = pointer, q = int64, u = uint64, i = int32, f = float, S = SamplingParams,
# R = RasParams, N = HiftNsf, s = cudaStream_t.
_CTYPES = {"p": ctypes.c_void_p, "q": ctypes.c_int64, "u": ctypes.c_uint64, "i": ctypes.c_int32, "f": ctypes.c_float,
           "S": SamplingParams, "R": RasParams, "N": HiftNsf, "s": ctypes.c_void_p}


class KernelError(RuntimeError):
    """A kernel launch function returned a non-zero minmo_kernel_status."""

    def __init__(self, name: str, status: int, text: str):
        super().__init__(f"{name}: status {status} ({text})")
        self.status = status


class Kernels:
    """Loaded library. ``k.cpu.<name>(...)`` calls minmo_<name>_cpu, ``k.cuda.<name>(..., stream)``
    calls minmo_<name> (only when the library was built with CUDA)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.lib = ctypes.CDLL(self.path)
        self.lib.minmo_kernel_status_string.restype = ctypes.c_char_p
        self.lib.minmo_kernel_status_string.argtypes = [ctypes.c_int]
        self.lib.minmo_decode_attention_workspace_floats.restype = ctypes.c_int64
        self.lib.minmo_decode_attention_workspace_floats.argtypes = [ctypes.c_int64] * 4
        self.lib.minmo_decode_attention_fused_workspace_floats.restype = ctypes.c_int64
        self.lib.minmo_decode_attention_fused_workspace_floats.argtypes = [ctypes.c_int64] * 3
        self.has_cuda = hasattr(self.lib, "minmo_gemv_bf16")
        self.cpu = _Namespace(self, "_cpu", with_stream=False)
        self.cuda = _Namespace(self, "", with_stream=True) if self.has_cuda else None
        if self.has_cuda:
            self.lib.minmo_fp8_supported.restype = ctypes.c_int
            self.lib.minmo_fp8_supported.argtypes = []

    def status_string(self, status: int) -> str:
        return self.lib.minmo_kernel_status_string(status).decode()

    def decode_workspace_floats(self, heads_q: int, head_dim: int, max_seq: int, split_size: int) -> int:
        n = self.lib.minmo_decode_attention_workspace_floats(heads_q, head_dim, max_seq, split_size)
        if n < 0:
            raise ValueError(f"invalid decode attention workspace shape {(heads_q, head_dim, max_seq, split_size)}")
        return n

    def decode_fused_workspace_floats(self, heads_q: int, head_dim: int, max_splits: int) -> int:
        n = self.lib.minmo_decode_attention_fused_workspace_floats(heads_q, head_dim, max_splits)
        if n < 0:
            raise ValueError(f"invalid fused decode attention workspace shape {(heads_q, head_dim, max_splits)}")
        return n

    def fp8_supported(self) -> bool:
        return bool(self.has_cuda and self.lib.minmo_fp8_supported())


class _Namespace:
    def __init__(self, kernels: Kernels, suffix: str, with_stream: bool):
        self._k = kernels
        for name, sig in _SIGNATURES.items():
            fn = getattr(kernels.lib, f"minmo_{name}{suffix}")
            fn.restype = ctypes.c_int
            fn.argtypes = [_CTYPES[c] for c in sig + ("s" if with_stream else "")]
            setattr(self, name, self._wrap(f"minmo_{name}{suffix}", fn))

    def _wrap(self, full_name, fn):
        def call(*args):
            rc = fn(*args)
            if rc != 0:
                raise KernelError(full_name, rc, self._k.status_string(rc))

        call.raw = fn  # returns the status instead of raising
        call.__name__ = full_name
        return call


def build(build_dir: str | os.PathLike, cuda: bool = False, cuda_arch: str = "90", jobs: int = 2) -> Path:
    """Configures and builds kernels/ as a standalone project; returns the path of libminmo_kernels.so."""
    build_dir = Path(build_dir)
    here = Path(sys.executable).parent  # a virtual environment's cmake / ninja first
    cmake = shutil.which("cmake", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if cmake is None:
        raise RuntimeError("cmake not found (pip install cmake, or put it on PATH)")
    cfg = [cmake, "-S", str(KERNELS_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
           f"-DMINMO_CUDA={'ON' if cuda else 'OFF'}"]
    if cuda:
        cfg.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    ninja = shutil.which("ninja", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if ninja and not (build_dir / "CMakeCache.txt").exists():
        cfg += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    targets = ["minmo_kernels"] + (["minmo_kernels_cuda_test"] if cuda else [])
    for cmd in (cfg, [cmake, "--build", str(build_dir), "-j", str(jobs), "--target", *targets]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return build_dir / "libminmo_kernels.so"
