"""The CosyVoice3 flow: speech tokens -> mel frames (`CausalMaskedDiffWithDiT` + `CausalConditionalCFM`).

`prepare` turns prompt + new tokens into the ODE conditions: token embedding (80-d), the
pre-lookahead layer (each token sees 3 future tokens), x2 repetition to the 50 Hz mel rate, the
prompt mel as `cond`, and the L2-normalised speaker embedding projected to 80 dims. `solve`
integrates the ODE from the fixed noise with 10 Euler steps on the cosine time grid and
classifier-free guidance (a batch of 2: conditional, and unconditional with mu/spks/cond zeroed).

`solve` integrates a batch of N requests at once (CFG makes it 2N estimator rows: the N
conditional rows, then the N unconditional ones), each row with its own real length (`mask`) and
attention rule (`chunk_frames`). The estimator is an argument (`cosyvoice3.backends.Estimator`;
default: this module's own DiT), so engines (TensorRT, ONNX Runtime, CUDA graphs) plug in without
touching the module. The ODE state is integrated in float32 whatever the estimator's dtype (a
half-precision estimator gets its inputs cast and its output cast back).
Key names follow the official `flow.pt`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice3.checkpoint import load_strict, read_state_dict
from cosyvoice3.config import FlowConfig
from cosyvoice3.errors import BadInputError

from .dit import DiT, chunk_attention_mask


class PreLookaheadLayer(nn.Module):
    """Residual conv pair on token embeddings: conv1 sees each token and `lookahead` future ones
    (zeros or the given context past the end), conv2 sees two past frames of the hidden sequence."""

    def __init__(self, channels_in: int, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels_in, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels_in, kernel_size=3)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, S, C) embeddings; context: (B, lookahead, C) the tokens after x, or None (zeros).
        Returns (B, S, C)."""
        h = x.transpose(1, 2)  # (B, C, S)
        if context is None:
            h = F.pad(h, (0, self.lookahead))
        else:
            h = torch.cat([h, context.transpose(1, 2)], dim=2)
        h = F.leaky_relu(self.conv1(h), 0.01)  # (B, channels, S)
        h = self.conv2(F.pad(h, (self.conv2.kernel_size[0] - 1, 0)))
        return h.transpose(1, 2) + x


