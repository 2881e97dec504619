"""Finding the model directory: given, cached, downloaded, or the demo model.

Order (`resolve_model`):
1. `model_dir` when given (it must exist);
2. with `demo=True`, the demo checkpoint (cosyvoice3.tools.demo), built once in the cache;
3. the download cache: `<cache root>/models/Fun-CosyVoice3-0.5B-2512` (cache root
   `~/.cache/cosyfast`, or `$COSYFAST_CACHE`);
4. a download of the official files (`MODEL_FILES`) from Hugging Face, then ModelScope;
   (`download_model` fetches any `ModelSpec`: the speech recogniser's comes through here too);
5. when every download fails (offline), the demo checkpoint, with the reason.

Downloads are resumable and atomic: a file grows as `<name>.part` (continued with an HTTP Range
request) and is renamed when complete; the whole folder is `<name>.partial` until every file is
there, then renamed. Endpoints are URL templates with `{repo}` and `{path}`; `$COSYFAST_MODEL_ENDPOINTS`
(comma-separated) replaces the defaults and `$HF_ENDPOINT` moves the Hugging Face base, so tests
point them at a local server. Nothing here imports torch until the demo model is built.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelLoadError

log = logging.getLogger(__name__)

REPO = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
MODEL_NAME = "Fun-CosyVoice3-0.5B-2512"
DEMO_NAME = "cosyfast-demo"
# The files the inference path reads (reference section 1.1); the 1.3 GB ONNX export, the RL
# checkpoint and hub metadata are left out.
MODEL_FILES = (
    "cosyvoice3.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v3.onnx",
    "CosyVoice-BlankEN/config.json",
    "CosyVoice-BlankEN/generation_config.json",
    "CosyVoice-BlankEN/model.safetensors",
    "CosyVoice-BlankEN/tokenizer_config.json",
    "CosyVoice-BlankEN/vocab.json",
    "CosyVoice-BlankEN/merges.txt",
)
HF_TEMPLATE = "{base}/{{repo}}/resolve/main/{{path}}"
MODELSCOPE_TEMPLATE = "https://www.modelscope.cn/models/{repo}/resolve/master/{path}"
CHUNK_BYTES = 1 << 20

ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class ModelSpec:
    """A model on the hubs: its cache folder `name`, the `files` to fetch, its Hugging Face `repo`
    and, where ModelScope names it otherwise, `modelscope_repo`."""

    name: str
    files: tuple[str, ...]
    repo: str
    modelscope_repo: str | None = None

    def repo_for(self, template: str) -> str:
        """The repository id to put into an endpoint template."""
        return self.modelscope_repo if self.modelscope_repo and "modelscope" in template else self.repo


COSYVOICE3 = ModelSpec(MODEL_NAME, MODEL_FILES, REPO)


class DownloadError(ModelLoadError):
    """No endpoint delivered the model files."""


@dataclass
class ResolvedModel:
    """path: the model directory. demo: it is the random demo model (output is not speech).
    source: "given" | "cache" | "download" | "demo". reason: why the demo model is used."""

    path: Path
    demo: bool
    source: str
    reason: str = ""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get("COSYFAST_CACHE") or Path.home() / ".cache" / "cosyfast")


def default_endpoints() -> list[str]:
    if os.environ.get("COSYFAST_MODEL_ENDPOINTS"):
        return [e.strip() for e in os.environ["COSYFAST_MODEL_ENDPOINTS"].split(",") if e.strip()]
    hf_base = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return [HF_TEMPLATE.format(base=hf_base), MODELSCOPE_TEMPLATE]


def is_complete(model_dir: Path, files: tuple[str, ...] = MODEL_FILES) -> bool:
    return all((model_dir / name).is_file() for name in files)


def resolve_model(model_dir: str | Path | None = None, demo: bool = False, cache_dir: str | Path | None = None,
                  progress: ProgressFn | None = None, endpoints: list[str] | None = None,
                  timeout: float = 20.0) -> ResolvedModel:
    """Pick the model directory as described in the module docstring. Raises ModelLoadError for a
    given directory that does not exist."""
    report = progress or (lambda stage, fraction, message="": None)
    if model_dir:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model directory not found: {path}")
        return ResolvedModel(path, False, "given")  # a demo directory says so in model.info()
    models = cache_root(cache_dir) / "models"
    if demo:
        return ResolvedModel(ensure_demo(models / DEMO_NAME, report), True, "demo", "--demo was given")
    cached = models / MODEL_NAME
    if is_complete(cached):
        return ResolvedModel(cached, False, "cache")
    try:
        return ResolvedModel(download_model(cached, endpoints or default_endpoints(), report, timeout), False,
                             "download")
    except DownloadError as exc:
        log.warning("could not download the model (%s); using the demo model: output is not speech", exc)
        return ResolvedModel(ensure_demo(models / DEMO_NAME, report), True, "demo", f"download failed: {exc}")


def download_model(dest: Path, endpoints: list[str], progress: ProgressFn, timeout: float = 20.0,
                   spec: ModelSpec = COSYVOICE3, stage: str = "download") -> Path:
    """Download `spec.files` into `dest`, trying `endpoints` in order; progress is reported as
    `stage`. Partial work is kept in `<dest>.partial` and continued next time."""
    partial = dest.with_name(dest.name + ".partial")
    errors = []
    for template in endpoints:
        try:
            for i, name in enumerate(spec.files):
                url = template.format(repo=spec.repo_for(template), path=name)

                def file_progress(done: int, total: int | None, i=i, name=name):
                    fraction = (i + (done / total if total else 0.0)) / len(spec.files)
                    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
                    progress(stage, fraction, f"{name} {size}")

                download_file(url, partial / name, file_progress, timeout)
        except (OSError, http.client.HTTPException, DownloadError) as exc:  # URLError is an OSError
            log.warning("download from %s failed: %s", template.split("{")[0], exc)
            errors.append(f"{template.split('{')[0]}: {exc}")
            continue
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(partial, dest)
        progress(stage, 1.0, "model downloaded")
        return dest
    raise DownloadError("; ".join(errors) or "no download endpoint configured")


def download_file(url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None,
                  timeout: float = 20.0) -> Path:
    """Fetch `url` to `dest` (skipped when `dest` exists). Continues `<dest>.part` with a Range
    request; a server that ignores the range sends the whole file again."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "cosyfast"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise DownloadError(f"{url}: HTTP {exc.code}") from exc
        response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "cosyfast"}),
                                          timeout=timeout)  # range past the end: start over
        have = 0
    with response:
        if response.status != 206:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done, last_report = have, 0.0
        with open(part, "ab" if have else "wb") as f:
            while block := response.read(CHUNK_BYTES):
                f.write(block)
                done += len(block)
                if progress and time.monotonic() - last_report > 0.25:
                    progress(done, total)
                    last_report = time.monotonic()
    if total is not None and done != total:
        raise DownloadError(f"{url}: got {done} of {total} bytes")
    os.replace(part, dest)
    if progress:
        progress(done, total)
    return dest


def ensure_demo(path: Path, progress: ProgressFn) -> Path:
    """The tiny demo model at `path`, built once."""
    from cosyvoice3.tools.demo import ensure_demo_model

    progress("demo", 0.0, "building the demo model (random weights: output is not speech)")
    out = ensure_demo_model(path)
    progress("demo", 1.0, "demo model ready")
    return out
