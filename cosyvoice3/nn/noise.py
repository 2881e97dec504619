"""The fixed noise tensors of the reference implementation, reproduced exactly.

The official model draws its "random" inputs once, at construction, from the global CPU
generator right after `set_all_random_seed(0)` (in `CausalConditionalCFM.__init__`):

    manual_seed(0)
    randn(1, 80, 15000)                     flow noise: x0 of the ODE, sliced [:T]
    Embedding(6561, 80); Linear(192, 80)    flow token embedding, speaker projection (init draws)
    F0 predictor (5 convs + Linear)         HiFT f0 predictor (init draws; sizes matter)
    rand(1, 9), column 0 zeroed             SineGen2.rand_ini (inert in the causal path)
    rand(1, 300 s * 24000, 9)               SineGen2.sine_waves: uniform NSF noise, sliced [:L]
    Linear(9, 1); rand(1, 300 s * 24000, 1) m_source.l_linear, SourceModuleHnNSF.uv

`FixedNoise` replays this sequence on a private `torch.Generator` (the global RNG is never
touched): the parameter initialisers are replaced by the same draws on same-shaped tensors.
The 7.2 M x 9 `sine_waves` buffer is never materialised: on the CPU, `torch.rand` draws
serially, so n rows drawn from the generator state saved just before `sine_waves` are exactly
the first n rows of the full draw. Only the prefix a call needs is drawn, and the largest prefix
drawn so far is cached per device (at most the 300 s the reference allocates).

The `uv` buffer is not reproduced: it only feeds the noise branch that `SourceModuleHnNSF`
returns and the vocoder discards, and it is drawn after everything that is used.
"""

from __future__ import annotations

import math
import threading

import torch

from cosyvoice3.config import ModelConfig
from cosyvoice3.errors import TooLongError

FLOW_NOISE_FRAMES = 50 * 300  # 300 s of 50 Hz mel frames
FLOW_NOISE_CHANNELS = 80
NOISE_SECONDS = 300


def _linear_init_draws(weight_shape: tuple[int, ...], generator: torch.Generator) -> None:
    """Consume the draws of PyTorch's default Linear/Conv init (kaiming_uniform_ weight, uniform bias)."""
    weight = torch.empty(weight_shape, device="cpu")
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(math.prod(weight_shape[1:]))  # 1 / sqrt(fan_in)
    torch.empty(weight_shape[0], device="cpu").uniform_(-bound, bound, generator=generator)


def _canonical(device: torch.device | str) -> torch.device:
    """'cuda' and 'cuda:0' (the current device) are one cache entry."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class FixedNoise:
    """The reference's construction-time noise: flow x0, HiFT `rand_ini` and `sine_waves`.

    config: the model's `ModelConfig` (None = the released model's sizes). Sizes that change the
    draw sequence: the flow's token table (vocab_size x input_size) and speaker projection
    (spk_embed_dim -> output_size), and the F0 predictor (f0_in_channels -> f0_cond_channels ->
    f0_num_class). Thread-safe; one instance can serve the flow and the vocoder of every request.
    """

    def __init__(self, config: ModelConfig | None = None):
        config = config if config is not None else ModelConfig()
        flow, hift = config.flow, config.hift
        self.n_harmonics = hift.nb_harmonics + 1
        self.max_samples = NOISE_SECONDS * hift.sampling_rate
        generator = torch.Generator(device="cpu")
        generator.manual_seed(0)
        self._flow = torch.randn(1, FLOW_NOISE_CHANNELS, FLOW_NOISE_FRAMES, generator=generator, device="cpu")
        torch.empty(flow.vocab_size, flow.input_size, device="cpu").normal_(generator=generator)  # input_embedding
        _linear_init_draws((flow.output_size, flow.spk_embed_dim), generator)  # spk_embed_affine_layer
        _linear_init_draws((hift.f0_cond_channels, hift.f0_in_channels, 4), generator)  # f0 condnet.0
        for _ in range(4):
            _linear_init_draws((hift.f0_cond_channels, hift.f0_cond_channels, 3), generator)  # condnet.2..8
        _linear_init_draws((hift.f0_num_class, hift.f0_cond_channels), generator)  # f0 classifier
        rand_ini = torch.rand(1, self.n_harmonics, generator=generator, device="cpu")
        rand_ini[:, 0] = 0
        self._rand_ini = rand_ini
        self._sine_state = generator.get_state()  # the state just before sine_waves
        self._flow_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._sine_cache: dict[torch.device, torch.Tensor] = {}
        self._lock = threading.Lock()

    @property
    def rand_ini(self) -> torch.Tensor:
        """(1, nb_harmonics+1) initial phases of `SineGen2` (column 0 is 0). Inert in the causal NSF."""
        return self._rand_ini.clone()

    def flow_noise(self, n_frames: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x0 of the flow ODE for a sequence of `n_frames` mel frames (prompt + generated): (1, 80, T)."""
        if n_frames > FLOW_NOISE_FRAMES:
            raise TooLongError(f"{n_frames} mel frames exceed the flow's fixed noise "
                               f"({FLOW_NOISE_FRAMES} frames = {NOISE_SECONDS} s)")
        key = (_canonical(device), dtype)
        with self._lock:
            full = self._flow_cache.get(key)
            if full is None:
                full = self._flow_cache[key] = self._flow.to(device=key[0], dtype=dtype)
        return full[:, :, :n_frames].clone()

    def sine_noise(self, n_samples: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform [0, 1) NSF noise for `n_samples` output samples: (1, n, nb_harmonics+1), float32.

        A read-only view of a cached prefix: do not modify it in place.
        """
        if n_samples > self.max_samples:
            raise TooLongError(f"{n_samples} samples exceed the vocoder's fixed noise "
                               f"({self.max_samples} samples = {NOISE_SECONDS} s)")
        device = _canonical(device)
        with self._lock:
            cached = self._sine_cache.get(device)
            if cached is None or cached.shape[1] < n_samples:
                have = 0 if cached is None else cached.shape[1]
                rows = min(self.max_samples, max(n_samples, 2 * have))  # grow geometrically
                generator = torch.Generator(device="cpu")
                generator.set_state(self._sine_state)
                cached = torch.rand(1, rows, self.n_harmonics, generator=generator, device="cpu").to(device)
                self._sine_cache[device] = cached
        return cached[:, :n_samples]
