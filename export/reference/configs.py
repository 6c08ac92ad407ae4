"""Architecture configs of the reference modules.

A config is what the manifest stores under ``modules.<name>.config``; ``from_dict`` ignores
unknown keys only when they are listed in ``_IGNORED`` so that a foreign config fails loudly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


class _Config:
    """Dict round-trip shared by every config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class ChunkSpec(_Config):
    """Encoder attention mode.

    ``full``: every frame sees the whole turn (the encoder runs once the turn has ended).
    ``chunked``: frames are grouped in chunks of ``chunk_frames`` encoder frames; a frame sees its
    own chunk and ``left_chunks`` chunks before it, and convolution memories (FSMN) see no frame
    after the end of their chunk. Streaming and offline then give the same result.
    """

    encoder_attention: str = "full"
    chunk_frames: int = 8
    left_chunks: int = 4

    def __post_init__(self):
        if self.encoder_attention not in ("full", "chunked"):
            raise ValueError(f"encoder_attention must be 'full' or 'chunked', not {self.encoder_attention!r}")
        if self.chunk_frames < 2 or self.chunk_frames % 2:
            raise ValueError("chunk_frames must be an even number >= 2 (the projector halves it)")
        if self.left_chunks < 0:
            raise ValueError("left_chunks must be >= 0")

    @property
    def chunked(self) -> bool:
        return self.encoder_attention == "chunked"


@dataclass
class FbankFrontendConfig(_Config):
    """SenseVoice-Small frontend: kaldi fbank, low-frame-rate stacking, CMVN."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist, as in kaldi
    lfr_m: int = 7
    lfr_n: int = 6
    apply_cmvn: bool = True
    waveform_scale: float = 32768.0

    @property
    def output_dim(self) -> int:
        return self.num_mel_bins * self.lfr_m


@dataclass
class WhisperFrontendConfig(_Config):
    """SenseVoice-Large style frontend: whisper log-mel.

    Whisper clamps the log spectrum to (utterance max - 8), which needs the whole utterance.
    ``log_ceiling`` replaces the utterance max by a constant so that the frontend streams; set it
    to ``None`` for whisper's offline behaviour (not streamable, the runtime refuses it).
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 128
    log_ceiling: Optional[float] = 2.0


@dataclass
class SenseVoiceSmallConfig(_Config):
    input_dim: int = 560
    d_model: int = 512
    n_heads: int = 4
    ffn_dim: int = 2048
    n_blocks: int = 50
    n_tp_blocks: int = 20
    fsmn_kernel: int = 11
    sanm_shift: int = 0
    norm_eps: float = 1e-5
    vocab_size: int = 25055
    n_query_embed: int = 16


@dataclass
class SenseVoiceLargeConfig(_Config):
    n_mels: int = 128
    d_model: int = 1280
    n_heads: int = 20
    n_blocks: int = 32
    fsmn_kernel: int = 15
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5


@dataclass
class ProjectorConfig(_Config):
    encoder_dim: int = 1280
    hidden_dim: int = 2048
    output_dim: int = 3584
    n_layers: int = 2
    n_heads: int = 8
    ffn_dim: int = 8192
    norm_eps: float = 1e-5


@dataclass
class Qwen2Config(_Config):
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "Qwen2Config":
        """From a Hugging Face ``config.json`` of a Qwen2/Qwen2.5 model."""
        arch = hf.get("model_type")
        if arch not in ("qwen2",):
            raise ValueError(f"not a Qwen2 config (model_type={arch!r})")
        heads = hf["num_attention_heads"]
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads", heads),
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rope_theta=float(hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
        )


@dataclass
class DuplexConfig(_Config):
    llm_hidden: int = 3584
    hidden_size: int = 896
    intermediate_size: int = 4736
    num_attention_heads: int = 7
    num_key_value_heads: int = 1
    head_dim: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    def as_qwen2_layer(self) -> Qwen2Config:
        return Qwen2Config(
            vocab_size=1, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=1, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
        )


@dataclass
class OutputProjectorConfig(_Config):
    """Semantic vectors: Linear(embed_dim + llm_hidden -> output_dim) over [token embedding ; LLM
    last-layer hidden state]. ``hidden_source``: which hidden state pairs with a generated token:
    "predicting" = the one whose logits produced it (available at once, no extra LLM step)."""

    embed_dim: int = 3584
    llm_hidden: int = 3584
    output_dim: int = 896
    hidden_source: str = "predicting"

    def __post_init__(self):
        if self.hidden_source != "predicting":
            raise ValueError(f"hidden_source must be 'predicting', not {self.hidden_source!r}")
        if min(self.embed_dim, self.llm_hidden, self.output_dim) < 1:
            raise ValueError("output projector sizes must be positive")


