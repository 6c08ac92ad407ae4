"""CosyVoice2 flow: speech tokens -> 80-bin mel (``CausalMaskedDiffWithXvec``).

State-dict names follow the public CosyVoice2 ``flow.pt`` (``input_embedding``,
``spk_embed_affine_layer``, ``encoder.{embed,pre_lookahead_layer,encoders,up_layer,up_embed,
up_encoders,after_norm}``, ``encoder_proj``, ``decoder.estimator.*``) so that checkpoint loads with
``load_state_dict``. Activations are time-major: ``[T, C]`` (or ``[B, T, C]`` in the estimator).

Attention masks are bool ``[Tq, Tk]`` (True = may attend) or ``None`` for full attention; the
streaming semantics (which keys a chunk sees) are built in ``token2wav.py``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configs import FlowConfig


# ----------------------------------------------------------------------------- encoder

def rel_position_encoding(rel: torch.Tensor, d: int) -> torch.Tensor:
    """ESPnet relative position encoding of relative distances ``rel`` (query pos - key pos):
    [len(rel), d] with sin at even and cos at odd columns. Computed in float64."""
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float64, device=rel.device) * -(math.log(10000.0) / d))
    ang = rel.to(torch.float64)[:, None] * div[None, :]
    pe = torch.empty(rel.shape[0], d, dtype=torch.float64, device=rel.device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe.to(torch.float32)


class RelPositionAttention(nn.Module):
    """Transformer-XL style attention: score(i, j) = ((q_i + u) . k_j + (q_i + v) . W_pos pe(i - j)) / sqrt(dk)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        t, d = x.shape
        q = self.linear_q(x).view(t, self.h, self.dk)
        k = self.linear_k(x).view(t, self.h, self.dk)
        v = self.linear_v(x).view(t, self.h, self.dk)
        rel = torch.arange(t - 1, -t, -1, device=x.device)  # pos index r <-> distance t-1-r
        p = self.linear_pos(rel_position_encoding(rel, d)).view(-1, self.h, self.dk)
        ac = torch.einsum("ihd,jhd->hij", q + self.pos_bias_u, k)
        bd_all = torch.einsum("ihd,rhd->hir", q + self.pos_bias_v, p)  # [h, t, 2t-1]
        pos = torch.arange(t, device=x.device)
        idx = (t - 1) - (pos[:, None] - pos[None, :])  # index of distance i-j
        bd = torch.gather(bd_all, 2, idx[None].expand(self.h, t, t))
        scores = (ac + bd) / math.sqrt(self.dk)
        if mask is not None:
            scores = scores.masked_fill(~mask[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = torch.einsum("hij,jhd->ihd", probs, v).reshape(t, d)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.w_1 = nn.Linear(d, ffn)
        self.w_2 = nn.Linear(ffn, d)

    def forward(self, x):
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    """Pre-LN block without macaron FFN or conv module: x += attn(LN x); x += FFN(LN x)."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = RelPositionAttention(d, heads)
        self.feed_forward = PositionwiseFeedForward(d, ffn)
        self.norm_ff = nn.LayerNorm(d, eps=1e-12)
        self.norm_mha = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x, mask):
        x = x + self.self_attn(self.norm_mha(x), mask)
        return x + self.feed_forward(self.norm_ff(x))


class LinearEmbed(nn.Module):
    """``LinearNoSubsampling`` + relative position scaling: LN(Linear x) * sqrt(d)."""

    def __init__(self, d_in: int, d: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(d_in, d), nn.LayerNorm(d, eps=1e-5))
        self.scale = math.sqrt(d)

    def forward(self, x):
        return self.out(x) * self.scale


class PreLookaheadLayer(nn.Module):
    """x + conv2(causal pad 2, leaky_relu(conv1(x padded right by L))): token i reads tokens i-2 .. i+L."""

    def __init__(self, d: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(d, d, lookahead + 1)
        self.conv2 = nn.Conv1d(d, d, 3)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [T, D]; context: up to L rows that follow x (real lookahead tokens, already embedded);
        missing rows are zeros (the end of the utterance)."""
        ext = x if context is None else torch.cat([x, context], 0)
        ext = F.pad(ext.T, (0, x.shape[0] + self.lookahead - ext.shape[0]))
        h = F.leaky_relu(self.conv1(ext[None]), 0.01)
        h = self.conv2(F.pad(h, (2, 0)))[0].T
        return h + x


class Upsample1D(nn.Module):
    """Nearest 2x upsample, causal Conv1d(kernel 5): mel frame f reads upsampled frames f-4 .. f."""

    def __init__(self, d: int, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(d, d, 2 * stride + 1)

    def forward(self, x):
        t, d = x.shape
        up = x[:, None, :].expand(t, self.stride, d).reshape(t * self.stride, d).T
        return self.conv(F.pad(up, (2 * self.stride, 0))[None])[0].T


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        d = cfg.d_model
        self.embed = LinearEmbed(d, d)
        self.pre_lookahead_layer = PreLookaheadLayer(d, cfg.pre_lookahead)
        self.encoders = nn.ModuleList([ConformerBlock(d, cfg.n_heads, cfg.ffn_dim) for _ in range(cfg.n_blocks)])
        self.up_layer = Upsample1D(d)
        self.up_embed = LinearEmbed(d, d)
        self.up_encoders = nn.ModuleList([ConformerBlock(d, cfg.n_heads, cfg.ffn_dim) for _ in range(cfg.n_up_blocks)])
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, token_mask=None, mel_mask=None, context: Optional[torch.Tensor] = None):
        """x: embedded tokens [T, D]; context: embedded lookahead tokens after x (see PreLookaheadLayer).
        Returns [2T, D]."""
        h = self.embed(x)
        ctx = self.embed(context) if context is not None and context.shape[0] else None
        h = self.pre_lookahead_layer(h, ctx)
        for blk in self.encoders:
            h = blk(h, token_mask)
        h = self.up_embed(self.up_layer(h))
        for blk in self.up_encoders:
            h = blk(h, mel_mask)
        return self.after_norm(h)


# ----------------------------------------------------------------------------- estimator

def mish(x):
    return x * torch.tanh(F.softplus(x))


def causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """x: [B, T, C] -> [B, T, C'] with left zero padding kernel-1."""
    k = conv.kernel_size[0]
    return conv(F.pad(x.transpose(1, 2), (k - 1, 0))).transpose(1, 2)


class CausalBlock1D(nn.Module):
    """CausalConv1d(3) -> LayerNorm -> Mish. ``block`` indices 0 and 2 match the checkpoint."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3), nn.Identity(), nn.LayerNorm(dim_out), nn.Identity(), nn.Mish())

    def forward(self, x):
        return mish(self.block[2](causal_conv(self.block[0], x)))


class CausalResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x, t_emb):
        """x: [B, T, C]; t_emb: [B, time_dim]."""
        h = self.block1(x) + self.mlp[1](mish(t_emb))[:, None, :]
        h = self.block2(h)
        return h + causal_conv(self.res_conv, x)


class SelfAttention(nn.Module):
    """diffusers ``Attention`` (self, no bias on q/k/v): names to_q, to_k, to_v, to_out.0."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x, mask):
        b, t, _ = x.shape
        q = self.to_q(x).view(b, t, self.heads, self.head_dim)
        k = self.to_k(x).view(b, t, self.heads, self.head_dim)
        v = self.to_v(x).view(b, t, self.heads, self.head_dim)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores.masked_fill(~mask[None, None], float("-inf"))
        out = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, -1), v).reshape(b, t, -1)
        return self.to_out[0](out)


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x):
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class TransformerBlock(nn.Module):
    """Matcha ``BasicTransformerBlock`` (layer_norm, GELU FFN, self-attention only)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, mask):
        x = x + self.attn1(self.norm1(x), mask)
        return x + self.ff(self.norm3(x))


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Matcha SinusoidalPosEmb: [sin | cos](scale * t * 10000^(-i/(half-1))); computed in float64."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64, device=t.device) * -(math.log(10000.0) / (half - 1)))
    ang = scale * t.to(torch.float64)[:, None] * freq[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).to(torch.float32)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class CausalConditionalDecoder(nn.Module):
    """The CFM estimator: causal U-Net over [x, mu, spk, cond] (one channel width, no time resampling)."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        ch, cin = cfg.est_channels, cfg.est_in_channels
        tdim = 4 * ch
        self.in_channels = cin
        self.time_mlp = TimestepEmbedding(cin, tdim)

        def tblocks():
            return nn.ModuleList([TransformerBlock(ch, cfg.est_heads, cfg.est_head_dim) for _ in range(cfg.n_transformer)])

        self.down_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(cin, ch, tdim), tblocks(), nn.Conv1d(ch, ch, 3)])])
        self.mid_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(ch, ch, tdim), tblocks()]) for _ in range(cfg.n_mid_blocks)])
        self.up_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(2 * ch, ch, tdim), tblocks(), nn.Conv1d(ch, ch, 3)])])
        self.final_block = CausalBlock1D(ch, ch)
        self.final_proj = nn.Conv1d(ch, cfg.mel_dim, 1)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.in_channels))

    def forward(self, x, mu, t, spk, cond, mask):
        """x, mu, cond: [B, T, 80]; t: [B]; spk: [B, 80]; mask: bool [T, T] or None. Returns [B, T, 80]."""
        temb = self.time_embedding(t)
        h = torch.cat([x, mu, spk[:, None, :].expand_as(x), cond], dim=-1)
        resnet, blocks, down = self.down_blocks[0]
        h = resnet(h, temb)
        for blk in blocks:
            h = blk(h, mask)
        skip = h
        h = causal_conv(down, h)
        for resnet, blocks in self.mid_blocks:
            h = resnet(h, temb)
            for blk in blocks:
                h = blk(h, mask)
        resnet, blocks, up = self.up_blocks[0]
        h = resnet(torch.cat([h, skip], dim=-1), temb)
        for blk in blocks:
            h = blk(h, mask)
        h = causal_conv(up, h)
        h = self.final_block(h)
        return causal_conv(self.final_proj, h)


