"""Checkpoint loaders on synthetic checkpoints written in the real layouts (random weights)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minmo_rt.export.checkpoints import (CheckpointError, detect_format, load_checkpoint, parse_am_mvn,
                                         safe_torch_load)
from minmo_rt.export.checkpoints import synthetic
from minmo_rt.export.reference import Qwen2Config, Qwen2Decoder


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------ minmo

def test_minmo_writer_roundtrip(tmp_path):
    t0 = time.perf_counter()
    meta = synthetic.write_minmo_checkpoint(str(tmp_path / "m"), seed=3)
    assert time.perf_counter() - t0 < 10.0, "the demo writes this checkpoint; it must stay fast"
    assert detect_format(str(tmp_path / "m")) == "minmo"
    ck = load_checkpoint(str(tmp_path / "m"))
    assert [m.name for m in ck.modules] == ["frontend", "encoder", "projector", "llm", "duplex", "output_projector", "voice_lm",
                                           "flow", "hift"]
    assert [m.arch for m in ck.modules] == ["whisper_logmel", "sensevoice_large", "projector", "qwen2", "duplex",
                                          "output_projector", "voice_lm", "cosyvoice2_flow", "cosyvoice2_hift"]
    assert ck.streaming == {"encoder_attention": "chunked", "chunk_frames": 8, "left_chunks": 4}
    assert ck.prompt["audio_bos"] == "<|audio_bos|>"
    assert ck.tokenizer.kind == "hf-tokenizers"
    assert ck.module("llm").config["vocab_size"] == ck.tokenizer.vocab_size
    for m in ck.modules:
        assert m.config == meta["modules"][m.name]["config"]
        stored = load_file(str(tmp_path / "m" / f"{m.name}.safetensors"))
        assert set(stored) == set(m.state_dict)
        for k, v in stored.items():
            assert torch.equal(v.float(), m.state_dict[k]), k
    # the same seed writes the same weights; another seed does not
    synthetic.write_minmo_checkpoint(str(tmp_path / "m2"), seed=3)
    synthetic.write_minmo_checkpoint(str(tmp_path / "m3"), seed=4)
    a, b, c = (load_file(str(tmp_path / d / "llm.safetensors")) for d in ("m", "m2", "m3"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_minmo_bad_version_and_missing_weights(tmp_path):
    d = tmp_path / "m"
    synthetic.write_minmo_checkpoint(str(d))
    meta = json.loads((d / "minmo.json").read_text())
    (d / "minmo.json").write_text(json.dumps({**meta, "version": 9}))
    with pytest.raises(CheckpointError, match="version 9"):
        load_checkpoint(str(d))
    (d / "minmo.json").write_text(json.dumps(meta))
    os.remove(d / "projector.safetensors")
    with pytest.raises(CheckpointError, match="projector.safetensors"):
        load_checkpoint(str(d))
    meta["modules"]["projector"]["config"]["output_dim"] = 96
    (d / "minmo.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="projector output_dim 96 != llm hidden_size 128"):
        load_checkpoint(str(d))


# ------------------------------------------------------------------------------------------ HF Qwen2

def _greedy_reference(dec: Qwen2Decoder, ids: list[int], n: int) -> list[int]:
    out = []
    with torch.no_grad():
        logits, _, cache = dec(dec.embed(torch.tensor(ids)))
        for _ in range(n):
            nxt = int(logits[-1].argmax())
            out.append(nxt)
            logits, _, cache = dec(dec.embed(torch.tensor([nxt])), cache)
    return out


@pytest.mark.parametrize("variant", ["single", "sharded", "tied"])
def test_hf_qwen2_matches_transformers(tmp_path, variant):
    import transformers
    from tokenizers import Tokenizer

    d = str(tmp_path / "q")
    cfg = {"tie_word_embeddings": True} if variant == "tied" else None
    synthetic.write_hf_qwen2(d, cfg, seed=11, max_shard_size="100KB" if variant == "sharded" else None)
    if variant == "sharded":
        assert os.path.isfile(os.path.join(d, "model.safetensors.index.json"))
        assert not os.path.isfile(os.path.join(d, "model.safetensors"))
    assert detect_format(d) == "hf-qwen2"
    ck = load_checkpoint(d)
    (llm,) = ck.modules
    assert (llm.name, llm.arch) == ("llm", "qwen2")
    assert ("lm_head.weight" in llm.state_dict) == (variant != "tied")
    dec = Qwen2Decoder(Qwen2Config.from_dict(llm.config))
    missing = dec.load_state_dict(llm.state_dict, strict=False).missing_keys
    assert missing == ([] if variant != "tied" else ["lm_head.weight"])
    dec.eval()

    hf = transformers.Qwen2ForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ids = tok.encode("<|im_start|>user\nTranscribe speech into English: hello<|im_end|>\n<|im_start|>assistant\n").ids
    assert tok.token_to_id("<|im_start|>") == ids[0]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
        ours, _, _ = dec(dec.embed(torch.tensor(ids)))
    assert _rel(ours, ref) <= 1e-5
    n = 10
    with torch.no_grad():
        gen = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n,
                          min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert _greedy_reference(dec, ids, n) == gen
    assert ck.tokenizer.eos_id == tok.token_to_id("<|im_end|>")
    assert ck.prompt == {"audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}


def test_hf_qwen2_refuses_pickle_only_folder(tmp_path):
    d = tmp_path / "q"
    synthetic.write_hf_qwen2(str(d))
    os.remove(d / "model.safetensors")
    (d / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="only safetensors"):
        load_checkpoint(str(d))


def test_hf_qwen2_refuses_wrong_shapes(tmp_path):
    d = tmp_path / "q"
    synthetic.write_hf_qwen2(str(d))
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="wrong shapes.*mlp"):
        load_checkpoint(str(d))


# ------------------------------------------------------------------------------------------ FunASR

def test_funasr_roundtrip(tmp_path):
    d = str(tmp_path / "sv")
    cfg = synthetic.write_funasr_sensevoice(d, seed=5)
    assert detect_format(d) == "funasr-sensevoice"
    ck = load_checkpoint(d)
    fe, enc = ck.modules
    assert (fe.name, fe.arch, enc.name, enc.arch) == ("frontend", "kaldi_fbank", "encoder", "sensevoice_small")
    assert enc.config == cfg.to_dict()
    assert set(fe.state_dict) == {"mel_banks", "window", "cmvn_shift", "cmvn_scale"}
    assert fe.config["lfr_m"] * fe.config["num_mel_bins"] == enc.config["input_dim"] == 560
    saved = torch.load(os.path.join(d, "model.pt"), weights_only=True)
    assert set(saved) == set(enc.state_dict) and all(torch.equal(saved[k], enc.state_dict[k]) for k in saved)
    shift, scale = parse_am_mvn(os.path.join(d, "am.mvn"))
    np.testing.assert_array_equal(fe.state_dict["cmvn_shift"].numpy(), np.float32(shift))
    np.testing.assert_array_equal(fe.state_dict["cmvn_scale"].numpy(), np.float32(scale))
    assert ck.tokenizer.kind == "sentencepiece" and ck.tokenizer.vocab_size == enc.config["vocab_size"]
    assert {"<|en|>", "<|zh|>", "<|NEUTRAL|>", "<|HAPPY|>", "<|Speech|>", "<|withitn|>", "<|woitn|>"} <= set(ck.tokenizer.special)


def test_am_mvn_values_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    shift = (-8 - 3 * rng.random(560)).astype(np.float32)
    scale = (0.1 + rng.random(560)).astype(np.float32)
    p = str(tmp_path / "am.mvn")
    synthetic.write_am_mvn(p, shift, scale)
    got_shift, got_scale = parse_am_mvn(p)
    np.testing.assert_array_equal(np.float32(got_shift), shift)
    np.testing.assert_array_equal(np.float32(got_scale), scale)
    # FunASR writes the values on their own line after the block header: same result
    text = open(p).read().replace("<LearnRateCoef> 0 [", "\n<LearnRateCoef> 0 [\n")
    open(p, "w").write(text)
    np.testing.assert_array_equal(np.float32(parse_am_mvn(p)[0]), shift)
    open(p, "w").write("<Nnet>\n<AddShift> 560 560\n<LearnRateCoef> 0 [ 1 2 ]\n</Nnet>\n")
    with pytest.raises(CheckpointError, match="Rescale|says 560"):
        parse_am_mvn(p)


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_funasr_nested_state_dict(tmp_path, wrap):
    d = str(tmp_path / "sv")
    synthetic.write_funasr_sensevoice(d, {"n_blocks": 2, "n_tp_blocks": 1}, wrap=wrap)
    ck = load_checkpoint(d)
    assert ck.module("encoder").config["n_blocks"] == 2


class _Evil:
    """Unpickling this object opens (creates) a file: code execution, harmless but visible."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    d = tmp_path / "sv"
    synthetic.write_funasr_sensevoice(str(d))
    marker = tmp_path / "pwned"
    sd = torch.load(d / "model.pt", weights_only=True)
    torch.save({"state_dict": sd, "extra": _Evil(str(marker))}, d / "model.pt")
    with pytest.raises(CheckpointError, match=r"refused to load.*weights_only") as ei:
        load_checkpoint(str(d))
    assert "open" in str(ei.value)  # names what the pickle would have called
    assert not marker.exists(), "the loader executed code from the pickle"
    with pytest.raises(CheckpointError):
        safe_torch_load(str(d / "model.pt"))
    assert not marker.exists()
    # the file really is malicious: an unsafe load (in a throw-away process) creates the marker
    code = f"import torch; torch.load({str(d / 'model.pt')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_funasr_refuses_non_state_dict(tmp_path):
    d = tmp_path / "sv"
    synthetic.write_funasr_sensevoice(str(d))
    torch.save([torch.zeros(3)], d / "model.pt")
    with pytest.raises(CheckpointError, match="expected a tensor state dict"):
        load_checkpoint(str(d))


# ------------------------------------------------------------------------------------------ detection

def test_detect_format_errors(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError) as ei:
        detect_format(str(tmp_path / "junk"))
    msg = str(ei.value)
    for expected in ("minmo.json", "config.json", "model_type 'qwen2'", "model.pt + config.yaml", "weights.npz"):
        assert expected in msg
    with pytest.raises(CheckpointError, match="does not exist"):
        detect_format(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointError, match="not a directory"):
        detect_format(str(tmp_path / "junk" / "weights.npz"))
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        detect_format(str(tmp_path / "llama"))
