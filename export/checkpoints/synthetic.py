"""Small random checkpoints in the real on-disk layouts, for tests (the demo uses the trained minmo-tiny).

The weights are random: what these prove is that the formats load and that every backend computes
the same function, not that anything is recognised.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Union

import torch

from ..reference import (ChunkSpec, DuplexConfig, OutputProjectorConfig, ProjectorConfig, Qwen2Config, SenseVoiceLargeConfig,
                         SenseVoiceSmallConfig, VoiceLMConfig, WhisperFrontendConfig, FlowConfig, HiftConfig)
from .archs import make_module
from .funasr_sensevoice import SENSEVOICE_TAGS
from .hf_qwen2 import CHATML_SPECIALS

TRAINING_TEXT = """\
You are a helpful assistant. Transcribe speech into English: turn on the lights in the kitchen.
Translate the speech into Chinese: what is the weather like today? Please answer the question.
Detect the emotion of the speaker. Which language is spoken? Describe the audio events you hear.
The quick brown fox jumps over the lazy dog. A streaming runtime pushes microphone chunks and
receives text tokens, speech audio and turn-taking events as they happen. Hello, how are you?
Set a timer for ten minutes. Play some music in the living room. Call my mother tomorrow morning.
Numbers: one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 100 2025.
今天天气怎么样？请打开客厅的灯。我们明天早上见。谢谢你的帮助。
"""


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def perturb_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every norm weight / bias non-trivial random values (default init leaves them 1 / 0,
    which would hide a missing bias or a wrong norm in a test)."""
    g = _rng(seed + 1000)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(s in name for s in ("norm", "_ln", "ln_post"))
            if leaf == "bias" or (is_norm and leaf == "weight"):
                noise = 0.1 * torch.randn(p.shape, generator=g)
                p.copy_((1.0 + noise) if (is_norm and leaf == "weight") else noise)
    return module


def build_bpe_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on :data:`TRAINING_TEXT`, with the ChatML and audio special
    tokens appended after the learned vocabulary (as in Qwen2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAINING_TEXT.splitlines() * 3, trainer=trainer)
    tok.add_special_tokens(list(CHATML_SPECIALS))
    return tok


def _write_tokenizer(directory: str) -> int:
    tok = build_bpe_tokenizer()
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "bos_token": None, "model_max_length": 32768,
                   "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>"]},
                  f, indent=2)
    return tok.get_vocab_size(with_added_tokens=True)


def tiny_qwen2_config(vocab_size: int, **kw) -> Qwen2Config:
    d = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
             max_position_embeddings=4096)
    d.update(kw)
    return Qwen2Config(**d)


def write_hf_qwen2(directory: str, cfg: Optional[Union[Qwen2Config, dict]] = None, seed: int = 0,
                   max_shard_size: Optional[str] = None) -> Qwen2Config:
    """A Hugging Face Qwen2 folder written by transformers' ``save_pretrained`` (safetensors) plus a
    byte-level BPE tokenizer.json. ``cfg`` overrides the tiny default (its vocab_size, if smaller,
    is raised to the tokenizer size); ``max_shard_size`` (e.g. "40KB") writes sharded weights."""
    import transformers

    os.makedirs(directory, exist_ok=True)
    n_tok = _write_tokenizer(directory)
    if cfg is None:
        cfg = tiny_qwen2_config(n_tok)
    elif isinstance(cfg, dict):
        cfg = tiny_qwen2_config(n_tok, **cfg)
    if cfg.vocab_size < n_tok:
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "vocab_size": n_tok})
    hf_cfg = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
        max_position_embeddings=cfg.max_position_embeddings, hidden_act="silu", use_sliding_window=False,
        bos_token_id=None, eos_token_id=n_tok - 3, torch_dtype="float32")
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(hf_cfg).eval()
    perturb_(model, seed)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, safe_serialization=True, **kw)
    return cfg


def tiny_sensevoice_config(vocab_size: int, **kw) -> SenseVoiceSmallConfig:
    d = dict(input_dim=560, d_model=64, n_heads=4, ffn_dim=128, n_blocks=3, n_tp_blocks=2, fsmn_kernel=11,
             sanm_shift=0, vocab_size=vocab_size)
    d.update(kw)
    return SenseVoiceSmallConfig(**d)


