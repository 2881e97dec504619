"""Where the recogniser comes from: given, cached, downloaded, or the demo one.

Order (`resolve_recognizer`):
1. `model_dir` when given (it must exist);
2. with `demo=True` (the synthesis model is the random demo model), the tiny random recogniser,
   built once in the cache;
3. the download cache: `<cache root>/models/SenseVoiceSmall`;
4. a download of the released files from Hugging Face (FunAudioLLM/SenseVoiceSmall), then
   ModelScope (iic/SenseVoiceSmall), resumable (cosyvoice3.download does the transfers).

Unlike the synthesis model there is no fall-back to the demo recogniser when the download fails:
its random text would go into a real model's prompt. The `DownloadError` says why, and the user
types the transcript.
"""

from __future__ import annotations

from pathlib import Path

from cosyvoice3.download import (
    DownloadError,
    ModelSpec,
    ProgressFn,
    ResolvedModel,
    cache_root,
    default_endpoints,
    download_model,
    is_complete,
)
from cosyvoice3.errors import ModelLoadError

from .config import FILES

SENSEVOICE = ModelSpec("SenseVoiceSmall", FILES, "FunAudioLLM/SenseVoiceSmall", modelscope_repo="iic/SenseVoiceSmall")
DEMO_NAME = "cosyfast-asr-demo"
STAGE = "recognizer_download"

__all__ = ["DEMO_NAME", "SENSEVOICE", "DownloadError", "resolve_recognizer"]


def resolve_recognizer(model_dir: str | Path | None = None, demo: bool = False, cache_dir: str | Path | None = None,
                       progress: ProgressFn | None = None, endpoints: list[str] | None = None,
                       timeout: float = 20.0) -> ResolvedModel:
    """Pick the recogniser directory as described in the module docstring. Raises ModelLoadError
    for a given directory that does not exist, DownloadError when no endpoint delivered."""
    report = progress or (lambda stage, fraction, message="": None)
    if model_dir:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"recogniser directory not found: {path}")
        return ResolvedModel(path, False, "given")
    models = cache_root(cache_dir) / "models"
    if demo:
        from .demo import ensure_demo_recognizer

        report(STAGE, 0.0, "building the demo recogniser (random weights: random text)")
        return ResolvedModel(ensure_demo_recognizer(models / DEMO_NAME), True, "demo", "the demo model is in use")
    cached = models / SENSEVOICE.name
    if is_complete(cached, SENSEVOICE.files):
        return ResolvedModel(cached, False, "cache")
    path = download_model(cached, endpoints or default_endpoints(), report, timeout, spec=SENSEVOICE, stage=STAGE)
    return ResolvedModel(path, False, "download")
