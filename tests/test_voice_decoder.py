"""Voice decoder: output projector and voice LM in the C++ runtime vs the PyTorch reference, the
5:15 interleave rules, and the seeded repetition-aware sampling (same tokens as the reference)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.bundle import build_reference_modules
from minmo_rt.export.reference import (ENDED_TOKEN, NEED_TEXT_TOKEN, SplitMix64, VoiceLMConfig,
                                       VoiceTokenStream, generate_speech_tokens, ras_sample)
from minmo_rt.export.verify import verify_bundle
from _bundles import minmo_bundle


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def bundle():
    return minmo_bundle("chunked")


@pytest.fixture(scope="module")
def refs(bundle):
    return build_reference_modules(bundle, ["llm", "output_projector", "voice_lm"])


def _voice_stream(bundle, seed):
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    entry = manifest["modules"]["voice_lm"]
    return _core.testing_voice.VoiceStream(os.path.join(bundle, entry["weights"]), json.dumps(entry["config"]), seed)


def _vectors(refs, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = refs["voice_lm"].vcfg.hidden_size
    return (0.5 * torch.randn(n, d, generator=g)).float()


def test_splitmix64_matches_reference():
    r = SplitMix64(12345)
    assert _core.testing_voice.splitmix64(12345, 6) == [r.next() for _ in range(6)]


def test_modules_match_reference(bundle, refs):
    rt = minmo_rt.Runtime(bundle)
    rng = np.random.default_rng(1)
    op = refs["output_projector"]
    e = rng.standard_normal((9, op.cfg.embed_dim)).astype(np.float32)
    h = rng.standard_normal((9, op.cfg.llm_hidden)).astype(np.float32)
    got = rt.run_module("output_projector", {"token_embeds": e, "hidden": h})["semantic"]
    with torch.no_grad():
        ref = op(torch.from_numpy(e), torch.from_numpy(h)).numpy()
    assert _rel(got, ref) <= 1e-4
    lm = refs["voice_lm"]
    with torch.no_grad():
        x = torch.cat([lm.sos(), lm.text_embed([3, 5, 7]), lm.task_id(), lm.speech_embed([0, 6560, 17])])
        ref = lm.step_logits(x)[0].numpy()
    got = rt.run_module("voice_lm", {"embeds": x.numpy()})["logits"]
    assert got.shape == (8, lm.vcfg.speech_token_size + 3)
    assert _rel(got, ref) <= 1e-4


def test_verify_covers_voice_modules(bundle):
    rows = [r for r in verify_bundle(bundle) if r.module in ("output_projector", "voice_lm")]
    assert {r.module for r in rows} == {"output_projector", "voice_lm"}
    assert all(r.ok for r in rows), rows


def test_ras_sampling_rules():
    cfg = VoiceLMConfig(speech_token_size=50, top_k=3, top_p=0.99, win_size=10, tau_r=0.1)
    logits = np.full(53, -30.0, np.float32)
    logits[[4, 9, 11]] = [5.0, 4.9, 4.8]
    logits[20] = 4.7  # 4th best: outside top_k
    draws = [ras_sample(logits, 50, [], cfg, SplitMix64(s)) for s in range(200)]
    assert set(draws) == {4, 9, 11}
    # a token already in the window is re-drawn from the whole distribution
    draws = [ras_sample(logits, 50, [4, 9, 11], cfg, SplitMix64(s)) for s in range(300)]
    assert 20 in draws
    # ids >= n_allowed (eos / fill) are never drawn
    logits[50:] = 100.0
    assert all(ras_sample(logits, 50, [], cfg, SplitMix64(s)) < 50 for s in range(50))


def test_interleave_rules_reference(refs):
    """5 vectors then 15 tokens per block, fill forced (never sampled / fed), final phase after the
    text with task_id; the fed sequence is the spec's [sos, 5 v, 15 s, 5 v, 15 s, ..., rest, task]."""
    lm = refs["voice_lm"]
    c = lm.vcfg
    fed = []
    orig = lm.step_logits

    def spy(x, cache=None):
        fed.append(x.shape[0])
        return orig(x, cache)

    lm.step_logits = spy
    try:
        s = VoiceTokenStream(lm, seed=3)
        s.push_text(_vectors(refs, 12))
        out = []
        while True:
            t = s.step()
            if t == NEED_TEXT_TOKEN:
                break
            out.append(t)
        assert len(out) == 2 * c.speech_ratio  # two full blocks, then waiting for text
        assert all(0 <= t < c.speech_token_size for t in out)
        # first block: sos + 5 vectors; then 14 single tokens; 2nd block: 15th token + 5 vectors
        assert fed[:15] == [1 + c.text_ratio] + [1] * (c.speech_ratio - 1)
        assert fed[15] == 1 + c.text_ratio
        s.end_text()
        while s.step() != ENDED_TOKEN:
            pass
        assert fed[30] == 1 + 2 + 1  # last token of block 2 + 2 remaining vectors + task_id
        assert len(s.tokens) <= c.max_token_text_ratio * 12
    finally:
        del lm.step_logits


