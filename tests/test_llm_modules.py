"""C++ input projector, Qwen2 decoder, sampling and duplex predictor (minmo_rt._core.testing_llm)
vs the PyTorch reference (export/reference) and, for Qwen2, Hugging Face transformers.

Tiny random modules (norm weights and biases randomised too) are saved with safetensors, run
through the C++ runtime and compared by relative error ||out - ref|| / ||ref||:
  - projector (full and chunked attention), Qwen2 logits and hidden states, duplex probabilities:
    <= 1e-4 against the reference
  - streaming / incremental paths (projector push schedules, Qwen2 prefill + decode segments, duplex
    push schedules) against the one-shot C++ result: <= 1e-5
  - reference Qwen2Decoder vs transformers Qwen2ForCausalLM: <= 1e-5; greedy tokens identical
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minmo_rt import _core
from minmo_rt.export.reference import (
    ChunkSpec,
    DuplexConfig,
    DuplexPredictor,
    InputProjector,
    KVCache,
    ProjectorConfig,
    Qwen2Config,
    Qwen2Decoder,
)

safetensors_torch = pytest.importorskip("safetensors.torch")
TL = _core.testing_llm

REF_TOL = 1e-4      # C++ vs PyTorch reference
STREAM_TOL = 1e-5   # streamed / incremental vs one-shot C++
HF_TOL = 1e-5       # reference vs Hugging Face transformers


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def randomize(module: torch.nn.Module, seed: int, std: float = 0.08) -> None:
    """Random weights everywhere: matrices ~ N(0, std), biases ~ N(0, 0.1), norm weights ~ 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("norm" in name or "layernorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def save(module: torch.nn.Module, path, drop=()) -> str:
    sd = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items() if k not in drop}
    safetensors_torch.save_file(sd, str(path))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Input projector

PROJ_CFG = ProjectorConfig(encoder_dim=24, hidden_dim=40, output_dim=64, n_layers=2, n_heads=4, ffn_dim=80)


@pytest.fixture(scope="module")
def projector_file(tmp_path_factory):
    torch.manual_seed(0)
    ref = InputProjector(PROJ_CFG)
    randomize(ref, seed=1)
    return ref, save(ref, tmp_path_factory.mktemp("proj") / "projector.safetensors")


def projector_ref(ref: InputProjector, chunk: ChunkSpec | None, frames: np.ndarray) -> np.ndarray:
    m = InputProjector(ref.cfg, chunk)
    m.load_state_dict(ref.state_dict())
    with torch.no_grad():
        return m(torch.from_numpy(frames)).numpy()


CHUNKS = [
    ChunkSpec("full"),
    ChunkSpec("chunked", chunk_frames=8, left_chunks=2),
    ChunkSpec("chunked", chunk_frames=6, left_chunks=1),
    ChunkSpec("chunked", chunk_frames=4, left_chunks=0),
    ChunkSpec("chunked", chunk_frames=2, left_chunks=3),
]


