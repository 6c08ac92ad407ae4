"""The flow's conformer encoder on the CUDA backend (runtime/src/backends/cuda/flow_encoder_cuda.h)
against FlowModel::encode_segment on the CPU, segment by segment (prompt + chunks, left_chunks -1 and
>= 0, lookahead present, cut and absent at the end), against the PyTorch reference encoder with the
streaming masks, two interleaved states, states reused across utterances (graph replays), and bad
input.

Runs on "cuda-sim" (the backend's buffers, products and launch sequence with every kernel replaced by
its CPU twin and the fp32 products by OpenBLAS) and on "cuda" where a GPU is usable (skipped
otherwise). Both paths are fp32; DEVICE_TOL leaves room for the GPU's expf and cuBLAS summation order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.reference import Flow
from minmo_rt.export.reference.token2wav import stream_masks

from test_cuda_backend import device  # noqa: F401  (the cuda-sim / cuda fixture)
from test_token2wav import perturb, rel, save_module, tiny_flow_config

T2W = _core.testing_t2w

DEVICE_TOL = 1e-5


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    return perturb(Flow(tiny_flow_config()), 5, scale=0.1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, flow):
    return save_module(tmp_path_factory, flow, "flow_enc")


def _tokens(flow, n, seed):
    return torch.randint(0, flow.cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).numpy()


def _segments(fw, fc, utts, device, **kw):
    return T2W.flow_encode_segments(fw, fc, [np.asarray(u, np.int64) for u in utts], device=device, **kw)


# 29 tokens with a prompt of 6 and chunks of 5: the last chunk has 3 tokens, so the one before it
# sees 3 lookahead tokens and the last none; 27 tokens without a prompt: the second to last chunk
# sees 2 (cut), the last none.
@pytest.mark.parametrize("prompt,n_tok", [(0, 27), (6, 29)])
@pytest.mark.parametrize("left", [-1, 0, 2])
def test_device_segments_match_cpu_and_reference(flow, files, device, prompt, n_tok, left):
    fw, fc = files
    tokens = _tokens(flow, n_tok, 10 * prompt + left + 3)
    kw = dict(prompt_tokens=prompt, chunk_tokens=5, left_chunks=left)
    cpu = _segments(fw, fc, [tokens], "cpu", **kw)[0]
    got = _segments(fw, fc, [tokens], device, **kw)[0]
    assert len(got) == len(cpu) == (1 if prompt else 0) + -(-(n_tok - prompt) // 5)
    for k, (g, c) in enumerate(zip(got, cpu)):
        assert g.shape == c.shape and np.isfinite(g).all(), k
        assert rel(g, c) <= DEVICE_TOL, (k, rel(g, c))
    # the segments together are the reference encoder over the whole sequence with the streaming masks
    tmask, mmask = stream_masks(prompt, n_tok - prompt, 5, left, flow.cfg.token_mel_ratio)
    with torch.no_grad():
        ref = flow.encode(torch.from_numpy(tokens), tmask, mmask).numpy()
    assert rel(np.concatenate(got), ref) <= DEVICE_TOL


def test_one_segment_is_full_attention(flow, files, device):
    fw, fc = files
    tokens = _tokens(flow, 17, 1)
    got = _segments(fw, fc, [tokens], device, chunk_tokens=17)[0]
    with torch.no_grad():
        ref = flow.encode(torch.from_numpy(tokens)).numpy()
    assert len(got) == 1 and rel(got[0], ref) <= DEVICE_TOL


def test_two_interleaved_states(flow, files, device):
    fw, fc = files
    a, b = _tokens(flow, 23, 7), _tokens(flow, 16, 8)
    kw = dict(prompt_tokens=4, chunk_tokens=4, left_chunks=1)
    both = _segments(fw, fc, [a, b], device, **kw)
    for u, toks in zip(both, (a, b)):
        alone = _segments(fw, fc, [toks], "cpu", **kw)[0]
        assert len(u) == len(alone)
        assert max(rel(g, c) for g, c in zip(u, alone)) <= DEVICE_TOL


@pytest.mark.parametrize("left", [-1, 1])
def test_reused_states_replay_graphs(flow, files, device, left):
    """Three passes over two utterances on the same device states (reset between): shapes seen twice
    run as recorded graphs (the first chunk in every later pass; steady chunks with left_chunks >= 0),
    and the results stay the CPU's."""
    fw, fc = files
    a, b = _tokens(flow, 26, 11), _tokens(flow, 21, 12)
    kw = dict(prompt_tokens=3, chunk_tokens=4, left_chunks=left)
    both = _segments(fw, fc, [a, b], device, passes=3, **kw)
    for u, toks in zip(both, (a, b)):
        alone = _segments(fw, fc, [toks], "cpu", **kw)[0]
        assert len(u) == len(alone)
        assert max(rel(g, c) for g, c in zip(u, alone)) <= DEVICE_TOL


def test_odd_sizes(tmp_path_factory, device):
    torch.manual_seed(1)
    flow = perturb(Flow(tiny_flow_config(d_model=36, n_heads=3, ffn_dim=50, n_blocks=1, n_up_blocks=3, pre_lookahead=2,
                                         vocab_size=37)), 9, scale=0.1)
    fw, fc = save_module(tmp_path_factory, flow, "flow_odd")
    tokens = _tokens(flow, 20, 2)
    kw = dict(prompt_tokens=3, chunk_tokens=7, left_chunks=0)
    got = _segments(fw, fc, [tokens], device, **kw)[0]
    cpu = _segments(fw, fc, [tokens], "cpu", **kw)[0]
    assert max(rel(g, c) for g, c in zip(got, cpu)) <= DEVICE_TOL


def test_bad_input_raises(flow, files, device):
    fw, fc = files
    tokens = _tokens(flow, 12, 4)
    for bad in (flow.cfg.vocab_size, -1):
        t = tokens.copy()
        t[7] = bad
        with pytest.raises(minmo_rt.InvalidInputError, match="speech token id"):
            _segments(fw, fc, [t], device, chunk_tokens=5)
    t = tokens.copy()
    t[11] = flow.cfg.vocab_size + 5  # a lookahead token of the second segment: checked too
    with pytest.raises(minmo_rt.InvalidInputError, match="speech token id"):
        _segments(fw, fc, [t[:12]], device, chunk_tokens=10)
    with pytest.raises(minmo_rt.InvalidInputError, match="holds 8 tokens"):  # caches too small for full attention
        _segments(fw, fc, [tokens], device, chunk_tokens=4, max_tokens=8)
    # with left_chunks >= 0 the same cache size serves any length
    got = _segments(fw, fc, [np.tile(tokens, 3)], device, chunk_tokens=4, left_chunks=0, max_tokens=8)[0]
    cpu = _segments(fw, fc, [np.tile(tokens, 3)], "cpu", chunk_tokens=4, left_chunks=0)[0]
    assert max(rel(g, c) for g, c in zip(got, cpu)) <= DEVICE_TOL