@pytest.mark.parametrize("schedule", [None, [1], [3, 7], [5]])
def test_runtime_tokens_equal_reference(bundle, refs, schedule):
    """The C++ interleave stream gives exactly the reference generator's tokens for the same seed,
    for any push schedule."""
    vec = _vectors(refs, 11, seed=2)
    ref = generate_speech_tokens(refs["voice_lm"], vec, seed=7)
    if schedule is not None:
        assert generate_speech_tokens(refs["voice_lm"], vec, seed=7, schedule=schedule) == ref
    s = _voice_stream(bundle, 7)
    sizes = schedule or [vec.shape[0]]
    pos, i = 0, 0
    while pos < vec.shape[0]:
        n = sizes[i % len(sizes)]
        s.push_text(vec[pos:pos + n].numpy())
        pos, i = pos + n, i + 1
        while s.step() >= 0:
            pass
    s.end_text()
    while s.step() != _core.testing_voice.ENDED:
        pass
    assert s.tokens == ref
    assert len(ref) >= 2 * 15


def test_seed_changes_tokens(bundle, refs):
    vec = _vectors(refs, 6, seed=4)
    a = generate_speech_tokens(refs["voice_lm"], vec, seed=1)
    b = generate_speech_tokens(refs["voice_lm"], vec, seed=2)
    assert a != b


def test_stream_bad_input(bundle, refs):
    s = _voice_stream(bundle, 0)
    with pytest.raises(minmo_rt.InvalidInputError):
        s.push_text(np.zeros((2, 3), np.float32))
    s.end_text()
    with pytest.raises(minmo_rt.InvalidInputError):
        s.push_text(_vectors(refs, 1).numpy())
    assert s.step() == _core.testing_voice.ENDED  # no text: nothing to say
    long = _core.testing_voice.VoiceStream.__init__  # noqa: F841
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    entry = manifest["modules"]["voice_lm"]
    small = _core.testing_voice.VoiceStream(os.path.join(bundle, entry["weights"]), json.dumps(entry["config"]), 0, 64)
    with pytest.raises(minmo_rt.CacheFullError):
        small.push_text(_vectors(refs, 10).numpy())


# ----------------------------------------------------------------------------- CosyVoice2 layout

@pytest.fixture(scope="module")
def cosyvoice2_dir(tmp_path_factory):
    from minmo_rt.export.checkpoints.synthetic import write_cosyvoice2_checkpoint

    d = str(tmp_path_factory.mktemp("cv2") / "CosyVoice2-tiny")
    write_cosyvoice2_checkpoint(d, seed=3, prompt_tokens=6)
    return d


