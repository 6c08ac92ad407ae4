"""FunASR SenseVoice-Small directory: model.pt (tensor state dict), config.yaml, am.mvn (kaldi
nnet text with <AddShift> / <Rescale>), the SentencePiece BPE model."""
from __future__ import annotations

import glob
import os

import torch

from ..reference import FbankFrontendConfig, KaldiFbankFrontend, SenseVoiceSmallConfig, SenseVoiceSmallEncoder
from .common import (CheckpointError, LoadedCheckpoint, LoadedModule, TokenizerInfo, check_state_dict,
                     find_state_dict, frontend_buffers, read_text, safe_torch_load, to_fp32)

SENSEVOICE_TAGS = ("<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>", "<|NEUTRAL|>", "<|HAPPY|>",
                   "<|SAD|>", "<|ANGRY|>", "<|EMO_UNKNOWN|>", "<|Speech|>", "<|BGM|>", "<|Laughter|>",
                   "<|Applause|>", "<|Event_UNK|>", "<|withitn|>", "<|woitn|>")


def is_funasr_sensevoice(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in ("model.pt", "config.yaml"))


def parse_am_mvn(path: str) -> tuple[list[float], list[float]]:
    """(shift, scale) from a kaldi nnet text file: the vectors after <AddShift> and <Rescale>
    (each written as ``<LearnRateCoef> 0 [ v1 v2 ... ]``)."""
    tokens = read_text(path).split()

    def vector_after(tag: str) -> list[float]:
        if tag not in tokens:
            raise CheckpointError(f"{path}: no {tag} block (expected kaldi nnet text with <AddShift> and <Rescale>)")
        i = tokens.index(tag)
        dims = tokens[i + 1:i + 3]
        try:
            start = tokens.index("[", i) + 1
            end = tokens.index("]", start)
            values = [float(t) for t in tokens[start:end]]
        except ValueError:
            raise CheckpointError(f"{path}: malformed {tag} block (expected '[ numbers ]')") from None
        if len(dims) == 2 and all(d.isdigit() for d in dims) and int(dims[1]) != len(values):
            raise CheckpointError(f"{path}: {tag} says {dims[1]} values but has {len(values)}")
        return values

    shift, scale = vector_after("<AddShift>"), vector_after("<Rescale>")
    if len(shift) != len(scale):
        raise CheckpointError(f"{path}: <AddShift> has {len(shift)} values, <Rescale> {len(scale)}")
    return shift, scale


def _spm_model(path: str, conf: dict) -> str:
    named = ((conf.get("tokenizer_conf") or {}).get("bpemodel"))
    if named:
        cand = os.path.join(path, os.path.basename(str(named)))
        if os.path.isfile(cand):
            return cand
    found = sorted(glob.glob(os.path.join(path, "*.bpe.model"))) or sorted(glob.glob(os.path.join(path, "*.model")))
    if not found:
        raise CheckpointError(f"{path}: no SentencePiece model (*.bpe.model or *.model)")
    return found[0]


def spm_tokenizer_info(model_path: str) -> TokenizerInfo:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    special = {}
    for t in SENSEVOICE_TAGS:
        i = sp.piece_to_id(t)
        if i != sp.unk_id() and sp.id_to_piece(i) == t:
            special[t] = i
    return TokenizerInfo(kind="sentencepiece", path=model_path, special=special,
                         eos_id=sp.eos_id() if sp.eos_id() >= 0 else None, vocab_size=sp.get_piece_size())


def load_funasr_sensevoice(path: str) -> LoadedCheckpoint:
    import yaml

    conf = yaml.safe_load(read_text(os.path.join(path, "config.yaml"))) or {}
    enc_conf = conf.get("encoder_conf") or {}
    fe_conf = conf.get("frontend_conf") or {}
    if not enc_conf:
        raise CheckpointError(f"{path}/config.yaml: no encoder_conf")
    sd = find_state_dict(safe_torch_load(os.path.join(path, "model.pt")), os.path.join(path, "model.pt"))
    if "ctc.ctc_lo.weight" not in sd or "embed.weight" not in sd:
        raise CheckpointError(f"{path}/model.pt: not a SenseVoice-Small state dict (no ctc.ctc_lo.weight / embed.weight)")
    n_mels = int(fe_conf.get("n_mels", 80))
    lfr_m, lfr_n = int(fe_conf.get("lfr_m", 7)), int(fe_conf.get("lfr_n", 6))
    fe_cfg = FbankFrontendConfig(sample_rate=int(fe_conf.get("fs", 16000)), num_mel_bins=n_mels,
                                 frame_length_ms=float(fe_conf.get("frame_length", 25)),
                                 frame_shift_ms=float(fe_conf.get("frame_shift", 10)), lfr_m=lfr_m, lfr_n=lfr_n)
    if str(fe_conf.get("window", "hamming")) != "hamming":
        raise CheckpointError(f"{path}/config.yaml: frontend window {fe_conf.get('window')!r} is not supported (hamming only)")
    enc_cfg = SenseVoiceSmallConfig(
        input_dim=n_mels * lfr_m, d_model=int(enc_conf.get("output_size", 512)),
        n_heads=int(enc_conf.get("attention_heads", 4)), ffn_dim=int(enc_conf.get("linear_units", 2048)),
        n_blocks=int(enc_conf.get("num_blocks", 50)), n_tp_blocks=int(enc_conf.get("tp_blocks", 20)),
        fsmn_kernel=int(enc_conf.get("kernel_size", 11)), sanm_shift=int(enc_conf.get("sanm_shfit", enc_conf.get("sanm_shift", 0))),
        vocab_size=int(sd["ctc.ctc_lo.weight"].shape[0]), n_query_embed=int(sd["embed.weight"].shape[0]))
    with torch.device("meta"):
        ref = SenseVoiceSmallEncoder(enc_cfg)
    enc_sd = check_state_dict("encoder", ref, to_fp32(sd), os.path.join(path, "model.pt"))

    frontend = KaldiFbankFrontend(fe_cfg)
    mvn = os.path.join(path, "am.mvn")
    if os.path.isfile(mvn):
        shift, scale = parse_am_mvn(mvn)
        if len(shift) != fe_cfg.output_dim:
            raise CheckpointError(f"{mvn}: {len(shift)} CMVN values, the frontend makes {fe_cfg.output_dim}-d features")
        frontend.cmvn_shift.copy_(torch.tensor(shift, dtype=torch.float32))
        frontend.cmvn_scale.copy_(torch.tensor(scale, dtype=torch.float32))
    else:
        fe_cfg.apply_cmvn = False
        frontend = KaldiFbankFrontend(fe_cfg)
    tok = spm_tokenizer_info(_spm_model(path, conf))
    if tok.vocab_size != enc_cfg.vocab_size:
        raise CheckpointError(f"{path}: SentencePiece model has {tok.vocab_size} pieces but the CTC head has {enc_cfg.vocab_size} outputs")
    modules = [
        LoadedModule("frontend", "kaldi_fbank", fe_cfg.to_dict(), frontend_buffers(frontend),
                     {"source": "funasr-sensevoice", "cmvn": "am.mvn" if os.path.isfile(mvn) else None}),
        LoadedModule("encoder", "sensevoice_small", enc_cfg.to_dict(), enc_sd,
                     {"source": "funasr-sensevoice", "ctc_blank_id": 0}),
    ]
    return LoadedCheckpoint("funasr-sensevoice", path, modules, tokenizer=tok)