@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda c: f"{c.encoder_attention}-{c.chunk_frames}-{c.left_chunks}")
@pytest.mark.parametrize("n_frames", [1, 2, 7, 8, 16, 37, 61])
def test_projector_offline_vs_reference(projector_file, chunk, n_frames):
    ref, path = projector_file
    rng = np.random.default_rng(n_frames)
    frames = rng.standard_normal((n_frames, PROJ_CFG.encoder_dim)).astype(np.float32)
    want = projector_ref(ref, chunk, frames)
    got = TL.projector_offline(path, json.dumps(PROJ_CFG.to_dict()), json.dumps(chunk.to_dict()), frames)
    assert got.shape == ((n_frames - 1) // 2 + 1, PROJ_CFG.output_dim)
    assert rel_err(got, want) <= REF_TOL


def test_projector_chunk_mask_matters(projector_file):
    """The chunked mask changes the result (so the tests above do exercise it)."""
    ref, path = projector_file
    frames = np.random.default_rng(5).standard_normal((40, PROJ_CFG.encoder_dim)).astype(np.float32)
    cfg = json.dumps(PROJ_CFG.to_dict())
    full = TL.projector_offline(path, cfg, json.dumps(ChunkSpec("full").to_dict()), frames)
    chunked = TL.projector_offline(path, cfg, json.dumps(ChunkSpec("chunked", 8, 1).to_dict()), frames)
    assert rel_err(chunked, full) > 1e-3


@pytest.mark.parametrize("chunk", CHUNKS[1:], ids=lambda c: f"chunked-{c.chunk_frames}-{c.left_chunks}")
@pytest.mark.parametrize("schedule", [[1], [2], [3], [5, 1, 7, 2], [8], [13, 1, 1], [100]])
def test_projector_streamed_equals_offline(projector_file, chunk, schedule):
    ref, path = projector_file
    n_frames = 45
    frames = np.random.default_rng(7).standard_normal((n_frames, PROJ_CFG.encoder_dim)).astype(np.float32)
    cfg, ck = json.dumps(PROJ_CFG.to_dict()), json.dumps(chunk.to_dict())
    sizes = (schedule * n_frames)[:n_frames]
    offline = TL.projector_offline(path, cfg, ck, frames)
    got, counts = TL.projector_streamed(path, cfg, ck, frames, sizes)
    assert got.shape == offline.shape
    assert rel_err(got, offline) <= STREAM_TOL
    assert rel_err(got, projector_ref(ref, chunk, frames)) <= REF_TOL
    # A token comes out as soon as its whole chunk of frames was pushed, not before.
    C = chunk.chunk_frames // 2
    pushed, emitted = 0, 0
    pieces = []
    at = 0
    for s in sizes:
        if at >= n_frames:
            break
        pieces.append(min(s, n_frames - at))
        at += pieces[-1]
    assert len(counts) == len(pieces) + 1
    for piece, c in zip(pieces, counts):
        pushed += piece
        emitted += c
        assert emitted == (pushed // 2) // C * C, (pushed, emitted)
    assert emitted + counts[-1] == offline.shape[0]


def test_projector_stream_needs_chunked(projector_file):
    _, path = projector_file
    frames = np.zeros((4, PROJ_CFG.encoder_dim), np.float32)
    with pytest.raises(_core.InvalidInputError, match="chunked"):
        TL.projector_streamed(path, json.dumps(PROJ_CFG.to_dict()), json.dumps(ChunkSpec("full").to_dict()), frames, [2])


def test_projector_bad_width(projector_file):
    _, path = projector_file
    with pytest.raises(_core.InvalidInputError, match="24 columns"):
        TL.projector_offline(path, json.dumps(PROJ_CFG.to_dict()), "{}", np.zeros((4, 23), np.float32))


# ---------------------------------------------------------------------------------------------
# Qwen2 decoder

QWEN_CFG = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=512)


def make_qwen(cfg: Qwen2Config, seed: int) -> Qwen2Decoder:
    torch.manual_seed(seed)
    m = Qwen2Decoder(cfg)
    randomize(m, seed=seed + 100, std=0.1)
    with torch.no_grad():  # embeddings of a realistic size so that logits are O(1)
        m.model.embed_tokens.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 7))
    return m.eval()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    ref = make_qwen(QWEN_CFG, 0)
    return ref, save(ref, tmp_path_factory.mktemp("qwen") / "qwen2.safetensors"), json.dumps(QWEN_CFG.to_dict())


def ref_forward(ref: Qwen2Decoder, embeds: torch.Tensor):
    with torch.no_grad():
        logits, hidden, _ = ref(embeds)
    return logits.numpy(), hidden.numpy()


def ref_greedy(ref: Qwen2Decoder, prompt: list[int], steps: int) -> list[int]:
    out = []
    with torch.no_grad():
        logits, _, cache = ref(ref.embed(torch.tensor(prompt)))
        for _ in range(steps):
            tok = int(torch.argmax(logits[-1]))
            out.append(tok)
            logits, _, cache = ref(ref.embed(torch.tensor([tok])), cache)
    return out


def hf_model(ref: Qwen2Decoder):
    transformers = pytest.importorskip("transformers")
    c = ref.cfg
    hc = transformers.Qwen2Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
        max_position_embeddings=c.max_position_embeddings, hidden_act="silu", use_sliding_window=False,
        attn_implementation="eager")
    hf = transformers.Qwen2ForCausalLM(hc).eval()
    missing, unexpected = hf.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in k for k in missing), missing
    return hf


