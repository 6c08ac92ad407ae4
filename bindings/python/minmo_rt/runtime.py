"""Runtime: a loaded bundle on a backend; the factory of sessions."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from . import _core
from .session import Session
from .tasks import DEFAULT_SYSTEM, chat_prompt, task_prompt
from .sensevoice_ids import sensevoice_query_ids
from .text import Tokenizer


class Runtime:
    """Load a bundle made by ``minmo-export build``.

    device: ``"cpu"`` (``"cuda"`` is not built yet). ``verify_files`` checks every file's size and
    SHA-256 against the manifest before anything is loaded (a tampered or truncated bundle raises
    BundleError). ``num_threads``: compute threads (default: all cores)."""

    def __init__(self, bundle_dir: str, device: str = "cpu", num_threads: Optional[int] = None, verify_files: bool = True):
        if device != "cpu":
            raise ValueError(f"device {device!r} is not available in this build (only 'cpu'; CUDA is planned)")
        if not os.path.isdir(bundle_dir):
            raise _core.BundleError(f"bundle directory not found: {bundle_dir}")
        if num_threads:
            _core.set_num_threads(int(num_threads))
        self.bundle_dir = os.path.abspath(bundle_dir)
        self._core = _core.Runtime(self.bundle_dir, device, verify_files)
        self.manifest = json.loads(self._core.manifest_json())
        tok_spec = self.manifest.get("tokenizer")
        self.tokenizer = Tokenizer(self.bundle_dir, tok_spec) if tok_spec else None
        self.mode = self.manifest.get("mode")
        self.sample_rate = int(self.manifest.get("sample_rate", 16000))

    @property
    def modules(self) -> list[str]:
        return list(self.manifest["modules"])

    def run_module(self, name: str, inputs: dict) -> dict:
        """Run one module offline, as the verification tools do: numpy in, numpy out (float32;
        ids int64). See ``minmo-export verify`` for each module's input and output names."""
        arrays = {}
        for key, value in inputs.items():
            a = np.asarray(value)
            if a.dtype.kind in "iu":
                a = a.astype(np.int64)
            elif a.dtype != np.float32:
                raise _core.InvalidInputError(f"input {key!r} must be float32 or integer, got {a.dtype}")
            arrays[key] = np.ascontiguousarray(a)
        return self._core.run_module(name, arrays)

    def prompt_ids(self, task: str = "asr", prompt: Optional[str] = None, system: Optional[str] = None):
        """(prefix ids, suffix ids, stop ids) of the ChatML prompt around the audio span."""
        if self.tokenizer is None:
            raise _core.BundleError("bundle has no tokenizer; cannot build a prompt")
        text = prompt if prompt is not None else task_prompt(task)
        prefix, suffix = chat_prompt(text, self.manifest.get("prompt"), system)
        stops = [self.tokenizer.token_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
        return self.tokenizer.encode(prefix), self.tokenizer.encode(suffix), [s for s in stops if s is not None]

    def session(self, task: str = "asr", prompt: Optional[str] = None, *, language: str = "auto",
                use_itn: bool = False, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
                top_p: float = 1.0, seed: int = 0, system: Optional[str] = None, kv_capacity: int = 0) -> Session:
        """A new streaming session. ``task`` picks a prompt (see :func:`minmo_rt.tasks.task_prompt`);
        ``prompt`` overrides it with free text. Sampling is greedy unless ``temperature`` > 0.
        ``language``/``use_itn`` apply to SenseVoice CTC bundles. ``kv_capacity``: LLM positions
        reserved per turn (0: the model's maximum, at most 4096); a longer turn raises CacheFullError."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if temperature < 0 or not (0 < top_p <= 1) or top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        opts = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_k": int(top_k),
                "top_p": float(top_p), "seed": int(seed), "kv_capacity": int(kv_capacity)}
        ctc = self.mode == "asr-ctc"
        if ctc:
            opts["query_ids"] = sensevoice_query_ids(language, use_itn)
        else:
            opts["prefix_ids"], opts["suffix_ids"], opts["stop_ids"] = self.prompt_ids(task, prompt, system)
        return Session(self._core.new_session(opts), self.tokenizer, self.sample_rate, ctc)
