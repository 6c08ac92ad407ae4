"""minmo-tiny: the MinMo speech-to-text layout at small size, built from the reference modules.

whisper log-mel -> SenseVoice-Large style encoder -> input projector -> Qwen2 decoder, plus the
duplex predictor on the decoder's hidden states of the audio tokens. The LLM sees exactly the
runtime's sequence: ChatML prefix ids, the audio tokens, the suffix ids, then the response
(:func:`minmo_rt.tasks.chat_prompt`, the same text the runtime encodes).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..export.checkpoints.hf_qwen2 import CHATML_SPECIALS
from ..export.reference import (ChunkSpec, DuplexConfig, DuplexPredictor, InputProjector, ProjectorConfig,
                                Qwen2Config, Qwen2Decoder, SenseVoiceLargeConfig, SenseVoiceLargeEncoder,
                                WhisperFrontendConfig)
from ..export.reference.qwen2 import KVCache
from ..tasks import chat_prompt, task_prompt
from .data import DIGIT_WORDS, load_phrases

PROMPT = {"system": "You are a helpful assistant.", "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}
STREAMING = ChunkSpec(encoder_attention="chunked", chunk_frames=8, left_chunks=4)
VOCAB_SIZE = 512


@dataclass
class TinySizes:
    encoder: SenseVoiceLargeConfig
    projector: ProjectorConfig
    llm: dict          # Qwen2Config fields except vocab_size
    duplex: dict       # DuplexConfig fields except llm_hidden


SIZES = {
    "tiny": TinySizes(
        encoder=SenseVoiceLargeConfig(n_mels=128, d_model=128, n_heads=4, n_blocks=3, fsmn_kernel=15),
        projector=ProjectorConfig(encoder_dim=128, hidden_dim=256, output_dim=128, n_layers=1, n_heads=4, ffn_dim=256),
        llm=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, rope_theta=10000.0, max_position_embeddings=1024),
        duplex=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=32),
    ),
}


# -- tokenizer -----------------------------------------------------------------------------------

def tokenizer_corpus() -> list[str]:
    """Every text the model reads or writes: prompts, phrases, digit words."""
    prefix, suffix = chat_prompt(task_prompt("asr"), PROMPT)
    lines = [prefix, suffix] * 4 + load_phrases() + [" ".join(DIGIT_WORDS)] * 20
    return lines


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (Hugging Face ``tokenizers``) on :func:`tokenizer_corpus`, with the ChatML
    and audio special tokens appended after the learned vocabulary (as in Qwen2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(CHATML_SPECIALS), min_frequency=2,
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tok.add_special_tokens(list(CHATML_SPECIALS))
    return tok


def save_tokenizer(tok, directory: str) -> None:
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "bos_token": None, "model_max_length": 1024,
                   "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>"]},
                  f, indent=2)


class PromptIds:
    """Token ids of the runtime's ASR prompt around the audio span, and of the stop token."""

    def __init__(self, tok):
        prefix, suffix = chat_prompt(task_prompt("asr"), PROMPT)
        self.prefix = tok.encode(prefix, add_special_tokens=False).ids
        self.suffix = tok.encode(suffix, add_special_tokens=False).ids
        self.im_end = tok.token_to_id("<|im_end|>")
        self._tok = tok

    def target(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids + [self.im_end]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


# -- model ---------------------------------------------------------------------------------------

class MinmoTiny(nn.Module):
    """The reference modules wired as the runtime runs them. ``set_chunked`` switches the encoder
    and projector between full-context and chunked attention (same weights)."""

    def __init__(self, sizes: TinySizes, vocab_size: int):
        super().__init__()
        self.chunk = ChunkSpec(**STREAMING.to_dict())
        self.frontend_cfg = WhisperFrontendConfig(n_mels=sizes.encoder.n_mels)
        self.encoder = SenseVoiceLargeEncoder(sizes.encoder, self.chunk)
        self.projector = InputProjector(sizes.projector, self.chunk)
        self.llm_cfg = Qwen2Config(vocab_size=vocab_size, **sizes.llm)
        self.llm = Qwen2Decoder(self.llm_cfg)
        self.duplex = DuplexPredictor(DuplexConfig(llm_hidden=self.llm_cfg.hidden_size, **sizes.duplex))

    def set_chunked(self, chunked: bool) -> None:
        self.chunk.encoder_attention = "chunked" if chunked else "full"

    def audio_tokens(self, mel: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(mel))

    def prefix_cache(self, prefix_ids: list[int]) -> KVCache:
        _, _, cache = self.llm(self.llm.embed(torch.tensor(prefix_ids)))
        return cache

    def forward_one(self, mel: torch.Tensor, cache: KVCache, suffix_ids: list[int], target_ids: list[int]):
        """One utterance after the cached prefix -> (logits predicting each target id [n_target, V],
        p_turn per audio token [A])."""
        audio = self.audio_tokens(mel)
        n_audio = audio.shape[0]
        ids = torch.tensor(suffix_ids + target_ids[:-1])
        x = torch.cat([audio, self.llm.embed(ids)])
        logits, hidden, _ = self.llm(x, cache)
        p_turn, _, _ = self.duplex(hidden[:n_audio].detach())
        start = n_audio + len(suffix_ids) - 1
        return logits[start:start + len(target_ids)], p_turn

    @torch.no_grad()
    def greedy(self, mel: torch.Tensor, prompt: PromptIds, max_new_tokens: int = 48) -> tuple[list[int], torch.Tensor]:
        """Greedy transcript ids (without the stop token) and p_turn per audio token."""
        cache = self.prefix_cache(prompt.prefix)
        audio = self.audio_tokens(mel)
        _, hidden, cache = self.llm(audio, cache)
        p_turn, _, _ = self.duplex(hidden)
        logits, _, cache = self.llm(self.llm.embed(torch.tensor(prompt.suffix)), cache)
        out = []
        for _ in range(max_new_tokens):
            nxt = int(logits[-1].argmax())
            if nxt == prompt.im_end:
                break
            out.append(nxt)
            logits, _, cache = self.llm(self.llm.embed(torch.tensor([nxt])), cache)
        return out, p_turn


def write_checkpoint(model: MinmoTiny, tok, directory: str, dtype: torch.dtype = torch.float16) -> dict:
    """The trained model in the MinMo checkpoint layout (export/checkpoints/README.md)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    save_tokenizer(tok, directory)
    modules = {
        "frontend": ("whisper_logmel", model.frontend_cfg, None),
        "encoder": ("sensevoice_large", model.encoder.cfg, model.encoder),
        "projector": ("projector", model.projector.cfg, model.projector),
        "llm": ("qwen2", model.llm.cfg, model.llm),
        "duplex": ("duplex", model.duplex.cfg, model.duplex),
    }
    meta = {"format": "minmo-checkpoint", "version": 1, "streaming": STREAMING.to_dict(), "prompt": dict(PROMPT),
            "modules": {}}
    for name, (arch, cfg, module) in modules.items():
        meta["modules"][name] = {"arch": arch, "config": cfg.to_dict()}
        if module is not None:
            tensors = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
            save_file(tensors, os.path.join(directory, f"{name}.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "minmo.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta
