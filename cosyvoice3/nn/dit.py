"""The DiT velocity estimator of the CosyVoice3 flow (the module exported to ONNX/TensorRT).

Module and parameter names follow the `decoder.estimator.*` keys of the official `flow.pt`, so the
file loads strictly. Behaviour follows the reference (section 5.4 of the reference notes):
sinusoidal time embedding -> MLP; input projection of [x, cond, mu, spks] plus a causal grouped-conv
position embedding; blocks of adaptive-LayerNorm attention + GELU(tanh) feed-forward; final
adaptive LayerNorm (scale, shift order) and projection back to mel channels.

Two quirks of the reference are kept on purpose:
- rotary position embedding (interleaved pairs) is applied to q and k before the head split, to the
  first `dim_head` channels only, i.e. to head 0;
- attention outputs are zeroed at positions the last query row may not see (the padding).

The attention mask is an explicit input (`attention_mask` builds it), so exported graphs keep the
streaming chunk mask. In half precision, LayerNorm, the time embedding and the rotary rotation are
computed in float32 and cast back; softmax runs inside `scaled_dot_product_attention`, whose fused
kernels accumulate in float32. The forward has no Python branches on tensor values and no
data-dependent shapes, so `torch.onnx.export` works with a dynamic T.

`forward_cached` is the streaming fast path: under the chunk mask a frame never sees a later
chunk, so the keys/values of earlier frames (every block) and the inputs of the causal position
convolutions never change when frames are added. It computes only new frames that continue
earlier ones, reading their keys/values and convolution state, and returns those of the new
frames for the next call. Its test oracle is `forward` with the streaming mask over all frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice3.config import DiTConfig


def chunk_attention_mask(mask: torch.Tensor, chunk_frames: torch.Tensor) -> torch.Tensor:
    """Which keys each query may attend to, per row.

    mask: (B, 1, T) 1 for real frames, 0 for padding; chunk_frames: (B,) or (1,) int64, per row:
    0 -> every query sees every real frame; C > 0 -> chunks of C frames counted from frame 0, a
    query sees its own chunk and all chunks to its left (the streaming rule).
    Returns bool (B, 1, T, T), True = may attend. A query row that would see nothing sees
    everything (as in the reference), so softmax never meets an empty row. Built from tensors
    only (no Python branch on the chunk size): traceable for ONNX export and CUDA graphs.
    """
    keys = mask > 0  # (B, 1, T)
    n_frames = mask.shape[-1]
    pos = torch.arange(n_frames, device=mask.device)
    chunk = chunk_frames.reshape(-1, 1).to(pos.device)  # (B or 1, 1)
    blocks = torch.div(pos[None, :], chunk.clamp(min=1), rounding_mode="floor")  # (B, T)
    chunk_end = torch.where(chunk > 0, (blocks + 1) * chunk, torch.full_like(blocks, n_frames))  # first hidden key
    visible = keys & (pos[None, None, :] < chunk_end[:, :, None])  # (B, T, T)
    visible = visible | ~visible.any(dim=-1, keepdim=True)
    return visible.unsqueeze(1)


def attention_mask(mask: torch.Tensor, streaming: bool, chunk_frames: int) -> torch.Tensor:
    """`chunk_attention_mask` with one rule for every row: streaming chunks of `chunk_frames`
    frames, or full attention."""
    chunk = torch.tensor([chunk_frames if streaming else 0], dtype=torch.long, device=mask.device)
    return chunk_attention_mask(mask, chunk)


def continuation_mask(mask: torch.Tensor, past_len: torch.Tensor, n_past: int, chunk: int) -> torch.Tensor:
    """The streaming rule for new frames that continue `past_len` earlier frames of each row.

    mask: (B, 1, Tn) 1 for the real new frames; past_len: (B,) long, earlier frames of each row
    (the first past_len[b] of the n_past cached key slots are real); chunk: frames per chunk (> 0).
    Keys are the n_past cached slots, then the Tn new frames. Returns bool (B, 1, Tn, n_past + Tn):
    a new frame at absolute position p = past_len + i sees every real earlier frame and the real new
    frames before the end of its own chunk ((p // chunk + 1) * chunk). Traceable (no Python branch
    on values).
    """
    n_new = mask.shape[-1]
    device = mask.device
    past_len = past_len.reshape(-1, 1).to(device)  # (B, 1)
    slots = torch.arange(n_past, device=device)
    past_visible = slots[None, :] < past_len  # (B, n_past)
    pos = past_len + torch.arange(n_new, device=device)[None, :]  # (B, Tn) absolute positions
    chunk_end = (torch.div(pos, chunk, rounding_mode="floor") + 1) * chunk  # (B, Tn)
    new_visible = (mask > 0) & (pos[:, None, :] < chunk_end[:, :, None])  # (B, Tn q, Tn k)
    visible = torch.cat([past_visible[:, None, :].expand(-1, n_new, -1), new_visible], dim=-1)
    visible = visible | ~visible.any(dim=-1, keepdim=True)
    return visible.unsqueeze(1)


def layer_norm(x: torch.Tensor, dim: int, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last dim (of size `dim`) without affine parameters, computed in float32.
    On CUDA the kernel accumulates 16-bit inputs in float32 itself, so they are not copied to
    float32 first (one rounding at the end either way)."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return F.layer_norm(x, (dim,), eps=eps)
    return F.layer_norm(x.float(), (dim,), eps=eps).to(x.dtype)


class TimestepEmbedding(nn.Module):
    """t (B,) in [0, 1] -> (B, dim): 256-dim sinusoid of 1000 t ([sin, cos]) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        args = 1000 * t.float()[:, None] * freqs[None]  # (B, half)
        sinusoid = torch.cat([args.sin(), args.cos()], dim=-1)  # (B, freq_dim)
        return self.time_mlp(sinusoid.to(self.time_mlp[0].weight.dtype))


class CausalConvPositionEmbedding(nn.Module):
    """Two [left-pad k-1, grouped Conv1d, Mish] layers on (B, T, dim); each frame sees 2(k-1) past frames."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, dim, T)
        h = self.conv1(F.pad(h, (self.kernel_size - 1, 0)))
        h = self.conv2(F.pad(h, (self.kernel_size - 1, 0)))
        return h.transpose(1, 2)

    def forward_cached(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, Tn, dim) new frames; past (B, 2, dim, k-1): each conv's input over the k-1 frames
        before them (zeros before frame 0). Returns the output (B, Tn, dim) and each conv's input
        over the new frames (B, 2, dim, Tn), from which the caller keeps the last k-1."""
        a = x.transpose(1, 2)  # (B, dim, Tn)
        b = self.conv1(torch.cat([past[:, 0].to(a.dtype), a], dim=2))
        out = self.conv2(torch.cat([past[:, 1].to(b.dtype), b], dim=2))
        return out.transpose(1, 2), torch.stack([a, b], dim=1)


class InputEmbedding(nn.Module):
    """[x, cond, mu, spks] (B, T, 3*80 + 80) -> (B, T, dim), plus the causal conv position embedding."""

    def __init__(self, mel_dim: int, mu_dim: int, spk_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * mel_dim + mu_dim + spk_dim, dim)
        self.conv_pos_embed = CausalConvPositionEmbedding(dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor) -> torch.Tensor:
        spks = spks[:, None, :].expand(-1, x.shape[1], -1)  # (B, T, spk_dim)
        h = self.proj(torch.cat([x, cond, mu, spks], dim=-1))
        return self.conv_pos_embed(h) + h

    def forward_cached(self, x, cond, mu, spks, past_conv):
        """As `forward` for new frames after earlier ones (`CausalConvPositionEmbedding.forward_cached`)."""
        spks = spks[:, None, :].expand(-1, x.shape[1], -1)
        h = self.proj(torch.cat([x, cond, mu, spks], dim=-1))
        pos, conv_in = self.conv_pos_embed.forward_cached(h, past_conv)
        return pos + h, conv_in


class RotaryEmbedding(nn.Module):
    """Rotary angles for positions 0..T-1; `inv_freq` is a persistent buffer (stored in flow.pt)."""

    def __init__(self, dim_head: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim_head, 2).float() / dim_head))

    def forward(self, n_frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns cos, sin: (T, dim_head) float32 for channel pairs (a, b); sin carries the sign of
        the rotation: -sin for a, +sin for b."""
        return self.at(torch.arange(n_frames, device=device, dtype=torch.float32))

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for any positions (..., T) -> (..., T, dim_head) float32 (see `forward`)."""
        angles = positions.float()[..., None] * self.inv_freq.float()  # (..., T, dim_head/2)
        cos = torch.stack([angles.cos(), angles.cos()], dim=-1).flatten(-2)
        sin = torch.stack([-angles.sin(), angles.sin()], dim=-1).flatten(-2)
        return cos, sin


def apply_rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (a, b) -> (a cos - b sin, b cos + a sin) of the first
    cos.shape[-1] channels of x (B, T, C), in place (x is a fresh projection); computed in float32."""
    rot_dim = cos.shape[-1]
    head = x[..., :rot_dim].float()
    swapped = head.unflatten(-1, (rot_dim // 2, 2)).flip(-1).flatten(-2)  # (b, a) pairs
    x[..., :rot_dim] = head * cos + swapped * sin
    return x


class AdaLayerNormZero(nn.Module):
    """Six modulation vectors from the time embedding: shift/scale/gate for attention and for the MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        """x (B, T, dim), c (B, dim) -> modulated norm of x, gate_msa, shift_mlp, scale_mlp, gate_mlp."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(F.silu(c)).chunk(6, dim=1)
        h = layer_norm(x, self.dim) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return h, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLayerNormFinal(nn.Module):
    """Final modulation; note the (scale, shift) order, unlike the blocks."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(c)).chunk(2, dim=1)
        return layer_norm(x, self.dim) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, hidden_rows: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim); attn_mask bool (B or 1, 1, T, T); hidden_rows bool (B or 1, T, 1) outputs to
        zero; cos/sin (T, dim_head) -> (B, T, dim)."""
        q = apply_rotary_(self.to_q(x), cos, sin)  # rotary before the head split: head 0 only
        k = apply_rotary_(self.to_k(x), cos, sin)
        v = self.to_v(x)
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out[0](out.transpose(1, 2).flatten(2))  # (B, T, dim)
        return out.masked_fill(hidden_rows, 0.0)

    def forward_cached(self, x, bias, cos, sin, past_k, past_v):
        """New frames x (B, Tn, dim) attending to cached keys/values past_k/v (B, H, Tc, Dh) and to
        themselves; bias (B, 1, Tn, Tc + Tn) additive mask; cos/sin (B, Tn, dim_head) at the new
        frames' positions. Returns the output (B, Tn, dim) and the new frames' k, v (B, H, Tn, Dh)."""
        q = apply_rotary_(self.to_q(x), cos, sin)
        k = apply_rotary_(self.to_k(x), cos, sin)
        v = self.to_v(x)
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v))
        keys = torch.cat([past_k.to(k.dtype), k], dim=2)
        values = torch.cat([past_v.to(v.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
        return self.to_out[0](out.transpose(1, 2).flatten(2)), k, v


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        inner = dim * mult
        # index 1 held a Dropout in the reference; Identity keeps the stored key names (ff.0.0, ff.2)
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")),
                                nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int):
        super().__init__()
        self.dim = dim
        self.attn_norm = AdaLayerNormZero(dim)
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x, c, attn_mask, hidden_rows, cos, sin):
        """x (B, T, dim), c (B, dim) time embedding -> (B, T, dim)."""
        h, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(x, c)
        x = x + gate_msa[:, None] * self.attn(h, attn_mask, hidden_rows, cos, sin)
        h = layer_norm(x, self.dim) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(h)

    def forward_cached(self, x, c, bias, cos, sin, past_k, past_v):
        """`forward` for new frames after cached ones -> (B, Tn, dim), the new frames' k, v."""
        h, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(x, c)
        a, k, v = self.attn.forward_cached(h, bias, cos, sin, past_k, past_v)
        x = x + gate_msa[:, None] * a
        h = layer_norm(x, self.dim) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(h), k, v


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.input_embed = InputEmbedding(cfg.mel_dim, cfg.mu_dim, cfg.spk_dim, cfg.dim)
        self.rotary_embed = RotaryEmbedding(cfg.dim_head)
        self.transformer_blocks = nn.ModuleList(
            [DiTBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.ff_mult) for _ in range(cfg.depth)])
        self.norm_out = AdaLayerNormFinal(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: torch.Tensor, cond: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity of the flow ODE.

        x: (B, 80, T) current ODE state; mask: (B, 1, T) 1 for real frames; mu: (B, 80, T) token
        features; t: (B,) or () time in [0, 1]; spks: (B, 80) projected speaker embedding; cond: (B, 80, T)
        prompt mel (zeros after the prompt); attn_mask: bool (B or 1, 1, T, T), True = may attend,
        None = full attention over the real frames of `mask`.
        Returns (B, 80, T) in the dtype of x.
        """
        if attn_mask is None:
            attn_mask = attention_mask(mask, streaming=False, chunk_frames=self.cfg.static_chunk_size)
        c = self.time_embed(t.reshape(-1).expand(x.shape[0]))  # (B, dim); a scalar t is shared
        h = self.input_embed(x.transpose(1, 2), cond.transpose(1, 2), mu.transpose(1, 2), spks)  # (B, T, dim)
        hidden_rows = ~attn_mask[:, 0, -1].unsqueeze(-1)  # (B, T, 1) frames the last query cannot see
        # the additive form of the mask, made once: attention would convert a boolean mask per block
        bias = torch.zeros(attn_mask.shape, device=x.device, dtype=h.dtype).masked_fill(~attn_mask, float("-inf"))
        cos, sin = self.rotary_embed(x.shape[2], x.device)
        for block in self.transformer_blocks:
            h = block(h, c, bias, hidden_rows, cos, sin)
        h = self.norm_out(h, c)
        return self.proj_out(h).transpose(1, 2)

    def forward_cached(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                       spks: torch.Tensor, cond: torch.Tensor, past_len: torch.Tensor, past_kv: torch.Tensor,
                       past_conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Velocity of new frames that continue earlier ones, under the streaming chunk mask.

        x, mu, cond: (B, 80, Tn) the new frames, right-padded; mask (B, 1, Tn) 1 for real ones;
        t (B,); spks (B, 80); past_len (B,) long: earlier frames of each row (its first new frame's
        position; a multiple of the chunk size, so every earlier frame is visible to every new one);
        past_kv: (depth, 2, B, H, Tc, Dh) keys (rotated) and values of the earlier frames (the first
        past_len[b] slots of each row real); past_conv: (B, 2, dim, k-1) the position convolutions'
        inputs over the k-1 frames before the new ones (zeros before frame 0).
        Returns v (B, 80, Tn) in the dtype of x, new_kv (depth, 2, B, H, Tn, Dh) and conv_in
        (B, 2, dim, Tn): what a later call reads as past_kv / past_conv. Real frames equal `forward`
        over all frames with the streaming mask, up to float rounding.
        """
        c = self.time_embed(t.reshape(-1).expand(x.shape[0]))
        h, conv_in = self.input_embed.forward_cached(x.transpose(1, 2), cond.transpose(1, 2), mu.transpose(1, 2),
                                                     spks, past_conv)
        visible = continuation_mask(mask, past_len, past_kv.shape[4], self.cfg.static_chunk_size)
        bias = torch.zeros(visible.shape, device=x.device, dtype=h.dtype).masked_fill(~visible, float("-inf"))
        positions = past_len.reshape(-1, 1).to(x.device) + torch.arange(x.shape[2], device=x.device)[None]
        cos, sin = self.rotary_embed.at(positions)  # (B, Tn, dim_head)
        new_k, new_v = [], []
        for i, block in enumerate(self.transformer_blocks):
            h, k, v = block.forward_cached(h, c, bias, cos, sin, past_kv[i, 0], past_kv[i, 1])
            new_k.append(k)
            new_v.append(v)
        h = self.norm_out(h, c)
        new_kv = torch.stack([torch.stack(new_k), torch.stack(new_v)], dim=1)  # (depth, 2, B, H, Tn, Dh)
        return self.proj_out(h).transpose(1, 2), new_kv, conv_in

    def cache_shape(self) -> tuple[int, int, int, int]:
        """(depth, heads, dim_head, conv context): the sizes of `forward_cached`'s caches."""
        cfg = self.cfg
        return cfg.depth, cfg.heads, cfg.dim_head, self.input_embed.conv_pos_embed.kernel_size - 1