def cosine_t_span(n: int) -> torch.Tensor:
    """Euler time points 1 - cos(k/n * pi/2), k = 0..n (float64 -> float32)."""
    k = torch.arange(n + 1, dtype=torch.float64) / n
    return (1.0 - torch.cos(k * 0.5 * math.pi)).to(torch.float32)


class ConditionalCFM(nn.Module):
    """Holds the estimator under the checkpoint name ``decoder.estimator``."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.estimator = CausalConditionalDecoder(cfg)

    def solve(self, noise, mu, spk, cond, mask):
        """Euler ODE solve with classifier-free guidance (batch of 2: conditioned / all-zero conditions).
        noise, mu, cond: [T, 80]; spk: [80]. Returns x(1) [T, 80]."""
        ts = cosine_t_span(self.cfg.n_timesteps).to(noise.device)
        x = noise
        zeros_mu, zeros_spk = torch.zeros_like(mu), torch.zeros_like(spk)
        mu2 = torch.stack([mu, zeros_mu])
        spk2 = torch.stack([spk, zeros_spk])
        cond2 = torch.stack([cond, zeros_mu])
        w = self.cfg.cfg_rate
        for step in range(self.cfg.n_timesteps):
            t, dt = ts[step], ts[step + 1] - ts[step]
            d = self.estimator(torch.stack([x, x]), mu2, t.expand(2), spk2, cond2, mask)
            x = x + dt * ((1.0 + w) * d[0] - w * d[1])
        return x


# ----------------------------------------------------------------------------- noise

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def counter_normal(seed: int, stream: int, start: int, count: int) -> torch.Tensor:
    """Standard normal float32 values number ``start .. start+count-1`` of (seed, stream): a counter-based
    generator (splitmix64 hashes, Box-Muller in float64), so any slice can be drawn on its own.
    The C++ twin is ``counter_normal`` in runtime/src/modules/flow.h."""
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN * np.uint64(stream + 1))[0]
        idx = np.arange(start, start + count, dtype=np.uint64)
        h1 = _mix64(key + (np.uint64(2) * idx) * _GOLDEN)
        h2 = _mix64(key + (np.uint64(2) * idx + np.uint64(1)) * _GOLDEN)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return torch.from_numpy(z.astype(np.float32))


FLOW_NOISE_STREAM = 0
HIFT_NOISE_STREAM = 1


def flow_noise(seed: int, first_frame: int, n_frames: int, mel_dim: int) -> torch.Tensor:
    """Initial CFM noise of mel frames first_frame .. first_frame+n_frames-1: [n_frames, mel_dim]."""
    return counter_normal(seed, FLOW_NOISE_STREAM, first_frame * mel_dim, n_frames * mel_dim).view(n_frames, mel_dim)


# ----------------------------------------------------------------------------- flow

class Flow(nn.Module):
    """Token embedding + speaker projection + upsampling conformer encoder + CFM estimator."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_dim, cfg.mel_dim)
        self.encoder = UpsampleConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.d_model, cfg.mel_dim)
        self.decoder = ConditionalCFM(cfg)

    @classmethod
    def from_config(cls, config: dict) -> "Flow":
        return cls(FlowConfig.from_dict(config))

    def speaker(self, spk: torch.Tensor) -> torch.Tensor:
        """L2-normalised 192-d speaker embedding -> [80]."""
        if spk.shape != (self.cfg.spk_dim,):
            raise ValueError(f"speaker embedding must have shape ({self.cfg.spk_dim},), not {tuple(spk.shape)}")
        return self.spk_embed_affine_layer(F.normalize(spk.float(), dim=0))

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"speech token ids must lie in [0, {self.cfg.vocab_size})")
        return self.input_embedding(tokens.long())

    def encode(self, tokens: torch.Tensor, token_mask=None, mel_mask=None, context: Optional[torch.Tensor] = None):
        """tokens [T] (+ up to ``pre_lookahead`` lookahead tokens) -> mu [2T, 80]."""
        ctx = self.embed_tokens(context) if context is not None else None
        return self.encoder_proj(self.encoder(self.embed_tokens(tokens), token_mask, mel_mask, ctx))

    def forward(self, tokens, spk, prompt_mel=None, token_mask=None, mel_mask=None, seed: int = 0, context=None):
        """Mel of the whole sequence [2T, 80] (prompt frames included). ``prompt_mel`` [P, 80]
        conditions the first P frames through ``cond``."""
        mu = self.encode(tokens, token_mask, mel_mask, context)
        cond = torch.zeros_like(mu)
        if prompt_mel is not None and prompt_mel.shape[0]:
            cond[: prompt_mel.shape[0]] = prompt_mel
        noise = flow_noise(seed, 0, mu.shape[0], self.cfg.mel_dim)
        return self.decoder.solve(noise, mu, self.speaker(spk), cond, mel_mask)