def hf_greedy(hf, prompt: list[int], steps: int) -> list[int]:
    with torch.no_grad():
        ids = torch.tensor([prompt])
        # explicit attention mask: otherwise generate() masks every id equal to pad_token_id
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


PROMPT = [3, 17, 42, 5, 88, 0, 96, 23, 11]


def test_reference_qwen2_matches_transformers(qwen):
    ref, _, _ = qwen
    hf = hf_model(ref)
    ids = torch.tensor(np.random.default_rng(1).integers(0, QWEN_CFG.vocab_size, 30))
    want_logits, _ = ref_forward(ref, ref.embed(ids))
    with torch.no_grad():
        hf_logits = hf(ids[None]).logits[0].numpy()
    assert rel_err(want_logits, hf_logits) <= HF_TOL
    assert ref_greedy(ref, PROMPT, 10) == hf_greedy(hf, PROMPT, 10)


def test_cpp_qwen2_matches_transformers(qwen):
    ref, path, cfg = qwen
    hf = hf_model(ref)
    ids = np.random.default_rng(2).integers(0, QWEN_CFG.vocab_size, 30)
    runner = TL.Qwen2Runner(path, cfg, 64)
    logits, _ = runner.forward(runner.embed(ids))
    with torch.no_grad():
        hf_logits = hf(torch.tensor(ids)[None]).logits[0].numpy()
    assert rel_err(logits, hf_logits) <= REF_TOL
    runner.reset()
    assert runner.generate(np.array(PROMPT), 10) == hf_greedy(hf, PROMPT, 10)


SEGMENTATIONS = [[40], [5, 3] + [1] * 32, [1], [16, 16, 8], [20, 1, 1, 17, 1], [2, 7, 3, 11, 4]]


@pytest.mark.parametrize("segments", SEGMENTATIONS, ids=lambda s: "-".join(map(str, s[:6])))
def test_cpp_qwen2_vs_reference_segmented(qwen, segments):
    ref, path, cfg = qwen
    T = 40
    ids = np.random.default_rng(3).integers(0, QWEN_CFG.vocab_size, T)
    embeds = ref.embed(torch.tensor(ids))
    want_logits, want_hidden = ref_forward(ref, embeds)
    logits, hidden = TL.qwen2_forward(path, cfg, embeds.detach().numpy(), segments)
    assert logits.shape == (T, QWEN_CFG.vocab_size) and hidden.shape == (T, QWEN_CFG.hidden_size)
    assert rel_err(logits, want_logits) <= REF_TOL
    assert rel_err(hidden, want_hidden) <= REF_TOL
    one_logits, one_hidden = TL.qwen2_forward(path, cfg, embeds.detach().numpy(), [T])
    assert rel_err(logits, one_logits) <= STREAM_TOL
    assert rel_err(hidden, one_hidden) <= STREAM_TOL


@pytest.mark.parametrize("segments", [[300], [260, 1, 39]])
def test_cpp_qwen2_long_prefill(qwen, segments):
    """More than 256 rows at once: the matrix products go through BLAS instead of the own kernel."""
    ref, path, cfg = qwen
    ids = np.random.default_rng(9).integers(0, QWEN_CFG.vocab_size, 300)
    embeds = ref.embed(torch.tensor(ids))
    want_logits, want_hidden = ref_forward(ref, embeds)
    logits, hidden = TL.qwen2_forward(path, cfg, embeds.detach().numpy(), segments)
    assert rel_err(logits, want_logits) <= REF_TOL
    assert rel_err(hidden, want_hidden) <= REF_TOL


def test_cpp_qwen2_embed_and_greedy(qwen):
    ref, path, cfg = qwen
    runner = TL.Qwen2Runner(path, cfg, 32)
    ids = np.array([0, 5, 96, 5])
    np.testing.assert_array_equal(runner.embed(ids), ref.embed(torch.tensor(ids)).detach().numpy())
    assert runner.generate(np.array(PROMPT), 10) == ref_greedy(ref, PROMPT, 10)
    assert runner.length == len(PROMPT) + 9
    with pytest.raises(_core.InvalidInputError, match="outside the vocabulary"):
        runner.embed(np.array([97]))