def write_am_mvn(path: str, shift, scale) -> None:
    """FunASR's CMVN file: a kaldi nnet in text form."""
    n = len(shift)
    fmt = lambda v: " ".join(f"{float(x):.9g}" for x in v)  # noqa: E731  (9 digits: float32 round trip)
    with open(path, "w") as f:
        f.write(f"<Nnet>\n<Splice> {n} {n}\n[ 0 ]\n<AddShift> {n} {n}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
                f"<Rescale> {n} {n}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n</Nnet>\n")


def _train_spm(path_prefix: str, vocab_size: int = 160) -> None:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines() * 4), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, user_defined_symbols=list(SENSEVOICE_TAGS),
        hard_vocab_limit=False, num_threads=1, minloglevel=2, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    with open(path_prefix + ".model", "wb") as f:
        f.write(buf.getvalue())


def write_funasr_sensevoice(directory: str, cfg: Optional[Union[SenseVoiceSmallConfig, dict]] = None, seed: int = 0,
                            wrap: Optional[str] = None) -> SenseVoiceSmallConfig:
    """A FunASR SenseVoice-Small folder: model.pt (``torch.save`` of a plain state dict, or nested
    under ``wrap`` = "state_dict" / "model"), config.yaml, am.mvn, a SentencePiece BPE model with
    SenseVoice's tag symbols. Returns the encoder config (vocab = the BPE model's size)."""
    import sentencepiece as spm
    import yaml

    os.makedirs(directory, exist_ok=True)
    bpe = "chn_jpn_yue_eng_ko_spectok.bpe"
    _train_spm(os.path.join(directory, bpe))
    n_vocab = spm.SentencePieceProcessor(model_file=os.path.join(directory, bpe + ".model")).get_piece_size()
    if cfg is None:
        cfg = tiny_sensevoice_config(n_vocab)
    elif isinstance(cfg, dict):
        cfg = tiny_sensevoice_config(n_vocab, **cfg)
    if cfg.vocab_size != n_vocab:
        cfg = SenseVoiceSmallConfig.from_dict({**cfg.to_dict(), "vocab_size": n_vocab})
    torch.manual_seed(seed)
    enc = perturb_(make_module("sensevoice_small", cfg.to_dict()), seed)
    sd = {k: v.clone() for k, v in enc.state_dict().items()}
    torch.save({wrap: sd} if wrap else sd, os.path.join(directory, "model.pt"))
    n_mels, lfr_m = 80, cfg.input_dim // 80
    conf = {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {"output_size": cfg.d_model, "attention_heads": cfg.n_heads, "linear_units": cfg.ffn_dim,
                         "num_blocks": cfg.n_blocks, "tp_blocks": cfg.n_tp_blocks, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
                         "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                         "kernel_size": cfg.fsmn_kernel, "sanm_shfit": cfg.sanm_shift, "selfattention_layer_type": "sanm"},
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": bpe + ".model", "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": n_mels, "frame_length": 25, "frame_shift": 10,
                          "lfr_m": lfr_m, "lfr_n": 6, "cmvn_file": None},
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
    }
    with open(os.path.join(directory, "config.yaml"), "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    g = _rng(seed + 7)
    dim = n_mels * lfr_m
    shift = (-10.0 - 4.0 * torch.rand(dim, generator=g)).tolist()
    scale = (0.15 + 0.2 * torch.rand(dim, generator=g)).tolist()
    write_am_mvn(os.path.join(directory, "am.mvn"), shift, scale)
    return cfg


MINMO_SIZES = {
    "tiny": dict(
        frontend=WhisperFrontendConfig(n_mels=128),
        encoder=SenseVoiceLargeConfig(n_mels=128, d_model=64, n_heads=4, n_blocks=2, fsmn_kernel=15),
        projector=dict(encoder_dim=64, hidden_dim=128, output_dim=128, n_layers=1, n_heads=4, ffn_dim=256),
        llm=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32),
        duplex=dict(llm_hidden=128, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=32),
        output_projector=dict(embed_dim=128, llm_hidden=128, output_dim=64),
        voice_lm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=8192),
        flow=dict(d_model=32, n_heads=4, ffn_dim=48, n_blocks=2, n_up_blocks=2, est_channels=32, est_heads=2,
                  est_head_dim=16, n_transformer=1, n_mid_blocks=2, n_timesteps=4),
        hift=dict(base_channels=32, f0_channels=16),
    ),
    "small": dict(
        frontend=WhisperFrontendConfig(n_mels=128),
        encoder=SenseVoiceLargeConfig(n_mels=128, d_model=256, n_heads=4, n_blocks=4, fsmn_kernel=15),
        projector=dict(encoder_dim=256, hidden_dim=512, output_dim=256, n_layers=2, n_heads=4, ffn_dim=1024),
        llm=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=32),
        duplex=dict(llm_hidden=256, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=32),
        output_projector=dict(embed_dim=256, llm_hidden=256, output_dim=128),
        voice_lm=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, max_position_embeddings=8192),
        flow=dict(d_model=128, n_heads=4, ffn_dim=256, n_blocks=2, n_up_blocks=2, est_channels=64, est_heads=4,
                  est_head_dim=16, n_transformer=1, n_mid_blocks=2, n_timesteps=10),
        hift=dict(base_channels=64, f0_channels=32),
    ),
}