@dataclass
class VoiceLMConfig(_Config):
    """CosyVoice2 voice token LM: a Qwen2 body (its text embedding is the cascade-mode text input;
    no text head), sos/task_id table [2, hidden], speech embedding [speech_token_size + 3, hidden],
    head Linear(hidden -> speech_token_size + 3). Ids: eos = speech_token_size, fill =
    speech_token_size + 2. Interleave text_ratio : speech_ratio, repetition-aware sampling
    (top_p, top_k, win_size, tau_r); speech length limits min/max_token_text_ratio x text length."""

    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    head_dim: int = 64
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    speech_token_size: int = 6561
    text_ratio: int = 5
    speech_ratio: int = 15
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1
    min_token_text_ratio: float = 2.0
    max_token_text_ratio: float = 20.0

    def __post_init__(self):
        if self.speech_token_size < 1 or self.text_ratio < 1 or self.speech_ratio < 1:
            raise ValueError("speech_token_size, text_ratio and speech_ratio must be >= 1")
        if not (0 < self.top_p <= 1) or self.top_k < 1 or self.win_size < 1 or self.tau_r < 0:
            raise ValueError("need 0 < top_p <= 1, top_k >= 1, win_size >= 1, tau_r >= 0")
        if not (0 <= self.min_token_text_ratio <= self.max_token_text_ratio) or self.max_token_text_ratio <= 0:
            raise ValueError("need 0 <= min_token_text_ratio <= max_token_text_ratio, max > 0")

    @property
    def eos(self) -> int:
        return self.speech_token_size

    @property
    def fill(self) -> int:
        return self.speech_token_size + 2

    def as_qwen2(self) -> Qwen2Config:
        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim, rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=True,
            max_position_embeddings=self.max_position_embeddings)


@dataclass
class FlowConfig(_Config):
    """CosyVoice2 flow (``CausalMaskedDiffWithXvec``): speech tokens -> 80-bin mel at 2 frames per token.

    Encoder: token embedding -> Linear + LayerNorm (``embed``) -> pre-lookahead layer -> ``n_blocks``
    conformer blocks (relative-position attention, no conv module) -> 2x nearest upsample + causal
    conv -> ``embed`` again (``up_embed``) -> ``n_up_blocks`` blocks -> LayerNorm -> Linear = mu.
    Estimator: causal conditional U-Net over [x, mu, spk, cond] (one down, ``n_mid_blocks`` mid and one
    up stage, ``n_transformer`` transformer blocks each). CFM: ``n_timesteps`` Euler steps on a cosine
    schedule, classifier-free guidance ``cfg_rate``.
    """

    vocab_size: int = 6561
    d_model: int = 512
    n_heads: int = 8
    ffn_dim: int = 2048
    n_blocks: int = 6
    n_up_blocks: int = 4
    pre_lookahead: int = 3
    mel_dim: int = 80
    spk_dim: int = 192
    token_mel_ratio: int = 2
    est_channels: int = 256
    est_heads: int = 8
    est_head_dim: int = 64
    n_transformer: int = 4
    n_mid_blocks: int = 12
    n_timesteps: int = 10
    cfg_rate: float = 0.7

    def __post_init__(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model must split into n_heads heads of even size")
        if self.token_mel_ratio != 2:
            raise ValueError("token_mel_ratio must be 2 (the upsampling layer doubles the frame rate)")
        if self.pre_lookahead < 1 or self.n_timesteps < 1:
            raise ValueError("pre_lookahead and n_timesteps must be >= 1")

    @property
    def est_in_channels(self) -> int:
        return 4 * self.mel_dim


@dataclass
class HiftConfig(_Config):
    """CosyVoice2 HiFT vocoder (``HiFTGenerator`` with ``ConvRNNF0Predictor``): 80-bin mel -> 24 kHz."""

    mel_dim: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sample_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: list = field(default_factory=lambda: [8, 5, 3])
    upsample_kernel_sizes: list = field(default_factory=lambda: [16, 11, 7])
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    source_resblock_kernel_sizes: list = field(default_factory=lambda: [7, 7, 11])
    source_resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_channels: int = 512
    f0_layers: int = 5

    def __post_init__(self):
        n = len(self.upsample_rates)
        if n < 1 or len(self.upsample_kernel_sizes) != n:
            raise ValueError("upsample_rates and upsample_kernel_sizes must be non-empty and of equal length")
        if len(self.source_resblock_kernel_sizes) != n or len(self.source_resblock_dilation_sizes) != n:
            raise ValueError("one source resblock per upsampling stage")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock kernel and dilation lists differ in length")
        if self.base_channels % (2 ** n):
            raise ValueError("base_channels must halve at every upsampling stage")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ValueError("each upsample kernel minus its rate must be even (exact length multiplication)")
        if self.n_fft % self.hop_len or self.n_fft % 2:
            raise ValueError("n_fft must be even and a multiple of hop_len")

    @property
    def samples_per_frame(self) -> int:
        p = self.hop_len
        for u in self.upsample_rates:
            p *= u
        return p