def test_cpp_qwen2_last_only(qwen):
    ref, path, cfg = qwen
    ids = np.arange(12) % QWEN_CFG.vocab_size
    runner = TL.Qwen2Runner(path, cfg, 16)
    logits, hidden = runner.forward(runner.embed(ids), last_only=True)
    want, want_h = ref_forward(ref, ref.embed(torch.tensor(ids)))
    assert logits.shape == (1, QWEN_CFG.vocab_size) and hidden.shape == (12, QWEN_CFG.hidden_size)
    assert rel_err(logits[0], want[-1]) <= REF_TOL


@pytest.mark.parametrize("variant", ["tied", "head_dim_8", "mha"])
def test_cpp_qwen2_config_variants(tmp_path, variant):
    kw = QWEN_CFG.to_dict()
    drop = ()
    if variant == "tied":
        kw["tie_word_embeddings"] = True
        drop = ("lm_head.weight",)
    elif variant == "head_dim_8":
        kw.update(head_dim=8, num_attention_heads=6, num_key_value_heads=3)
    else:
        kw.update(num_key_value_heads=4, rope_theta=1e6, num_hidden_layers=2)
    cfg = Qwen2Config(**kw)
    ref = make_qwen(cfg, 11)
    path = save(ref, tmp_path / "q.safetensors", drop=drop)
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, 21)
    embeds = ref.embed(torch.tensor(ids))
    want_logits, want_hidden = ref_forward(ref, embeds)
    logits, hidden = TL.qwen2_forward(path, json.dumps(cfg.to_dict()), embeds.detach().numpy(), [6, 1, 1, 13])
    assert rel_err(logits, want_logits) <= REF_TOL
    assert rel_err(hidden, want_hidden) <= REF_TOL
    if variant == "tied":  # also vs transformers with tied embeddings
        hf = hf_model(ref)
        with torch.no_grad():
            assert rel_err(logits, hf(torch.tensor(ids)[None]).logits[0].numpy()) <= REF_TOL


def test_cpp_qwen2_cache_full_and_rollback(qwen):
    ref, path, cfg = qwen
    ids = np.random.default_rng(6).integers(0, QWEN_CFG.vocab_size, 8)
    runner = TL.Qwen2Runner(path, cfg, 8)
    emb = runner.embed(ids)
    full_logits, _ = TL.qwen2_forward(path, cfg, emb, [8])
    l1, _ = runner.forward(emb[:6])
    with pytest.raises(_core.CacheFullError, match=r"KV cache full: 6 of 8 positions used, cannot append 3"):
        runner.forward(emb[:3])
    assert runner.length == 6  # unchanged
    l2, _ = runner.forward(emb[6:8])
    assert runner.length == 8
    assert rel_err(np.concatenate([l1, l2]), full_logits) <= STREAM_TOL
    with pytest.raises(_core.CacheFullError):
        runner.forward(emb[:1])
    # Roll back and redo the tail: same result.
    runner.truncate(4)
    assert runner.length == 4
    l3, _ = runner.forward(emb[4:8])
    assert rel_err(l3, full_logits[4:]) <= STREAM_TOL
    with pytest.raises(_core.InvalidInputError):
        runner.truncate(9)
    runner.reset()
    assert runner.length == 0
    l4, _ = runner.forward(emb)
    assert rel_err(l4, full_logits) <= STREAM_TOL
    # A prefill bigger than the whole capacity.
    runner.reset()
    with pytest.raises(_core.CacheFullError, match="0 of 8"):
        runner.forward(np.concatenate([emb, emb[:1]]))
    assert runner.length == 0
    with pytest.raises(_core.CacheFullError):
        TL.qwen2_forward(path, cfg, emb, [4, 4], capacity=7)