DEFAULT_PROMPT = {"system": "You are a helpful assistant.", "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}


def write_minmo_checkpoint(directory: str, sizes: str = "tiny", seed: int = 0,
                           streaming: Optional[ChunkSpec] = None) -> dict:
    """A MinMo-layout checkpoint (see README.md): whisper log-mel frontend, SenseVoice-Large style
    encoder, projector, Qwen2 LLM, duplex predictor, output projector, voice LM, tokenizer.json. Returns the minmo.json dict."""
    from safetensors.torch import save_file

    if sizes not in MINMO_SIZES:
        raise ValueError(f"sizes must be one of {sorted(MINMO_SIZES)}")
    s = MINMO_SIZES[sizes]
    os.makedirs(directory, exist_ok=True)
    n_tok = _write_tokenizer(directory)
    chunk = streaming or ChunkSpec(encoder_attention="chunked", chunk_frames=8, left_chunks=4)
    cfgs = {
        "frontend": ("whisper_logmel", s["frontend"]),
        "encoder": ("sensevoice_large", s["encoder"]),
        "projector": ("projector", ProjectorConfig(**s["projector"])),
        "llm": ("qwen2", tiny_qwen2_config(n_tok, rope_theta=1_000_000.0, **s["llm"])),
        "duplex": ("duplex", DuplexConfig(**s["duplex"])),
        "output_projector": ("output_projector", OutputProjectorConfig(**s["output_projector"])),
        "voice_lm": ("voice_lm", VoiceLMConfig(vocab_size=n_tok, **s["voice_lm"])),
        "flow": ("cosyvoice2_flow", FlowConfig(**s["flow"])),
        "hift": ("cosyvoice2_hift", HiftConfig(**s["hift"])),
    }
    meta = {"format": "minmo-checkpoint", "version": 1, "streaming": chunk.to_dict(), "prompt": dict(DEFAULT_PROMPT),
            "modules": {}}
    torch.manual_seed(seed)
    for i, (name, (arch, cfg)) in enumerate(cfgs.items()):
        meta["modules"][name] = {"arch": arch, "config": cfg.to_dict()}
        m = make_module(arch, cfg.to_dict(), chunk)
        if arch == "whisper_logmel":
            tensors = {k: v.to(torch.float32).contiguous() for k, v in m.named_buffers()}
        else:
            perturb_(m, seed + i)
            tensors = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
        save_file(tensors, os.path.join(directory, f"{name}.safetensors"), metadata={"format": "pt"})  # one key keeps the bytes reproducible
    with open(os.path.join(directory, "minmo.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta



COSYVOICE2_SIZES = {
    "tiny": dict(
        qwen=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=8192),
        flow=dict(d_model=32, n_heads=4, ffn_dim=48, n_blocks=2, n_up_blocks=4, est_channels=32, est_heads=2,
                  est_head_dim=16, n_transformer=1, n_mid_blocks=2),
        hift=dict(base_channels=32, f0_channels=16),
    ),
}

_COSYVOICE2_YAML = """\
# CosyVoice2 hyperpyyaml (synthetic, small sizes). Tags are read as data by the exporter.
__set_seed1: !apply:random.seed [1986]
sample_rate: {sample_rate}
llm_input_size: {hidden}
llm_output_size: {hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: 6561
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {d_model}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {d_model}
        attention_heads: {n_heads}
        linear_units: {ffn_dim}
        num_blocks: {n_blocks}
        num_up_blocks: {n_up_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {d_model}
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{est_channels}]
            dropout: 0.0
            attention_head_dim: {est_head_dim}
            n_blocks: {n_transformer}
            num_mid_blocks: {n_mid_blocks}
            num_heads: {est_heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {base_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {f0_channels}
"""


def write_cosyvoice2_checkpoint(directory: str, sizes: str = "tiny", seed: int = 0, prompt_tokens: int = 0) -> dict:
    """A CosyVoice2-layout checkpoint with random weights: ``llm.pt`` (CosyVoice2 ``Qwen2LM`` names),
    ``flow.pt``, ``hift.pt`` (weight-norm parametrised, as trained), ``cosyvoice2.yaml`` (hyperpyyaml
    tags), ``CosyVoice-BlankEN/`` (Qwen2 config.json, tokenizer.json without CosyVoice2's added tokens such
    as ``<|endofprompt|>``, like the published folder) and
    ``spk2info.pt`` with one speaker "spk0" (192-d embedding; with ``prompt_tokens`` > 0 also
    prompt speech tokens and their mel). Returns {"speaker": name, "configs": ...}."""
    from ..reference import FlowConfig, HiftConfig
    from ..reference.flow import Flow
    from ..reference.hift import HiFT
    from ..reference.voice_decoder import VoiceLM

    if sizes not in COSYVOICE2_SIZES:
        raise ValueError(f"sizes must be one of {sorted(COSYVOICE2_SIZES)}")
    s = COSYVOICE2_SIZES[sizes]
    os.makedirs(directory, exist_ok=True)
    tdir = os.path.join(directory, "CosyVoice-BlankEN")
    qcfg = write_hf_qwen2(tdir, tiny_qwen2_config(512, **s["qwen"]), seed=seed)
    vcfg = VoiceLMConfig(**{k: v for k, v in qcfg.to_dict().items() if k != "tie_word_embeddings"})
    torch.manual_seed(seed)
    lm = perturb_(VoiceLM(vcfg), seed + 11)
    sd = {}
    for k, v in lm.state_dict().items():
        sd[("llm.model." + k) if k.startswith("model.") else k] = v.clone()
    sd["llm.model.lm_head.weight"] = sd["llm.model.model.embed_tokens.weight"]  # tied, as saved by CosyVoice2
    torch.save(sd, os.path.join(directory, "llm.pt"))
    fcfg = FlowConfig(**s["flow"])
    flow = perturb_(Flow(fcfg), seed + 12)
    torch.save({k: v.clone() for k, v in flow.state_dict().items()}, os.path.join(directory, "flow.pt"))
    hcfg = HiftConfig(**s["hift"])
    hift = perturb_(HiFT(hcfg, weight_norm=True), seed + 13)
    torch.save({k: v.clone() for k, v in hift.state_dict().items()}, os.path.join(directory, "hift.pt"))
    with open(os.path.join(directory, "cosyvoice2.yaml"), "w") as f:
        f.write(_COSYVOICE2_YAML.format(sample_rate=hcfg.sample_rate, hidden=vcfg.hidden_size, **s["flow"], **s["hift"]))
    g = _rng(seed + 14)
    spk = {"embedding": torch.randn(1, 192, generator=g)}
    if prompt_tokens > 0:
        spk["speech_token"] = torch.randint(0, 6561, (1, prompt_tokens), generator=g)
        spk["speech_feat"] = torch.randn(1, 2 * prompt_tokens, 80, generator=g) - 5.0
    torch.save({"spk0": spk}, os.path.join(directory, "spk2info.pt"))
    return {"speaker": "spk0", "voice_lm": vcfg.to_dict(), "flow": fcfg.to_dict(), "hift": hcfg.to_dict()}
