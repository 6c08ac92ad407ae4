"""Runtime: a loaded bundle on a backend; the factory of sessions."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from . import _core
from .session import Session, TtsSession
from .tasks import DEFAULT_SYSTEM, chat_prompt, task_prompt
from .sensevoice_ids import sensevoice_query_ids
from .text import Tokenizer


class Runtime:
    """Load a bundle made by ``minmo-export build``.

    device: ``"cpu"``; ``"cuda"`` runs the LLM, the voice LM, the chunked encoder's blocks and HiFT's
    f0 predictor + decode on the first GPU through the CUDA backend (the other modules stay on the CPU: see ``module_devices``
    and ``cpu_fallbacks``); ``"cuda-sim"`` runs the same backend code with the kernels' CPU twins
    (slow; for testing without a GPU). A build without CUDA, or a machine without a usable GPU,
    raises DeviceError for ``"cuda"``. ``verify_files`` checks
    every file's size and SHA-256 against the manifest before anything is loaded (a tampered or
    truncated bundle raises BundleError). ``num_threads``: compute threads (default: all cores)."""

    DEVICES = ("cpu", "cuda", "cuda-sim")

    def __init__(self, bundle_dir: str, device: str = "cpu", num_threads: Optional[int] = None, verify_files: bool = True):
        if device not in self.DEVICES:
            raise _core.InvalidInputError(f"unknown device {device!r}: expected one of {', '.join(self.DEVICES)}")
        if not os.path.isdir(bundle_dir):
            raise _core.BundleError(f"bundle directory not found: {bundle_dir}")
        if num_threads:
            _core.set_num_threads(int(num_threads))
        self.bundle_dir = os.path.abspath(bundle_dir)
        self._core = _core.Runtime(self.bundle_dir, device, verify_files)
        self.device = device
        self.manifest = json.loads(self._core.manifest_json())
        tok_spec = self.manifest.get("tokenizer")
        self.tokenizer = Tokenizer(self.bundle_dir, tok_spec) if tok_spec else None
        self.mode = self.manifest.get("mode")
        self.sample_rate = int(self.manifest.get("sample_rate", 16000))
        self._speaker_table = None

    @property
    def modules(self) -> list[str]:
        return list(self.manifest["modules"])

    @property
    def module_devices(self) -> dict:
        """Where each module runs: ``{"llm": "cuda", "encoder": "cpu", ...}``."""
        return dict(self._core.module_devices())

    @property
    def cpu_fallbacks(self) -> dict:
        """Modules the device could not run (a shape its kernels lack), run on the CPU instead:
        ``{name: reason}``. Empty on the CPU."""
        return dict(self._core.cpu_fallbacks())

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
                top_p: float = 1.0, seed: int = 0, system: Optional[str] = None, kv_capacity: int = 0,
                speak: bool = False, speaker=None, speech_seed: int = 0, speech_output: str = "audio",
                prompt_speech_tokens=None, prompt_mel=None, voice_kv_capacity: int = 0) -> Session:
        """A new streaming session. ``task`` picks a prompt (see :func:`minmo_rt.tasks.task_prompt`);
        ``prompt`` overrides it with free text. Sampling is greedy unless ``temperature`` > 0.
        ``language``/``use_itn`` apply to SenseVoice CTC bundles. ``kv_capacity``: LLM positions
        reserved per turn (0: the model's maximum, at most 4096); a longer turn raises CacheFullError.
        ``speak``: also speak the response (bundles with output_projector + voice_lm, and flow + hift
        for audio): "audio" events stream while the text is generated. ``speaker``: speaker
        embedding, or the name of a voice stored in the bundle (see :attr:`speakers`; its
        voice-imitation prompt comes with it), required for audio; ``speech_output="tokens"`` gives
        speech tokens only."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if temperature < 0 or not (0 < top_p <= 1) or top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        opts = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_k": int(top_k),
                "top_p": float(top_p), "seed": int(seed), "kv_capacity": int(kv_capacity)}
        ctc = self.mode == "asr-ctc"
        if speak:
            if ctc:
                raise _core.InvalidInputError("a CTC (asr-ctc) bundle cannot speak")
            opts.update(self._speech_opts(speaker, speech_seed, speech_output, prompt_speech_tokens, prompt_mel,
                                          voice_kv_capacity))
            opts["speak"] = True
        if ctc:
            opts["query_ids"] = sensevoice_query_ids(language, use_itn)
        else:
            opts["prefix_ids"], opts["suffix_ids"], opts["stop_ids"] = self.prompt_ids(task, prompt, system)
        return Session(self._core.new_session(opts), self.tokenizer, self.sample_rate, ctc)

    # -- speaking --------------------------------------------------------------------------------
    @property
    def speakers(self) -> list[str]:
        """Names of the voices stored in the bundle (CosyVoice2's spk2info.pt), usable as ``speaker=<name>``."""
        return list((self.manifest.get("speakers") or {}).get("names", []))

    def speaker(self, name: str) -> dict:
        """A stored voice: {"embedding": [192] float32} plus, when it has a voice-imitation prompt,
        "speech_token" [n] int64 and "speech_feat" [2n, 80] float32."""
        entry = self.manifest.get("speakers") or {}
        names = list(entry.get("names", []))
        if name not in names:
            raise _core.InvalidInputError(f"unknown speaker {name!r}; this bundle has {', '.join(names) if names else 'no stored speakers'}")
        if self._speaker_table is None:
            if entry["file"] not in self.manifest["files"]:  # listed files were checked by the runtime at load
                raise _core.BundleError(f"speakers file {entry['file']!r} is not listed in the manifest's files")
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            try:
                self._speaker_table = load_file(os.path.join(self.bundle_dir, entry["file"]))
            except (SafetensorError, OSError) as e:
                raise _core.BundleError(f"speakers file {entry['file']}: {e}") from None
        i = names.index(name)
        return {f: self._speaker_table[f"{i}.{f}"] for f in ("embedding", "speech_token", "speech_feat")
                if f"{i}.{f}" in self._speaker_table}

    def _speech_opts(self, speaker, seed, output, prompt_tokens, prompt_mel, voice_kv_capacity=0) -> dict:
        if output not in ("audio", "tokens"):
            raise _core.InvalidInputError(f"speech_output must be 'audio' or 'tokens', not {output!r}")
        if isinstance(speaker, str):  # a stored voice, with its prompt unless one is given
            voice = self.speaker(speaker)
            speaker = voice["embedding"]
            if prompt_tokens is None and prompt_mel is None:
                prompt_tokens, prompt_mel = voice.get("speech_token"), voice.get("speech_feat")
        opts = {"speech_seed": int(seed), "speech_output": output, "voice_kv_capacity": int(voice_kv_capacity)}
        if output == "audio":
            if speaker is None:
                raise _core.InvalidInputError("a speaker is required to speak (speaker=<192-d float array> or the name "
                                              "of a stored voice, see Runtime.speakers)")
            spk = np.asarray(speaker, dtype=np.float32).reshape(-1)
            if spk.size == 0 or not np.isfinite(spk).all():
                raise _core.InvalidInputError("speaker embedding must be a non-empty finite float array")
            opts["speaker"] = spk.tolist()
        if prompt_tokens is not None:
            opts["prompt_speech_tokens"] = [int(t) for t in np.asarray(prompt_tokens).reshape(-1)]
        if prompt_mel is not None:
            opts["prompt_mel"] = np.asarray(prompt_mel, dtype=np.float32).reshape(-1).tolist()
        return opts

    def voice_tokenizer(self) -> Optional[Tokenizer]:
        """The voice LM's text tokenizer (cascade mode), or None."""
        entry = ((self.manifest.get("modules") or {}).get("voice_lm") or {}).get("tokenizer")
        return Tokenizer(self.bundle_dir, entry) if entry else self.tokenizer

    def tts_session(self, text=None, *, speaker=None, instruction: Optional[str] = None,
                    instruction_text: Optional[str] = None, seed: int = 0, speech_output: str = "audio",
                    prompt_speech_tokens=None, prompt_mel=None, max_text_tokens: int = 1024,
                    voice_kv_capacity: int = 0) -> TtsSession:
        """A text-to-speech session (cascade mode, CosyVoice2 bistream). ``instruction``: a style
        preset name (see :data:`minmo_rt.tasks.INSTRUCTIONS`), or ``instruction_text`` free text,
        prepended with ``<|endofprompt|>`` as in CosyVoice2's instruct mode. ``text`` (optional): pushed
        at once and ended. ``voice_kv_capacity``: voice LM positions (0: min(model maximum, 4096));
        longer text raises CacheFullError. ``speaker`` as in :meth:`session`. Bad input raises
        InvalidInputError."""
        from .tasks import instruction_prompt

        if "voice_lm" not in self.modules:
            raise _core.InvalidInputError("bundle has no voice_lm module: it cannot do text-to-speech")
        opts = self._speech_opts(speaker, seed, speech_output, prompt_speech_tokens, prompt_mel, voice_kv_capacity)
        tok = self.voice_tokenizer()
        prompt = instruction_prompt(instruction, instruction_text)
        if prompt:
            if tok is None:
                raise _core.InvalidInputError("bundle has no voice LM tokenizer: instructions need one")
            if tok.token_id("<|endofprompt|>") is None:
                raise _core.InvalidInputError("the voice LM tokenizer has no <|endofprompt|> token: instruct mode unavailable")
            opts["instruction_ids"] = tok.encode(prompt)
        s = TtsSession(self._core.new_tts_session(opts), tok)
        if text is not None:
            if isinstance(text, str) and not text.strip():
                raise _core.InvalidInputError("text is empty: nothing to speak")
            n = len(tok.encode(text)) if isinstance(text, str) and tok is not None else len(text)
            if n > max_text_tokens:
                raise _core.InvalidInputError(f"text is too long: {n} tokens, at most {max_text_tokens} per session")
            s.push_text(text)
            s.end_text()
        return s