def test_cpp_qwen2_weight_errors(qwen, tmp_path):
    ref, _, cfg = qwen
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}
    missing = dict(sd)
    del missing["model.layers.1.mlp.up_proj.weight"]
    p1 = tmp_path / "missing.safetensors"
    safetensors_torch.save_file(missing, str(p1))
    emb = np.zeros((1, QWEN_CFG.hidden_size), np.float32)
    with pytest.raises(_core.MinmoError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        TL.qwen2_forward(str(p1), cfg, emb, [1])
    bad = dict(sd)
    bad["model.layers.2.self_attn.k_proj.bias"] = torch.zeros(16)
    p2 = tmp_path / "bad.safetensors"
    safetensors_torch.save_file(bad, str(p2))
    with pytest.raises(_core.BundleError, match=r"model\.layers\.2\.self_attn\.k_proj\.bias.*shape \[16\], expected \[32\]"):
        TL.qwen2_forward(str(p2), cfg, emb, [1])
    with pytest.raises(_core.BundleError, match="unknown config keys"):
        TL.qwen2_forward(str(p2), json.dumps({**QWEN_CFG.to_dict(), "foo": 1}), emb, [1])


# ---------------------------------------------------------------------------------------------
# Sampling

def test_sampling_greedy_and_top_k_1():
    rng = np.random.default_rng(0)
    for seed in range(20):
        logits = rng.standard_normal(1000).astype(np.float32) * 3
        best = int(np.argmax(logits))
        assert TL.sample(logits, temperature=0.0)[0] == best
        assert (TL.sample(logits, temperature=1.3, top_k=1, seed=seed, n=5) == best).all()
        assert (TL.sample(logits, temperature=0.8, top_p=1e-6, seed=seed, n=5) == best).all()
    # ties: lowest index
    assert TL.sample(np.array([1.0, 3.0, 3.0, 0.0], np.float32))[0] == 1


def test_sampling_reproducible():
    logits = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    a = TL.sample(logits, temperature=1.0, top_k=50, top_p=0.9, seed=123, n=200)
    b = TL.sample(logits, temperature=1.0, top_k=50, top_p=0.9, seed=123, n=200)
    c = TL.sample(logits, temperature=1.0, top_k=50, top_p=0.9, seed=124, n=200)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampling_temperature_distribution(temperature):
    logits = np.array([0.0, 1.0, 2.0, 0.5, -1.0], np.float32)
    n = 40000
    draws = TL.sample(logits, temperature=temperature, seed=7, n=n)
    freq = np.bincount(draws, minlength=5) / n
    np.testing.assert_allclose(freq, softmax(logits / temperature), atol=0.01)


def test_sampling_top_k_top_p_distribution():
    logits = np.array([2.0, 0.0, 1.5, 1.0, -1.0, 0.5], np.float32)
    p = softmax(logits)
    n = 40000
    # top_k = 3 keeps ids 0, 2, 3, renormalised.
    freq = np.bincount(TL.sample(logits, temperature=1.0, top_k=3, seed=1, n=n), minlength=6) / n
    want = np.zeros(6)
    want[[0, 2, 3]] = p[[0, 2, 3]] / p[[0, 2, 3]].sum()
    np.testing.assert_allclose(freq, want, atol=0.01)
    # top_p: smallest set of most likely tokens with mass >= top_p.
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    top_p = float(cum[1] + 0.01)  # needs the first three
    keep = order[:3]
    freq = np.bincount(TL.sample(logits, temperature=1.0, top_p=top_p, seed=2, n=n), minlength=6) / n
    want = np.zeros(6)
    want[keep] = p[keep] / p[keep].sum()
    np.testing.assert_allclose(freq, want, atol=0.01)
    # top_p exactly at a boundary of mass keeps that prefix only
    freq = np.bincount(TL.sample(logits, temperature=1.0, top_p=float(p[order[0]]) * 0.999, seed=3, n=200),
                       minlength=6)
    assert freq[order[0]] == 200


def test_sampling_large_vocab_top_p():
    """top_p over a big vocabulary (the sorted prefix grows on demand)."""
    logits = np.random.default_rng(3).standard_normal(152064).astype(np.float32)
    draws = TL.sample(logits, temperature=1.0, top_p=0.5, seed=4, n=300)
    p = softmax(logits.astype(np.float64))
    order = np.argsort(-p, kind="stable")
    k = int(np.searchsorted(np.cumsum(p[order]), 0.5) + 1)
    assert set(draws.tolist()) <= set(order[:k].tolist())


def test_sampling_errors():
    logits = np.zeros(10, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x = logits.copy()
        x[3] = bad
        with pytest.raises(_core.MinmoError, match="logit 3 of 10 is"):
            TL.sample(x, temperature=1.0)
        with pytest.raises(_core.MinmoError, match="non-finite"):
            TL.sample(x, temperature=0.0)
    with pytest.raises(_core.InvalidInputError, match="temperature"):
        TL.sample(logits, temperature=-1.0)
    with pytest.raises(_core.InvalidInputError, match="top_p"):
        TL.sample(logits, temperature=1.0, top_p=0.0)
    with pytest.raises(_core.InvalidInputError, match="top_k"):
        TL.sample(logits, temperature=1.0, top_k=-2)


# ---------------------------------------------------------------------------------------------
# Duplex predictor

DUPLEX_CFG = DuplexConfig(llm_hidden=64, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6)


def make_duplex(cfg: DuplexConfig, seed: int, std: float, path) -> tuple:
    """A reference duplex predictor with random weights saved to path: (module, path, config JSON)."""
    torch.manual_seed(seed)
    ref = DuplexPredictor(cfg).eval()
    randomize(ref, seed=11 * seed, std=std)
    return ref, save(ref, path), json.dumps(cfg.to_dict())


@pytest.fixture(scope="module")
def duplex(tmp_path_factory):
    return make_duplex(DUPLEX_CFG, 3, 0.2, tmp_path_factory.mktemp("duplex") / "duplex.safetensors")


@pytest.mark.parametrize("schedule", [[50], [1], [3, 5, 2], [17, 1], [20, 20]])
def test_cpp_duplex_streamed_vs_reference(duplex, schedule):
    ref, path, cfg = duplex
    T = 50
    hidden = np.random.default_rng(8).standard_normal((T, DUPLEX_CFG.llm_hidden)).astype(np.float32)
    with torch.no_grad():
        want_turn, want_barge, _ = ref(torch.from_numpy(hidden))
        # the reference streamed with its KV cache gives the same
        kv, parts = None, []
        for a in range(0, T, 7):
            pt, pb, kv = ref(torch.from_numpy(hidden[a:a + 7]), kv)
            parts.append(pt)
        assert rel_err(torch.cat(parts).numpy(), want_turn.numpy()) <= 1e-5
    sizes = (schedule * T)[:T]
    turn, barge = TL.duplex_streamed(path, cfg, hidden, sizes)
    assert turn.shape == (T,) and barge.shape == (T,)
    assert rel_err(turn, want_turn.numpy()) <= REF_TOL
    assert rel_err(barge, want_barge.numpy()) <= REF_TOL
    one_turn, one_barge = TL.duplex_streamed(path, cfg, hidden, [T])
    assert rel_err(turn, one_turn) <= STREAM_TOL and rel_err(barge, one_barge) <= STREAM_TOL
    m_turn, m_barge = TL.duplex_streamed(path, cfg, hidden, sizes, model_api=True)
    np.testing.assert_array_equal(m_turn, turn)
    np.testing.assert_array_equal(m_barge, barge)
    assert 0.0 < turn.min() and turn.max() < 1.0


def test_cpp_duplex_errors(duplex, tmp_path):
    ref, path, cfg = duplex
    hidden = np.zeros((10, DUPLEX_CFG.llm_hidden), np.float32)
    with pytest.raises(_core.CacheFullError, match="KV cache full: 8 of 9"):
        TL.duplex_streamed(path, cfg, hidden, [4, 4, 2], capacity=9)
    with pytest.raises(_core.InvalidInputError, match="64 columns"):
        TL.duplex_streamed(path, cfg, hidden[:, :10], [1])
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items() if k != "barge_head.bias"}
    p = tmp_path / "d.safetensors"
    safetensors_torch.save_file(sd, str(p))
    with pytest.raises(_core.MinmoError, match=r"barge_head\.bias"):
        TL.duplex_streamed(str(p), cfg, hidden, [1])
