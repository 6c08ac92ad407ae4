"""Streaming sessions through the binding: reference parity, chunk-schedule invariance, bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import minmo_rt
from _bundles import ctc_bundle, minmo_bundle


def _speechlike(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 3 * t)) * t)
    return (tone * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _run(rt, audio, schedule, **kw):
    """Push ``audio`` in pieces of the given sizes (cycled), return (tokens, duplex probs, text)."""
    s = rt.session(max_new_tokens=12, **kw)
    pos, i = 0, 0
    duplex = []
    while pos < audio.size:
        n = schedule[i % len(schedule)]
        s.push(audio[pos:pos + n], 16000)
        pos, i = pos + n, i + 1
        duplex += [(e.p_turn, e.p_barge) for e in s.events(generate=False) if e.kind == "duplex"]
    s.end_of_turn()
    tokens = []
    for e in s.events():
        if e.kind == "duplex":
            duplex.append((e.p_turn, e.p_barge))
        elif e.kind == "text":
            tokens.append(e.token_id)
    text = s.text
    s.close()
    return tokens, np.array(duplex, dtype=np.float64), text


def _reference(bundle, audio, max_new_tokens=12):
    from minmo_rt.export.bundle import build_reference_modules

    rt = minmo_rt.Runtime(bundle)
    prefix, suffix, stops = rt.prompt_ids("asr")
    mods = build_reference_modules(bundle)
    with torch.no_grad():
        feats = mods["frontend"](torch.from_numpy(audio))
        audio_tokens = mods["projector"](mods["encoder"](feats))
        llm = mods["llm"]
        embeds = torch.cat([llm.embed(torch.tensor(prefix)), audio_tokens, llm.embed(torch.tensor(suffix))])
        logits, hidden, cache = llm(embeds)
        p_turn, p_barge, _ = mods["duplex"](hidden[len(prefix):len(prefix) + audio_tokens.shape[0]])
        tokens = []
        nxt = int(logits[-1].argmax())
        while nxt not in stops and len(tokens) < max_new_tokens:
            tokens.append(nxt)
            logits, _, cache = llm(llm.embed(torch.tensor([nxt])), cache)
            nxt = int(logits[-1].argmax())
    return tokens, np.stack([p_turn.numpy(), p_barge.numpy()], axis=1).astype(np.float64)


@pytest.mark.parametrize("streaming", ["chunked", "full"])
def test_session_matches_reference_and_any_chunk_schedule(streaming):
    bundle = minmo_bundle(streaming)
    rt = minmo_rt.Runtime(bundle)
    audio = _speechlike(1.37, seed=1)
    ref_tokens, ref_duplex = _reference(bundle, audio)
    one_push = _run(rt, audio, [audio.size])
    assert one_push[0] == ref_tokens
    np.testing.assert_allclose(one_push[1], ref_duplex, rtol=0, atol=1e-5)
    rng = np.random.default_rng(7)
    for trial in range(3):
        schedule = [int(x) for x in rng.integers(1, 4000, size=17)]
        tokens, duplex, text = _run(rt, audio, schedule)
        assert tokens == one_push[0], f"schedule {trial} changed the tokens"
        assert text == one_push[2]
        np.testing.assert_allclose(duplex, one_push[1], rtol=0, atol=1e-6)


def test_chunked_session_prefills_while_audio_arrives():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    s = rt.session()
    s.push(_speechlike(1.0), 16000)
    duplex = [e for e in s.events(generate=False) if e.kind == "duplex"]
    assert len(duplex) >= 8, "audio tokens should be prefilled (and scored) before the end of speech"
    assert all(0.0 <= e.p_turn <= 1.0 for e in duplex)
    assert [e.time_ms for e in duplex] == [80.0 * (i + 1) for i in range(len(duplex))]
    stats = s.stats()
    assert stats["stages"]["llm_prefill"]["count"] >= 1


def test_sampling_is_reproducible_with_seed():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    audio = _speechlike(0.8, seed=3)
    a = _run(rt, audio, [audio.size], temperature=1.0, top_k=20, top_p=0.9, seed=11)[0]
    b = _run(rt, audio, [audio.size], temperature=1.0, top_k=20, top_p=0.9, seed=11)[0]
    assert a == b


def test_sessions_in_parallel_threads_match_sequential():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    audios = [_speechlike(0.9, seed=s) for s in range(3)]
    expected = [_run(rt, a, [2000])[0] for a in audios]
    results = [None] * 3

    def work(i):
        results[i] = _run(rt, audios[i], [1500])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_bad_input_raises_and_loses_nothing():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    audio = _speechlike(0.6)
    s = rt.session(max_new_tokens=4)
    with pytest.raises(minmo_rt.InvalidInputError, match="dtype"):
        s.push(audio.astype(np.float64), 16000)
    with pytest.raises(minmo_rt.InvalidInputError, match="dtype"):
        s.push((audio * 1000).astype(np.int32), 16000)
    with pytest.raises(minmo_rt.InvalidInputError, match="mono"):
        s.push(np.stack([audio, audio], axis=1), 16000)
    bad = audio.copy()
    bad[100] = np.nan
    with pytest.raises(minmo_rt.InvalidInputError, match="NaN"):
        s.push(bad, 16000)
    with pytest.raises(minmo_rt.InvalidInputError, match="sample rate"):
        s.push(audio, 1000)
    with pytest.raises(minmo_rt.InvalidInputError, match="sample rate"):
        s.push(audio, 16000.5)
    with pytest.raises(minmo_rt.InvalidInputError):
        s.push([0.0, 0.1], 16000)
    s.push(np.zeros(0, np.float32), 16000)  # empty push: a no-op
    assert s._core.turn_samples == 0
    # After all those refusals the session still gives the clean result.
    tokens = _run_after(s, audio)
    s2 = rt.session(max_new_tokens=4)
    assert tokens == _run_after(s2, audio)
    s.close()
    s.close()  # closing twice is fine
    with pytest.raises(minmo_rt.SessionClosedError):
        s.push(audio, 16000)
    with pytest.raises(minmo_rt.SessionClosedError):
        list(s.events())
    with pytest.raises(minmo_rt.SessionClosedError):
        s.end_of_turn()


def _run_after(s, audio):
    s.push(audio, 16000)
    s.end_of_turn()
    return [e.token_id for e in s.events() if e.kind == "text"]


def test_int16_and_resampled_input():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    audio = _speechlike(0.7)
    pcm16 = np.round(audio * 32767).astype(np.int16)
    s = rt.session(max_new_tokens=3)
    s.push(pcm16, 16000)
    assert s._core.turn_samples == pcm16.size
    s.close()
    s = rt.session(max_new_tokens=3)
    s.push(_speechlike(0.7, rate=48000), 48000)
    s.end_of_turn()
    assert s._core.turn_samples == pytest.approx(0.7 * 16000, abs=2)
    list(s.events())
    s.close()


def test_turn_longer_than_kv_cache_is_refused_whole():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    s = rt.session(kv_capacity=64, max_new_tokens=3)
    with pytest.raises(minmo_rt.CacheFullError, match="KV cache"):
        s.push(_speechlike(30.0), 16000)
    assert s._core.turn_samples == 0
    s.push(_speechlike(0.5), 16000)  # a turn that fits still works
    s.end_of_turn()
    list(s.events())
    s.close()


def test_ctc_bundle_session_matches_reference():
    from minmo_rt.export.bundle import build_reference_modules

    bundle = ctc_bundle()
    rt = minmo_rt.Runtime(bundle)
    audio = _speechlike(1.1, seed=5)
    s = rt.session(language="en")
    for start in range(0, audio.size, 2731):
        s.push(audio[start:start + 2731], 16000)
    s.end_of_turn()
    events = list(s.events())
    tags = [e.token_id for e in events if e.kind == "tag"]
    text_ids = [e.token_id for e in events if e.kind == "text"]
    assert events[-1].kind == "end"
    mods = build_reference_modules(bundle)
    with torch.no_grad():
        feats = mods["frontend"](torch.from_numpy(audio))
        _, logits = mods["encoder"](feats, mods["encoder"].query_ids("en"))
    best = logits.argmax(-1).tolist()
    assert tags == best[:4]
    collapsed, prev = [], None
    for t in best[4:]:
        if t != prev and t != 0:
            collapsed.append(t)
        prev = t
    assert text_ids == collapsed
