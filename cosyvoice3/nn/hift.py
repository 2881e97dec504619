"""The CosyVoice3 vocoder (`CausalHiFTGenerator`): 50 Hz mel -> 24 kHz waveform.

Pipeline (reference section 6): a causal F0 predictor (run in float64: its precision decides
whether re-running on a longer mel reproduces earlier samples); a neural source filter that turns
F0 into a harmonic excitation with the reference's fixed uniform noise (`cosyvoice3.nn.noise`);
the source's STFT is fused into a causal upsampling conv stack (x8, x5, x3) with Snake
residual blocks; the output is a magnitude/phase spectrum turned into audio by an iSTFT (n_fft 16,
hop 4).

Every convolution is causal: output frame i depends on input frames <= i, except `conv_pre`
(4 frames of look-ahead) and the first F0 conv (3 frames). A non-final call (`finalize=False`)
treats those frames as context, so re-running on a longer mel reproduces the earlier samples.

The module's state dict matches `hift.pt` after weight-norm folding (`load_hift`). The source
and iSTFT always run in float32; the conv stack runs in the module dtype.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice3.checkpoint import fold_weight_norm, load_strict, read_state_dict, strip_prefix
from cosyvoice3.config import HiFTConfig, ModelConfig
from cosyvoice3.errors import BadInputError

from .noise import FixedNoise


class CausalConv1d(nn.Conv1d):
    """Stride-1 conv keeping the length: (k-1)*dilation zeros on the left, or, for a look-ahead conv,
    on the right (replaced by real future frames when `context` is given)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, dilation: int = 1,
                 look_ahead: bool = False, weight_norm: bool = True):
        super().__init__(channels_in, channels_out, kernel_size, dilation=dilation)
        self.pad = (kernel_size - 1) * dilation
        self.look_ahead = look_ahead
        self.stored_with_weight_norm = weight_norm

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, T); context: (B, C, pad) frames after x (look-ahead convs only). Returns (B, C', T)."""
        if not self.look_ahead:
            x = F.pad(x, (self.pad, 0))
        elif context is None:
            x = F.pad(x, (0, self.pad))
        else:
            x = torch.cat([x, context], dim=2)
        return super().forward(x)


class CausalUpsample(nn.Conv1d):
    """Nearest-neighbour upsampling by `rate`, then a causal conv: (B, C, T) -> (B, C', rate*T)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, rate: int):
        super().__init__(channels_in, channels_out, kernel_size)
        self.rate = rate
        self.stored_with_weight_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat_interleave(self.rate, dim=2)
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class CausalDownsample(nn.Conv1d):
    """Left-pad rate-1 zeros, conv with stride `rate`: (B, C, T) -> (B, C', ceil(T/rate))."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, rate: int):
        super().__init__(channels_in, channels_out, kernel_size, stride=rate)
        self.stored_with_weight_norm = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.stride[0] - 1, 0)))


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, one alpha per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """For each dilation d: x += conv2(snake(conv1_d(snake(x)))), causal convs of one kernel size."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList([CausalConv1d(channels, channels, kernel_size, d) for d in dilations])
        self.convs2 = nn.ModuleList([CausalConv1d(channels, channels, kernel_size) for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class F0Predictor(nn.Module):
    """mel (B, 80, T) -> F0 in Hz (B, T): a look-ahead conv (3 future frames), 4 causal convs, ELUs,
    a per-frame linear layer and abs()."""

    def __init__(self, channels_in: int, channels: int, n_classes: int):
        super().__init__()
        convs = [CausalConv1d(channels_in, channels, 4, look_ahead=True)]
        convs += [CausalConv1d(channels, channels, 3) for _ in range(4)]
        self.condnet = nn.Sequential(*(m for conv in convs for m in (conv, nn.ELU())))
        self.classifier = nn.Linear(channels, n_classes)

    @property
    def look_ahead(self) -> int:
        return self.condnet[0].pad

    def forward(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """finalize=False: the last `look_ahead` frames are context only -> (B, T - look_ahead)."""
        if finalize:
            h = self.condnet[0](mel)
        else:
            h = self.condnet[0](mel[:, :, :-self.look_ahead], mel[:, :, -self.look_ahead:])
        h = self.condnet[1:](h)
        return self.classifier(h.transpose(1, 2)).squeeze(-1).abs()


class HarmonicSource(nn.Module):
    """Neural source filter (SineGen2 + SourceModuleHnNSF, causal eval mode): F0 -> excitation.

    Harmonics h = 1..H of F0 get a per-frame phase (the cumulative sum of each frame's phase
    increment, constant within a frame, as in the reference's causal variant); unvoiced samples
    (F0 <= threshold) keep only noise. The noise is the fixed uniform buffer, amplitude sigma where
    voiced and alpha/3 where unvoiced. A linear layer mixes the H channels, then tanh.
    """

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.n_harmonics = cfg.nb_harmonics + 1
        self.sample_rate = cfg.sampling_rate
        self.hop = math.prod(cfg.upsample_rates) * cfg.istft_hop_len  # samples per mel frame
        self.sine_amp = cfg.nsf_alpha
        self.noise_std = cfg.nsf_sigma
        self.voiced_threshold = cfg.nsf_voiced_threshold
        self.l_linear = nn.Linear(self.n_harmonics, 1)

    def forward(self, f0: torch.Tensor, noise: FixedNoise, start: int = 0) -> torch.Tensor:
        """f0: (B, T) Hz -> source (B, 1, (T - start) * hop) float32 of frames start..T-1; every
        row begins at sample 0 of the fixed noise, as a request of its own would (the phase of a
        frame is the cumulative sum over all frames before it, so `start` changes nothing in
        the samples it returns)."""
        f0 = f0.float()
        harmonics = torch.arange(1, self.n_harmonics + 1, device=f0.device, dtype=torch.float32)
        step = (f0[:, :, None] * harmonics / self.sample_rate) % 1  # (B, T, H) cycles per sample
        phase = torch.cumsum(step, dim=1)[:, start:] * 2 * math.pi * self.hop  # (B, T', H) at each frame's end
        f0 = f0[:, start:]
        sines = torch.sin(phase).repeat_interleave(self.hop, dim=1) * self.sine_amp  # (B, L, H)
        voiced = (f0 > self.voiced_threshold).float().repeat_interleave(self.hop, dim=1)[:, :, None]  # (B, L, 1)
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        first = start * self.hop
        excitation = sines * voiced + noise_amp * noise.sine_noise(first + sines.shape[1], f0.device)[:, first:]
        return self._mix(excitation)

    def windows(self, f0: torch.Tensor, lengths: list[int], starts: list[int], noise: FixedNoise) -> torch.Tensor:
        """`forward` for several rows at once: f0 (B, T) Hz, row i valid for its first lengths[i]
        frames -> (B, 1, W * hop) float32, W = max(lengths[i] - starts[i]); row i holds the source of
        its frames starts[i]..lengths[i]-1 (what `forward(f0[i:i+1, :lengths[i]], noise, starts[i])`
        returns), zeros after them. Its plain twin is `forward`, row by row."""
        f0 = f0.float()
        device = f0.device
        harmonics = torch.arange(1, self.n_harmonics + 1, device=device, dtype=torch.float32)
        step = (f0[:, :, None] * harmonics / self.sample_rate) % 1
        phase = torch.cumsum(step, dim=1) * 2 * math.pi * self.hop  # (B, T, H)
        width = max(n - w for n, w in zip(lengths, starts))
        first = torch.tensor(starts, device=device)[:, None]
        frame = (first + torch.arange(width, device=device)).clamp(max=f0.shape[1] - 1)  # (B, W)
        valid = torch.arange(width, device=device) < torch.tensor(lengths, device=device)[:, None] - first
        phase = phase.gather(1, frame[:, :, None].expand(-1, -1, phase.shape[2]))
        f0 = f0.gather(1, frame)
        sines = torch.sin(phase).repeat_interleave(self.hop, dim=1) * self.sine_amp  # (B, L, H)
        voiced = (f0 > self.voiced_threshold).float().repeat_interleave(self.hop, dim=1)[:, :, None]
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        last = torch.tensor(lengths, device=device)[:, None] * self.hop - 1  # a row's last real sample
        samples = torch.minimum(first * self.hop + torch.arange(width * self.hop, device=device), last)  # (B, L)
        table = noise.sine_noise(int(samples.max()) + 1, device)[0]  # (N, H)
        excitation = sines * voiced + noise_amp * table[samples]
        out = self._mix(excitation)
        return out * valid.repeat_interleave(self.hop, dim=1)[:, None, :]

    def _mix(self, excitation: torch.Tensor) -> torch.Tensor:
        w = self.l_linear.weight.float()
        b = self.l_linear.bias.float()
        return torch.tanh(F.linear(excitation, w, b)).transpose(1, 2)


def default_noise(cfg: HiFTConfig) -> FixedNoise:
    """The fixed noise for `cfg` and the released flow's sizes (the flow's token table and speaker
    projection are part of the reference's draw sequence; build `FixedNoise(model_config)` and pass
    it when they differ)."""
    return FixedNoise(ModelConfig(hift=cfg))


CONTEXT_FRAMES = 32  # mel frames before the wanted samples that a windowed vocoder call recomputes
# (the conv stack's receptive field with the released sizes: a window with 30 frames before the
# wanted samples gives them exactly, one with 28 does not; the source STFT and the iSTFT see 2)


class CausalHiFT(nn.Module):
    def __init__(self, cfg: HiFTConfig, noise: FixedNoise | None = None):
        """noise: the fixed noise to use (share one with the flow); None -> `default_noise(cfg)`."""
        super().__init__()
        self.cfg = cfg
        self.noise = noise if noise is not None else default_noise(cfg)
        self.n_fft, self.hop_len = cfg.istft_n_fft, cfg.istft_hop_len
        self.upsample_factor = math.prod(cfg.upsample_rates)  # STFT frames per mel frame
        self.m_source = HarmonicSource(cfg)
        base = cfg.base_channels
        self.conv_pre = CausalConv1d(cfg.in_channels, base, cfg.conv_pre_look_right + 1, look_ahead=True)
        self.ups = nn.ModuleList([CausalUpsample(base // 2**i, base // 2**(i + 1), k, rate)
                                  for i, (rate, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        spec_channels = self.n_fft + 2  # real and imaginary parts of n_fft/2 + 1 bins
        # source spectrum rate -> rate of each stage's output: 15x, 3x, 1x for rates (8, 5, 3)
        down_rates = [math.prod(cfg.upsample_rates[i + 1:]) for i in range(len(cfg.upsample_rates))]
        self.source_downs = nn.ModuleList([
            CausalDownsample(spec_channels, base // 2**(i + 1), 2 * r, r) if r > 1
            else CausalConv1d(spec_channels, base // 2**(i + 1), 1, weight_norm=False)
            for i, r in enumerate(down_rates)])
        self.source_resblocks = nn.ModuleList([
            ResBlock(base // 2**(i + 1), k, d)
            for i, (k, d) in enumerate(zip(cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes))])
        self.resblocks = nn.ModuleList([
            ResBlock(base // 2**(i + 1), k, d)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
        self.conv_post = CausalConv1d(base // 2**len(cfg.upsample_rates), spec_channels, 7)
        self.f0_predictor = F0Predictor(cfg.f0_in_channels, cfg.f0_cond_channels, cfg.f0_num_class)

    def weight_norm_layer_names(self) -> list[str]:
        """Layers whose weight the official `hift.pt` stores as a weight-norm (g, v) pair."""
        return [name for name, m in self.named_modules() if getattr(m, "stored_with_weight_norm", False)]

    def window(self, device: torch.device) -> torch.Tensor:
        """Periodic Hann window of n_fft samples (computed in float64, as scipy does), float32."""
        return torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64, device=device).float()

    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel (B, 80, T) -> F0 in Hz (B, T), or (B, T - 3) when not finalize; run in float64, returned
        as float32 (half precision would move a 300 Hz F0 by about 1 Hz)."""
        self.f0_predictor.to(torch.float64)  # no-op unless something cast the module since loading
        return self.f0_predictor(mel.to(torch.float64), finalize=finalize).float()

    def source_spectrum(self, source: torch.Tensor) -> torch.Tensor:
        """source (B, 1, L) -> STFT stacked as [real, imag]: (B, n_fft + 2, L / hop + 1) float32."""
        spec = torch.stft(source[:, 0].float(), self.n_fft, self.hop_len, self.n_fft,
                          window=self.window(source.device), return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)

    def source_spectra(self, sources: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """`source_spectrum` for several rows at once: sources (B, 1, L_max), row i valid for its
        first lengths[i] samples -> (B, n_fft + 2, L_max / hop + 1), row i's first lengths[i] / hop
        + 1 frames as `source_spectrum` gives them for that row alone (each row reflected at its
        own ends), zeros after. Its plain twin is `source_spectrum`, row by row."""
        x = sources[:, 0].float()
        pad = self.n_fft // 2
        n = torch.tensor(lengths, device=x.device)[:, None]
        at = torch.arange(-pad, x.shape[1] + pad, device=x.device)[None, :]  # sample read at each padded place
        at = torch.where(at < 0, -at, at)
        at = torch.where(at >= n, 2 * (n - 1) - at, at).clamp(0, x.shape[1] - 1)
        spec = torch.stft(x.gather(1, at), self.n_fft, self.hop_len, self.n_fft, window=self.window(x.device),
                          center=False, return_complex=True)
        spec = torch.cat([spec.real, spec.imag], dim=1)
        frames = torch.arange(spec.shape[2], device=x.device)[None, :] <= n // self.hop_len
        return spec * frames[:, None, :]

    def decode(self, mel: torch.Tensor, source_spec: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """The conv stack: mel (1, 80, T') and source spectrum (1, 18, 120 T' + 1) -> spectrum logits
        (1, 18, 120 T'' + 1), T'' = T' (finalize) or T' - 4 (the last 4 frames are conv_pre context).
        Channels 0..8 are log magnitudes, 9..17 phases (before sin)."""
        dtype = self.conv_pre.weight.dtype
        mel, source_spec = mel.to(dtype), source_spec.to(dtype)
        if finalize:
            x = self.conv_pre(mel)
        else:
            look = self.conv_pre.pad
            x = self.conv_pre(mel[:, :, :-look], mel[:, :, -look:])
            source_spec = source_spec[:, :, :-self.upsample_factor * look]
        n_kernels = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # 120 T -> 120 T + 1, aligned with the STFT frames
            x = x + self.source_resblocks[i](self.source_downs[i](source_spec))
            x = sum(self.resblocks[i * n_kernels + j](x) for j in range(n_kernels)) / n_kernels
        return self.conv_post(F.leaky_relu(x, 0.01))

    def istft(self, spectrum: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """Spectrum logits (1, 18, F) -> waveform (1, hop (F - 1)) float32, clamped to the audio limit;
        without finalize the last mel frame's worth of samples (not yet stable) is dropped."""
        spectrum = spectrum.float()
        n_bins = self.n_fft // 2 + 1
        magnitude = torch.exp(spectrum[:, :n_bins]).clamp(max=1e2)
        phase = torch.sin(spectrum[:, n_bins:])
        complex_spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        speech = torch.istft(complex_spec, self.n_fft, self.hop_len, self.n_fft, window=self.window(spectrum.device))
        if not finalize:
            speech = speech[:, :-self.upsample_factor * self.hop_len]
        return speech.clamp(-self.cfg.audio_limit, self.cfg.audio_limit)

    def istft_rows(self, spectrum: torch.Tensor, frames: list[int], finalize: list[bool]) -> list[torch.Tensor]:
        """`istft` for several rows at once: spectrum logits (B, 18, F_max), row i valid for its
        first frames[i] -> [waveform (hop (frames[i] - 1),) or less the unstable tail, as `istft`
        gives row i alone]. The overlap-add divides each row by its own window envelope, so a
        row's last samples do not see the padded frames after it. Its plain twin is `istft`."""
        spectrum = spectrum.float()
        n_bins = self.n_fft // 2 + 1
        magnitude = torch.exp(spectrum[:, :n_bins]).clamp(max=1e2)
        phase = torch.sin(spectrum[:, n_bins:])
        frames_t = torch.fft.irfft(torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase)),
                                   n=self.n_fft, dim=1)  # (B, n_fft, F)
        window = self.window(spectrum.device)[None, :, None]
        real = (torch.arange(spectrum.shape[2], device=spectrum.device)[None, :]
                < torch.tensor(frames, device=spectrum.device)[:, None])[:, None, :].float()
        size = (1, self.n_fft + self.hop_len * (spectrum.shape[2] - 1))
        fold = dict(output_size=size, kernel_size=(1, self.n_fft), stride=(1, self.hop_len))
        wave = F.fold(frames_t * window * real, **fold)[:, 0, 0]
        envelope = F.fold((window * window * real).expand(spectrum.shape[0], -1, -1), **fold)[:, 0, 0]
        wave = (wave / torch.where(envelope > 1e-11, envelope, 1.0)).clamp(-self.cfg.audio_limit, self.cfg.audio_limit)
        begin, withheld = self.n_fft // 2, self.upsample_factor * self.hop_len
        return [wave[i, begin:begin + self.hop_len * (f - 1) - (0 if fin else withheld)]
                for i, (f, fin) in enumerate(zip(frames, finalize))]

    def withheld_frames(self, finalize: bool) -> int:
        """Mel frames at the end of a non-final call that are context only (F0 and conv_pre
        look-ahead, plus the frame whose samples are not yet stable)."""
        return 0 if finalize else self.f0_predictor.look_ahead + self.conv_pre.pad + 1

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, finalize: bool = True, stack=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform of one mel.

        mel: (1, 80, T) the whole mel so far (prompt frames excluded).
        finalize: True -> speech (1, 480 T). False -> the last 3 frames are F0 look-ahead and the 4
        before them conv_pre look-ahead, and the last 480 samples are withheld: speech (1, 480 (T - 8)),
        equal (up to float noise) to the first samples of any later call on a longer mel.
        stack: a `cosyvoice3.backends.VocoderStack` (None = `decode`).
        Returns speech float32 and source (1, 1, 480 T) or (1, 1, 480 (T - 3)) float32.
        """
        speech, sources = self.vocode([mel[0]], [finalize], stack)
        return speech[0][None], sources[0][None]

    @torch.inference_mode()
    def vocode(self, mels: list[torch.Tensor], finalize: list[bool], stack=None, starts: list[int] | None = None):
        """`inference` for several mels at once: mels[i] (80, T_i), each with its own `finalize`;
        starts[i]: the first sample wanted (a multiple of the 480 samples of a frame; default 0).

        A row that wants only its tail is computed on a window: F0 and the phase of the source
        over the whole mel (cheap), the conv stack and the iSTFT only from `CONTEXT_FRAMES`
        before the wanted part (every layer after conv_pre's look-ahead is causal, and the
        window's own edge effects stay inside that context), so a streaming chunk costs what
        is new, not the whole segment so far. The conv stack runs once on the zero-padded batch
        (in its finalize form; a non-final row is cut where its look-ahead frames begin, which
        the causal stack never lets reach the frames kept); the source spectrum and the iSTFT,
        whose ends depend on each row's own length, run batched with each row's own ends
        (`HarmonicSource.windows`, `source_spectra`, `istft_rows`; their per-row twins are the
        oracle of the tests). Returns (speech list of the
        samples from starts[i] on, source list of (1, L_i) for the window's frames), float32.
        """
        starts = starts or [0] * len(mels)
        frame = self.upsample_factor * self.hop_len  # samples per mel frame
        for m, fin in zip(mels, finalize):
            if m.shape[-1] < max(1, self.withheld_frames(fin)):
                raise BadInputError(f"the vocoder needs at least {max(1, self.withheld_frames(fin))} mel frames "
                                    f"(finalize={fin}), got {m.shape[-1]}")
        look_f0, look_pre = self.f0_predictor.look_ahead, self.conv_pre.pad
        padded = torch.nn.utils.rnn.pad_sequence([m.transpose(0, 1) for m in mels], batch_first=True)
        padded = padded.transpose(1, 2).float()  # (B, 80, T_max), zeros after each row
        f0_lens = [m.shape[-1] - (0 if fin else look_f0) for m, fin in zip(mels, finalize)]
        f0 = self.predict_f0(padded, finalize=True)  # (B, T_max); row i is valid up to f0_lens[i]
        for i, n in enumerate(f0_lens):
            f0[i, n:] = 0.0
        firsts = [max(0, min(s // frame - CONTEXT_FRAMES, n - 1)) for s, n in zip(starts, f0_lens)]
        lengths = [(n - w) * frame for n, w in zip(f0_lens, firsts)]
        source = self.m_source.windows(f0, f0_lens, firsts, self.noise)  # (B, 1, 480 W)
        spec = self.source_spectra(source, lengths)  # (B, 18, 120 W + 1)
        width = max(n - w for n, w in zip(f0_lens, firsts))
        at = (torch.tensor(firsts, device=padded.device)[:, None] + torch.arange(width, device=padded.device))
        mel_in = padded.gather(2, at.clamp(max=padded.shape[2] - 1)[:, None, :].expand(-1, padded.shape[1], -1))
        mel_in = mel_in * (at < torch.tensor(f0_lens, device=padded.device)[:, None])[:, None, :]
        logits = (stack or (lambda m, s: self.decode(m, s, finalize=True)))(mel_in, spec)
        kept = [(n - w) if fin else (n - w - look_pre) for n, w, fin in zip(f0_lens, firsts, finalize)]
        waves = self.istft_rows(logits, [self.upsample_factor * k + 1 for k in kept], finalize)
        speech = [wav[max(0, start - w * frame):] for wav, w, start in zip(waves, firsts, starts)]
        return speech, [source[i, :, :n] for i, n in enumerate(lengths)]


def load_hift(path: str | Path, cfg: HiFTConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, noise: FixedNoise | None = None) -> CausalHiFT:
    """Read `hift.pt` (a `generator.` prefix is stripped, weight norm folded, strict load) into an
    eval-mode `CausalHiFT` on `device`/`dtype`, with its F0 predictor in float64 (folded in float64,
    as the reference does). Cast with this function's `dtype`, not `.half()` afterwards: that would
    round the F0 predictor's weights."""
    noise = noise if noise is not None else default_noise(cfg)
    with torch.device("meta"):
        hift = CausalHiFT(cfg, noise)  # no init draws: every tensor comes from the file
    hift.to_empty(device="cpu")
    state = strip_prefix(read_state_dict(path), "generator.")
    f0_prefix = "f0_predictor."
    f0_state = fold_weight_norm({k[len(f0_prefix):]: v for k, v in state.items() if k.startswith(f0_prefix)},
                                dtype=torch.float64)
    state = fold_weight_norm({k: v for k, v in state.items() if not k.startswith(f0_prefix)})
    state.update({f0_prefix + k: v for k, v in f0_state.items()})
    load_strict(hift, state, path)
    hift = hift.to(device=device, dtype=dtype).eval()
    hift.f0_predictor.to(device=device, dtype=torch.float64).load_state_dict(f0_state)
    return hift
