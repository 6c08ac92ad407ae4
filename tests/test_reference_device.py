"""The PyTorch reference modules create every tensor on their input's device (no reliance on a
default-device context): on the meta device, with nothing entered, a tensor made on the CPU by
mistake fails the op that mixes it in. This is what lets torch.compile trace them on a GPU."""
from __future__ import annotations

import math

import pytest
import torch

from _bundles import minmo_bundle
from minmo_rt.export.bundle import build_reference_modules

META = torch.device("meta")


@pytest.fixture(scope="module")
def refs():
    return {name: m.to(META).eval() for name, m in build_reference_modules(minmo_bundle("chunked")).items()}


def test_speech_to_text_path_on_meta(refs):
    enc, proj, llm, duplex = refs["encoder"], refs["projector"], refs["llm"], refs["duplex"]
    n_mels = enc.cfg.n_mels
    with torch.no_grad():
        frames = enc(torch.zeros(64, n_mels, device=META))
        audio = proj(frames)
        logits, hidden, cache = llm(audio)
        more, _, _ = llm(torch.zeros(2, audio.shape[1], device=META), cache)  # decode over a cache
        p_turn = duplex(hidden)[0]
    for t in (frames, audio, logits, hidden, more, p_turn):
        assert t.device == META


def test_token2wav_path_on_meta(refs):
    flow, hift = refs["flow"], refs["hift"]
    cfg = flow.cfg
    with torch.no_grad():
        # the encoder after the token embedding (embed_tokens range-checks ids with .item(), which meta has not)
        emb = flow.input_embedding(torch.zeros(12, dtype=torch.long, device=META))
        mu = flow.encoder_proj(flow.encoder(emb))
        t = mu.shape[0]
        zeros = torch.zeros(t, cfg.mel_dim, device=META)
        mel = flow.decoder.solve(zeros, mu, torch.zeros(cfg.mel_dim, device=META), zeros, None)
        per_frame = hift.cfg.hop_len * math.prod(hift.cfg.upsample_rates)  # samples per mel frame
        spec = hift.spectrum(mel, torch.zeros(t * per_frame, device=META))
    assert mu.device == mel.device == spec.device == META
