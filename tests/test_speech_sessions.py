"""Speaking sessions through the binding: speech-to-speech (MinMo mode, speak=True) and
text-to-speech (cascade mode) against the reference pipeline, streaming while the text is
generated, cancel, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt.export.bundle import build_reference_modules
from minmo_rt.export.reference import generate_speech_tokens
from _bundles import minmo_bundle


def _speechlike(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 3 * t)) * t)
    return (tone * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def bundle():
    return minmo_bundle("chunked")


@pytest.fixture(scope="module")
def rt(bundle):
    return minmo_rt.Runtime(bundle)


@pytest.fixture(scope="module")
def refs(bundle):
    return build_reference_modules(bundle)


def _reference_speech(rt, refs, audio, max_new_tokens, seed):
    """Reference: greedy text with the LLM, semantic vectors [embedding ; predicting hidden] through
    the output projector, then the offline voice-token generator."""
    prefix, suffix, stops = rt.prompt_ids("asr")
    with torch.no_grad():
        audio_tokens = refs["projector"](refs["encoder"](refs["frontend"](torch.from_numpy(audio))))
        llm = refs["llm"]
        embeds = torch.cat([llm.embed(torch.tensor(prefix)), audio_tokens, llm.embed(torch.tensor(suffix))])
        logits, hidden, cache = llm(embeds)
        tokens, vectors = [], []
        while True:
            nxt = int(logits[-1].argmax())
            if nxt in stops:
                break
            tokens.append(nxt)
            vectors.append(refs["output_projector"](llm.embed(torch.tensor([nxt])), hidden[-1:]))
            if len(tokens) >= max_new_tokens:
                break
            logits, hidden, cache = llm(llm.embed(torch.tensor([nxt])), cache)
    speech = generate_speech_tokens(refs["voice_lm"], torch.cat(vectors), seed) if vectors else []
    return tokens, speech


def _speak(rt, audio, **kw):
    s = rt.session(max_new_tokens=kw.pop("max_new_tokens", 12), speak=True, speech_output="tokens", **kw)
    s.push(audio, 16000)
    s.end_of_turn()
    events = list(s.events())
    return s, events


def test_speech_to_speech_matches_reference_and_streams(rt, refs):
    audio = _speechlike(1.1, seed=3)
    s, events = _speak(rt, audio, max_new_tokens=12, speech_seed=5)
    kinds = [e.kind for e in events]
    text = [e.token_id for e in events if e.kind == "text"]
    speech = [e.token_id for e in events if e.kind == "speech_token"]
    ref_text, ref_speech = _reference_speech(rt, refs, audio, 12, seed=5)
    assert text == ref_text
    assert speech == ref_speech == s.speech_tokens
    assert kinds[-1] == "end"
    if len(text) >= 10:
        # speech tokens of the first block come before the 6th text token: speaking starts while
        # the text is still being generated (5 text tokens -> 15 speech tokens)
        first_speech = kinds.index("speech_token")
        sixth_text = [i for i, k in enumerate(kinds) if k == "text"][5]
        assert first_speech < sixth_text
        assert kinds[first_speech:first_speech + 15] == ["speech_token"] * 15
    assert len(speech) >= 15 * (len(text) // 5)
    # the same seed gives the same speech; another seed other speech
    s2, events2 = _speak(rt, audio, max_new_tokens=12, speech_seed=5)
    assert [e.token_id for e in events2 if e.kind == "speech_token"] == speech
    if speech:
        s3, events3 = _speak(rt, audio, max_new_tokens=12, speech_seed=6)
        assert [e.token_id for e in events3 if e.kind == "speech_token"] != speech
    # speaking does not change the text of the speech-to-text path
    plain = rt.session(max_new_tokens=12)
    plain.push(audio, 16000)
    plain.end_of_turn()
    assert [e.token_id for e in plain.events() if e.kind == "text"] == text


def test_turns_reuse_their_states(rt):
    """A session keeps its LLM KV cache and its voice LM state across turns (reset, not remade): a
    second turn with the same audio and seed says exactly what the first said, also after a
    cancelled response in between."""
    audio = _speechlike(1.0, seed=7)
    s = rt.session(max_new_tokens=10, speak=True, speech_output="tokens", speech_seed=3)
    turns = []
    for cancel in (False, True, False):
        s.push(audio, 16000)
        s.end_of_turn()
        events = []
        for e in s.events():
            events.append(e)
            if cancel and e.kind == "speech_token":
                s.cancel()
                break
        if not cancel:
            turns.append(([e.token_id for e in events if e.kind == "text"], list(s.speech_tokens)))
    assert turns[0] == turns[1] and turns[0][1]


def test_cancel_mid_speech_frees_state(rt):
    audio = _speechlike(0.9, seed=4)
    s = rt.session(max_new_tokens=40, speak=True, speech_output="tokens")
    s.push(audio, 16000)
    s.end_of_turn()
    got = []
    for e in s.events():
        got.append(e)
        if sum(1 for x in got if x.kind == "speech_token") >= 3:
            break
    n = len(s.speech_tokens)
    s.cancel()
    assert not s._core.responding
    assert len(s.speech_tokens) == n
    assert [e.kind for e in s.events()][-1:] in (["end"], [])
    # the session takes a new turn afterwards
    s.push(audio, 16000)
    s.end_of_turn()
    assert list(s.events())[-1].kind == "end"


def test_speak_bad_input(rt):
    with pytest.raises(minmo_rt.InvalidInputError, match="speaker"):
        rt.session(speak=True)  # audio output needs a speaker embedding
    with pytest.raises(minmo_rt.InvalidInputError, match="speaker"):
        rt.session(speak=True, speaker=np.ones(7, np.float32))  # the flow takes 192 values
    with pytest.raises(minmo_rt.InvalidInputError, match="speaker"):
        rt.session(speak=True, speaker=np.full(192, np.nan, np.float32))
    with pytest.raises(minmo_rt.InvalidInputError, match="speech_output"):
        rt.session(speak=True, speech_output="mp3")


def _tts_reference(refs, ids, seed):
    lm = refs["voice_lm"]
    with torch.no_grad():
        return generate_speech_tokens(lm, lm.text_embed(ids), seed)


def test_tts_bistream_matches_reference(rt, refs):
    ids = rt.voice_tokenizer().encode("turn on the lights in the kitchen please")
    assert len(ids) >= 6
    ref = _tts_reference(refs, ids, seed=9)
    s = rt.tts_session(seed=9, speech_output="tokens")
    got = []
    for i in ids:  # text arrives token by token; speech streams as soon as 5 tokens are there
        s.push_text([i])
        got += [e.token_id for e in s.events() if e.kind == "speech_token"]
    assert len(got) == 15 * (len(ids) // 5)  # whole blocks only, before the text ends
    s.end_text()
    events = list(s.events())
    got += [e.token_id for e in events if e.kind == "speech_token"]
    assert events[-1].kind == "end" and s.finished
    assert got == ref == s.speech_tokens
    # the text as a string in one go gives the same speech
    s2 = rt.tts_session("turn on the lights in the kitchen please", seed=9, speech_output="tokens")
    assert [e.token_id for e in s2.events() if e.kind == "speech_token"] == ref


def test_tts_bad_input(rt):
    with pytest.raises(minmo_rt.InvalidInputError, match="empty"):
        rt.tts_session("   ", speech_output="tokens")
    with pytest.raises(minmo_rt.InvalidInputError, match="too long"):
        rt.tts_session("hello " * 400, speech_output="tokens")
    with pytest.raises(minmo_rt.InvalidInputError, match="speaker"):
        rt.tts_session("hello")
    with pytest.raises(minmo_rt.InvalidInputError, match="unknown instruction"):
        rt.tts_session("hello", instruction="whisper-like", speech_output="tokens")
    with pytest.raises(minmo_rt.InvalidInputError, match="endofprompt"):
        rt.tts_session("hello", instruction="happy", speech_output="tokens")  # this tokenizer has no <|endofprompt|>
    s = rt.tts_session(speech_output="tokens")
    with pytest.raises(minmo_rt.InvalidInputError, match="no text"):
        s.end_text()
    with pytest.raises(minmo_rt.InvalidInputError):
        s.push_text([10 ** 9])  # not a token id
    s.push_text("hello")
    s.end_text()
    with pytest.raises(minmo_rt.InvalidInputError, match="after end_text"):
        s.push_text("more")
    s.cancel()
    with pytest.raises(minmo_rt.InvalidInputError, match="twice"):
        s.cancel()
    s.close()
    with pytest.raises(minmo_rt.SessionClosedError):
        s.push_text("x")


# ----------------------------------------------------------------------------- audio (token2wav)

WAV_TOL = 1e-3  # token2wav stream vs offline reference (tests/test_token2wav.py)


def _offline_audio(refs, tokens, speaker, seed, prompt_tokens=None, prompt_feat=None):
    from minmo_rt.export.reference import token2wav_offline

    _, wav = token2wav_offline(refs["flow"], refs["hift"], torch.tensor(tokens), torch.from_numpy(speaker),
                               None if prompt_tokens is None else torch.from_numpy(prompt_tokens),
                               None if prompt_feat is None else torch.from_numpy(prompt_feat),
                               seed=seed, chunk_tokens=15, left_chunks=4)
    return wav.numpy()


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_speech_to_speech_audio_streams_and_equals_offline(rt, refs):
    if "flow" not in rt.modules:
        pytest.skip("bundle has no token2wav modules")
    from minmo_rt.session import collect_audio

    audio = _speechlike(1.1, seed=3)
    spk = np.random.default_rng(1).standard_normal(192).astype(np.float32)
    s = rt.session(max_new_tokens=12, speak=True, speaker=spk, speech_seed=5)
    s.push(audio, 16000)
    s.end_of_turn()
    events = list(s.events())
    kinds = [e.kind for e in events]
    text = [i for i, k in enumerate(kinds) if k == "text"]
    assert "audio" in kinds
    if len(text) >= 10:
        assert kinds.index("audio") < text[-1]  # audio while the text is still being generated
    wav, rate = collect_audio(events)
    assert rate == 24000
    ref = _offline_audio(refs, s.speech_tokens, spk, seed=5)
    assert wav.shape == ref.shape
    assert _rel(wav, ref) <= WAV_TOL


def test_tts_cosyvoice2_bundle_speaks_end_to_end():
    from _bundles import cosyvoice2_runtime
    from minmo_rt.export.checkpoints import load_speakers
    from minmo_rt.session import collect_audio

    rt, ckpt = cosyvoice2_runtime()
    refs = build_reference_modules(rt.bundle_dir)
    spk = load_speakers(ckpt)["spk0"]
    for instruction, prompt in ((None, False), ("happy", True)):
        kw = dict(speaker=spk["embedding"], seed=4, instruction=instruction)
        if prompt:
            kw.update(prompt_speech_tokens=spk["speech_token"], prompt_mel=spk["speech_feat"])
        s = rt.tts_session(**kw)
        events = []
        for piece in ["turn on", " the lights", " in the kitchen", " please"]:
            s.push_text(piece)
            events += list(s.events())
        assert any(e.kind == "audio" for e in events)  # audio before the text has ended
        s.end_text()
        events += list(s.events())
        wav, rate = collect_audio(events)
        assert rate == 24000
        tok = rt.voice_tokenizer()
        ids = (tok.encode(minmo_rt.tasks.instruction_prompt(instruction)) if instruction else []) + \
            tok.encode("turn on the lights in the kitchen please")
        lm = refs["voice_lm"]
        with torch.no_grad():
            ref_tokens = generate_speech_tokens(lm, lm.text_embed(ids), 4)
        assert s.speech_tokens == ref_tokens
        ref = _offline_audio(refs, ref_tokens, spk["embedding"], 4, spk["speech_token"] if prompt else None,
                             spk["speech_feat"] if prompt else None)
        assert _rel(wav, ref) <= WAV_TOL


def test_tts_stored_speaker_by_name():
    """spk2info.pt voices travel in the bundle: speaker="spk0" speaks exactly as the arrays do, and
    unknown names are refused with the list of stored ones."""
    from _bundles import cosyvoice2_runtime
    from minmo_rt.export.checkpoints import load_speakers

    rt, ckpt = cosyvoice2_runtime()
    assert rt.speakers == ["spk0"]
    spk = load_speakers(ckpt)["spk0"]
    stored = rt.speaker("spk0")
    np.testing.assert_array_equal(stored["embedding"], spk["embedding"])
    np.testing.assert_array_equal(stored["speech_token"], spk["speech_token"])
    np.testing.assert_array_equal(stored["speech_feat"], spk["speech_feat"])
    from minmo_rt.session import collect_audio

    def speak(**kw):
        s = rt.tts_session("turn on the lights", seed=3, **kw)
        events = list(s.events())
        return s.speech_tokens, collect_audio(events)[0]

    tokens, wav = speak(speaker="spk0")
    tokens_a, wav_a = speak(speaker=spk["embedding"], prompt_speech_tokens=spk["speech_token"], prompt_mel=spk["speech_feat"])
    _, wav_plain = speak(speaker=spk["embedding"])  # no voice-imitation prompt: other audio
    assert tokens == tokens_a and wav.size > 0
    np.testing.assert_array_equal(wav, wav_a)
    assert wav_plain.shape != wav.shape or not np.array_equal(wav_plain, wav)
    with pytest.raises(minmo_rt.InvalidInputError, match="unknown speaker 'nobody'.*spk0"):
        rt.tts_session("hello", speaker="nobody")
    plain = minmo_rt.Runtime(minmo_bundle())
    assert plain.speakers == []
    with pytest.raises(minmo_rt.InvalidInputError, match="no stored speakers"):
        plain.speaker("spk0")