def run_to_end(steps: Generator):
    """Run a step generator (`CausalFlow.solve_steps`, ...) to its end and return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def cosine_time_grid(n_steps: int) -> torch.Tensor:
    """t_k = 1 - cos(k/n * pi/2), k = 0..n: (n+1,) float32."""
    return 1 - torch.cos(torch.linspace(0, 1, n_steps + 1, dtype=torch.float32) * 0.5 * torch.pi)


class CausalFlow(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.pre_lookahead_layer = PreLookaheadLayer(cfg.input_size, cfg.pre_lookahead_channels,
                                                     cfg.pre_lookahead_len)
        self.decoder = nn.ModuleDict({"estimator": DiT(cfg.dit)})

    @property
    def estimator(self) -> DiT:
        """The PyTorch DiT (the default estimator)."""
        return self.decoder["estimator"]

    def default_estimator(self, x, mask, mu, t, spks, cond, chunk_frames):
        """The `cosyvoice3.backends.Estimator` call on this module's own DiT."""
        return self.estimator(x, mask, mu, t, spks, cond, attn_mask=chunk_attention_mask(mask, chunk_frames))

    def prepare(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                embedding: torch.Tensor, finalize: bool):
        """The ODE conditions for prompt + new tokens.

        token: (1, N) new speech tokens; prompt_token: (1, P); prompt_feat: (1, 2P, 80) prompt mel;
        embedding: (1, 192) speaker embedding; finalize: False -> the last `pre_lookahead_len` tokens
        are only look-ahead context (their frames are not produced).
        Returns mu (1, 80, T), cond (1, 80, T) (prompt mel, then zeros), spks (1, 80), n_prompt_frames;
        T = 2 (P + N) when finalize, else 2 (P + N - pre_lookahead_len).
        """
        lookahead = self.cfg.pre_lookahead_len
        if not finalize and token.shape[1] < lookahead:
            raise BadInputError(f"a non-final flow call needs at least {lookahead} new tokens, got {token.shape[1]}")
        dtype = self.input_embedding.weight.dtype
        spks = self.spk_embed_affine_layer(F.normalize(embedding.to(dtype), dim=1))  # (1, 80)
        tokens = torch.cat([prompt_token, token], dim=1).long()
        emb = self.input_embedding(tokens.clamp(min=0))  # (1, S, 80)
        if finalize:
            h = self.pre_lookahead_layer(emb)
        else:
            h = self.pre_lookahead_layer(emb[:, :-lookahead], context=emb[:, -lookahead:])
        mu = h.repeat_interleave(self.cfg.token_mel_ratio, dim=1).transpose(1, 2).contiguous()  # (1, 80, T)
        n_prompt_frames = prompt_feat.shape[1]
        if n_prompt_frames > mu.shape[2]:
            raise BadInputError(f"prompt mel has {n_prompt_frames} frames, more than the {mu.shape[2]} of the tokens")
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt_frames] = prompt_feat.to(dtype).transpose(1, 2)
        return mu, cond, spks, n_prompt_frames

    def solve(self, mu: torch.Tensor, cond: torch.Tensor, spks: torch.Tensor, mask: torch.Tensor,
              chunk_frames: torch.Tensor, noise: torch.Tensor, estimator=None,
              trace: dict | None = None) -> torch.Tensor:
        """`solve_steps` run to the end (see there)."""
        return run_to_end(self.solve_steps(mu, cond, spks, mask, chunk_frames, noise, estimator, trace))

    def solve_steps(self, mu: torch.Tensor, cond: torch.Tensor, spks: torch.Tensor, mask: torch.Tensor,
                    chunk_frames: torch.Tensor, noise: torch.Tensor, estimator=None,
                    trace: dict | None = None) -> Generator[None, None, torch.Tensor]:
        """A generator that pauses after each Euler step but the last (a caller may do other work
        between steps) and returns the mel. Euler integration of the flow ODE from `noise` (t = 0) to the mel (t = 1), with CFG, for
        N requests at once.

        mu, cond: (N, 80, T); spks: (N, 80); mask: (N, 1, T) 1 for each request's real frames
        (padding after them); chunk_frames: (N,) long, 0 = full attention, C = streaming chunks
        of C frames; noise: (N, 80, T) x0; estimator: a `cosyvoice3.backends.Estimator` (None =
        this module's DiT). trace (N = 1 only): receives euler_t (n,), euler_x (n, 80, T) (x
        entering each step), euler_dphi_cfg_in (n, 2, 80, T) (estimator outputs) as float32 CPU
        tensors. Returns (N, 80, T) float32; padded frames hold garbage.
        """
        estimator = estimator or self.default_estimator
        rate = self.cfg.cfm.inference_cfg_rate
        dtype = self.estimator.proj_out.weight.dtype
        zeros = torch.zeros_like
        n = mu.shape[0]
        mask_in = torch.cat([mask, mask]).to(dtype)  # (2N, 1, T): conditional rows, then unconditional
        mu_in = torch.cat([mu, zeros(mu)]).to(dtype)  # (2N, 80, T)
        spks_in = torch.cat([spks, zeros(spks)]).to(dtype)  # (2N, 80)
        cond_in = torch.cat([cond, zeros(cond)]).to(dtype)  # (2N, 80, T)
        chunk_in = torch.cat([chunk_frames, chunk_frames]).to(mu.device)  # (2N,)
        x = noise.float()
        steps_t, steps_x, steps_v = [], [], []
        for step, (t, dt) in enumerate(self.euler_times(mu.device)):
            v = estimator(torch.cat([x, x]).to(dtype), mask_in, mu_in, t.expand(2 * n).to(dtype),
                          spks_in, cond_in, chunk_in).float()  # (2N, 80, T)
            if trace is not None:
                steps_t.append(t.detach().cpu())
                steps_x.append(x[0].detach().cpu())
                steps_v.append(v.detach().cpu())
            x = x + dt * ((1.0 + rate) * v[:n] - rate * v[n:])
            if step < self.cfg.cfm.n_timesteps - 1:
                yield
        if trace is not None:
            trace["euler_t"] = torch.stack(steps_t)
            trace["euler_x"] = torch.stack(steps_x)
            trace["euler_dphi_cfg_in"] = torch.stack(steps_v)
        return x

    def euler_times(self, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(t, dt) of each Euler step on the cosine grid, accumulated as the reference does."""
        t_grid = cosine_time_grid(self.cfg.cfm.n_timesteps).to(device)
        t, dt = t_grid[0], t_grid[1] - t_grid[0]
        out = []
        for step in range(1, len(t_grid)):
            out.append((t, dt))
            t = t + dt
            if step < len(t_grid) - 1:
                dt = t_grid[step + 1] - t
        return out

    def solve_continued_steps(self, mu: torch.Tensor, cond: torch.Tensor, spks: torch.Tensor, mask: torch.Tensor,
                              past_len: torch.Tensor, noise: torch.Tensor, estimator, read_past,
                              keep_new) -> Generator[None, None, torch.Tensor]:
        """`solve_steps` for new frames that continue earlier, already solved frames (streaming chunks).

        mu, cond, noise: (N, 80, Tn) the new frames, right-padded; spks (N, 80); mask (N, 1, Tn) 1 for
        real ones; past_len (N,) long, earlier frames per request; estimator: a
        `cosyvoice3.backends.ChunkEstimator`; read_past(step) -> (past_kv (depth, 2, 2N, H, Tc, Dh),
        past_conv (2N, 2, dim, k-1)) of the 2N estimator rows (conditional rows, then
        unconditional) at that ODE step; keep_new(step, new_kv, conv_in) receives what the step
        computed for the new frames. Returns (N, 80, Tn) float32.
        """
        rate = self.cfg.cfm.inference_cfg_rate
        dtype = estimator.dtype
        zeros = torch.zeros_like
        n = mu.shape[0]
        mask_in = torch.cat([mask, mask]).to(dtype)
        mu_in = torch.cat([mu, zeros(mu)]).to(dtype)
        spks_in = torch.cat([spks, zeros(spks)]).to(dtype)
        cond_in = torch.cat([cond, zeros(cond)]).to(dtype)
        past_in = torch.cat([past_len, past_len]).to(mu.device)
        x = noise.float()
        for step, (t, dt) in enumerate(self.euler_times(mu.device)):
            past_kv, past_conv = read_past(step)
            v, new_kv, conv_in = estimator(torch.cat([x, x]).to(dtype), mask_in, mu_in, t.expand(2 * n).to(dtype),
                                           spks_in, cond_in, past_in, past_kv, past_conv)
            keep_new(step, new_kv, conv_in)
            v = v.float()
            x = x + dt * ((1.0 + rate) * v[:n] - rate * v[n:])
            if step < self.cfg.cfm.n_timesteps - 1:
                yield
        return x

    def chunk_frames(self, streaming: bool) -> int:
        """The attention rule of a call: the DiT's static chunk size when streaming, 0 (full) if not."""
        return self.cfg.dit.static_chunk_size if streaming else 0

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, streaming: bool, finalize: bool, noise_source,
                  estimator=None, trace: dict | None = None) -> torch.Tensor:
        """Mel frames of the new tokens of one request.

        token (1, N), prompt_token (1, P), prompt_feat (1, 2P, 80), embedding (1, 192): as in `prepare`.
        streaming: chunk attention (`static_chunk_size` frames, counted from the first prompt
        frame) instead of full attention; finalize: see `prepare`.
        noise_source: has `flow_noise(T, device, dtype)` (a `cosyvoice3.nn.noise.FixedNoise`).
        estimator: see `solve`. trace: optional dict for the golden checker: mu, cond, spks_proj,
        noise and the `solve` entries.
        Returns (1, 80, M) float32, M = T - 2P generated frames.
        """
        mu, cond, spks, n_prompt_frames = self.prepare(token, prompt_token, prompt_feat, embedding, finalize)
        n_frames = mu.shape[2]
        mask = torch.ones(1, 1, n_frames, device=mu.device, dtype=mu.dtype)
        chunk = torch.tensor([self.chunk_frames(streaming)], dtype=torch.long, device=mu.device)
        noise = noise_source.flow_noise(n_frames, mu.device, torch.float32)
        if trace is not None:
            trace.update(mu=mu.float().cpu(), cond=cond.float().cpu(), spks_proj=spks.float().cpu(),
                         noise=noise.cpu())
        mel = self.solve(mu, cond, spks, mask, chunk, noise, estimator, trace)
        return mel[:, :, n_prompt_frames:]


def load_flow(path: str | Path, cfg: FlowConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> CausalFlow:
    """Read `flow.pt` (strict: every key and shape must match `cfg`) into an eval-mode `CausalFlow`."""
    with torch.device("meta"):
        flow = CausalFlow(cfg)  # no init draws: every tensor comes from the file
    flow.to_empty(device="cpu")
    load_strict(flow, read_state_dict(path), path)
    return flow.to(device=device, dtype=dtype).eval()
