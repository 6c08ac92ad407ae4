"""Tokenizers of a bundle (Hugging Face ``tokenizers`` JSON or SentencePiece) and streaming detokenization."""
from __future__ import annotations

import os


class Tokenizer:
    """Encode prompts and decode generated ids for the tokenizer a bundle names."""

    def __init__(self, bundle_dir: str, spec: dict):
        kind, rel = spec.get("kind"), spec.get("file")
        if not rel:
            raise ValueError("bundle manifest names no tokenizer file")
        path = os.path.join(bundle_dir, rel)
        self.kind = kind
        if kind == "hf-tokenizers":
            from tokenizers import Tokenizer as HFTokenizer

            self._tok = HFTokenizer.from_file(path)
        elif kind == "sentencepiece":
            import sentencepiece as spm

            self._tok = spm.SentencePieceProcessor(model_file=path)
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r} in bundle manifest")

    def encode(self, text: str) -> list[int]:
        if self.kind == "hf-tokenizers":
            return self._tok.encode(text, add_special_tokens=False).ids
        return list(self._tok.encode(text))

    def token_id(self, token: str):
        """Id of a single (special) token, or None when the vocabulary lacks it."""
        if self.kind == "hf-tokenizers":
            return self._tok.token_to_id(token)
        i = self._tok.piece_to_id(token)
        return None if i == self._tok.unk_id() and token != self._tok.id_to_piece(i) else i

    def decode(self, ids: list[int]) -> str:
        if self.kind == "hf-tokenizers":
            return self._tok.decode(list(ids), skip_special_tokens=True)
        return self._tok.decode(list(ids))

    def piece(self, i: int) -> str:
        if self.kind == "hf-tokenizers":
            return self._tok.id_to_token(int(i)) or ""
        return self._tok.id_to_piece(int(i))


class StreamingDetokenizer:
    """Turns ids arriving one by one into text deltas that never split a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def add(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        full = self._tok.decode(self.ids)
        if full.endswith("\ufffd") or not full.startswith(self.text):
            return ""
        delta, self.text = full[len(self.text):], full
        return delta