def test_cosyvoice2_checkpoint_loads_and_builds(cosyvoice2_dir, tmp_path):
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints import detect_format, load_checkpoint, load_speakers
    from minmo_rt.export.checkpoints.common import safe_torch_load
    from minmo_rt.export.reference import VoiceLM, VoiceLMConfig

    assert detect_format(cosyvoice2_dir) == "cosyvoice2"
    ck = load_checkpoint(cosyvoice2_dir)
    assert [m.name for m in ck.modules] == ["voice_lm", "flow", "hift"]
    assert ck.tokenizer.special["<|endofprompt|>"] >= 0
    spk = load_speakers(cosyvoice2_dir)["spk0"]
    assert spk["embedding"].shape == (192,) and spk["speech_token"].shape == (6,) and spk["speech_feat"].shape == (12, 80)
    out = str(tmp_path / "bundle")
    assert cli.main(["build", cosyvoice2_dir, "-o", out, "--no-onnx"]) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["mode"] == "cascade"
    # the published BlankEN tokenizer lacks CosyVoice2's added tokens; the bundle's copy has them, appended
    # after the vocabulary in CosyVoice2's order, and they fit the voice LM's text embedding
    from tokenizers import Tokenizer
    from minmo_rt.export.checkpoints.cosyvoice2 import COSYVOICE2_ADDED_SPECIALS

    src_tok = Tokenizer.from_file(os.path.join(cosyvoice2_dir, "CosyVoice-BlankEN", "tokenizer.json"))
    assert src_tok.token_to_id("<|endofprompt|>") is None
    entry = manifest["modules"]["voice_lm"]["tokenizer"]
    bundle_tok = Tokenizer.from_file(os.path.join(out, entry["file"]))
    eop = entry["special_tokens"]["<|endofprompt|>"]
    assert eop == bundle_tok.token_to_id("<|endofprompt|>") == src_tok.get_vocab_size(with_added_tokens=True)
    assert bundle_tok.encode("calm<|endofprompt|>hi").ids.count(eop) == 1
    assert [bundle_tok.token_to_id(t) for t in COSYVOICE2_ADDED_SPECIALS[3:]] == list(range(eop + 1, eop + 17))
    assert entry["vocab_size"] == eop + 17 <= manifest["modules"]["voice_lm"]["config"]["vocab_size"]
    # the bundle's voice LM computes what the llm.pt weights compute under CosyVoice2's names
    raw = safe_torch_load(os.path.join(cosyvoice2_dir, "llm.pt"))
    lm = VoiceLM(VoiceLMConfig.from_dict(manifest["modules"]["voice_lm"]["config"])).eval()
    lm.load_state_dict({k.replace("llm.model.model.", "model."): v for k, v in raw.items() if k != "llm.model.lm_head.weight"})
    ref = build_reference_modules(out, ["voice_lm"])["voice_lm"]
    with torch.no_grad():
        x = torch.cat([lm.sos(), lm.text_embed([1, 2, 3]), lm.task_id(), lm.speech_embed([5, 6])])
        assert torch.equal(ref.step_logits(x)[0], lm.step_logits(x)[0])
    assert raw["llm_decoder.weight"].shape == (6564, lm.vcfg.hidden_size)


def test_cosyvoice2_yaml_is_parsed_as_data(tmp_path):
    from minmo_rt.export.checkpoints.common import CheckpointError
    from minmo_rt.export.checkpoints.cosyvoice2 import parse_hyperpyyaml

    marker = tmp_path / "pwned"
    p = tmp_path / "cosyvoice2.yaml"
    p.write_text(f"a: 3\nb: !ref <a>\nc: !ref <a> * <b>\nrun: !apply:os.system ['touch {marker}']\n"
                 "obj: !new:builtins.open\n    file: /etc/hostname\n")
    conf = parse_hyperpyyaml(str(p))
    assert conf["b"] == 3 and conf["c"] == 9
    assert conf["run"].kind == "apply" and conf["run"].target == "os.system"
    assert conf["obj"].target == "builtins.open" and conf["obj"]["file"] == "/etc/hostname"
    assert not marker.exists()
    p.write_text(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CheckpointError):
        parse_hyperpyyaml(str(p))
    assert not marker.exists()


def test_cosyvoice2_bad_checkpoint(cosyvoice2_dir, tmp_path):
    import shutil

    from minmo_rt.export.checkpoints import load_checkpoint
    from minmo_rt.export.checkpoints.common import CheckpointError

    bad = tmp_path / "bad"
    shutil.copytree(cosyvoice2_dir, bad)
    sd = torch.load(bad / "llm.pt", weights_only=True)
    sd["speech_embedding.weight"] = sd["speech_embedding.weight"][:100]
    torch.save(sd, bad / "llm.pt")
    with pytest.raises(CheckpointError, match="speech_embedding"):
        load_checkpoint(str(bad))
    shutil.rmtree(bad / "CosyVoice-BlankEN")
    with pytest.raises(CheckpointError, match="text LM folder"):
        load_checkpoint(str(bad))
