"""Finding the model directory: given, cached, downloaded, or the demo model.

Order (`resolve_model`):
1. `model_dir` when given (it must exist);
2. with `demo=True`, the demo checkpoint (cosyvoice3.tools.demo), built once in the cache;
3. the download cache: `<cache root>/models/Fun-CosyVoice3-0.5B-2512` (cache root
   `~/.cache/cosyfast`, or `$COSYFAST_CACHE`);
4. a download of the official files (`MODEL_FILES`) from Hugging Face, then ModelScope;
   (`download_model` fetches any `ModelSpec`: the speech recogniser's comes through here too);
5. when every download fails (offline), the demo checkpoint, with the reason.

The transfers are huggingface_hub's: from Hugging Face `hf_hub_download` into the folder (the
hub's ETag and commit checked; a cut transfer is continued with a Range request, in the same run
and in the next one: the unfinished file waits under `<folder>/.cache/huggingface/download/`);
from ModelScope (or any URL template) its `http_get`, continuing `<name>.part`. The folder is
`<name>.partial` until every file is there, then renamed into place (`files.replace_with`).
Workers of one app that start together download it once: one does, holding the lock beside the
folder (`files.exclusive`), the others wait and find it there (the demo model is built the same
way, `tools.once`).
An endpoint is a Hugging Face hub's base URL (no braces: `$HF_ENDPOINT`, default the library's)
or a URL template with `{repo}` and `{path}`; `$COSYFAST_MODEL_ENDPOINTS` (comma-separated)
replaces the defaults, so tests point them at a local server. Nothing here imports torch until
the demo model is built.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx2
from huggingface_hub import constants, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import get_session
from tqdm.std import tqdm

from .errors import ModelLoadError
from .files import exclusive, lock_beside, replace_with

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
MODELSCOPE_TEMPLATE = "https://www.modelscope.cn/models/{repo}/resolve/master/{path}"
HUB_CACHE = ".cache"  # what hf_hub_download keeps in a folder it downloads into (metadata, unfinished files)
REPORT_EVERY_S = 0.25
# What a failed transfer raises: OSError covers the hub's HTTP errors and a missing entry.
TRANSFER_ERRORS = (OSError, ValueError, httpx2.HTTPError)

ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class ModelSpec:
    """A model on the hubs: its cache folder `name`, the `files` to fetch, its Hugging Face `repo`
    and, where ModelScope names it otherwise, `modelscope_repo`."""

    name: str
    files: tuple[str, ...]
    repo: str
    modelscope_repo: str | None = None

    def repo_for(self, endpoint: str) -> str:
        """The repository id to ask `endpoint` for."""
        return self.modelscope_repo if self.modelscope_repo and "modelscope" in endpoint else self.repo


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
    return [(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"), MODELSCOPE_TEMPLATE]


def is_hub(endpoint: str) -> bool:
    """A Hugging Face hub's base URL (not a URL template)."""
    return "{" not in endpoint


def file_url(endpoint: str, repo: str, name: str) -> str:
    return hf_hub_url(repo, name, endpoint=endpoint) if is_hub(endpoint) else endpoint.format(repo=repo, path=name)


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
    `stage`. Partial work is kept in `<dest>.partial` and continued next time. timeout: seconds
    for the hub's metadata answer. One process downloads, holding the lock beside `dest`; one that
    waited for it finds the model there."""
    with exclusive(lock_beside(dest)):
        if is_complete(dest, spec.files):
            return dest
        return _download(dest, endpoints, progress, timeout, spec, stage)


def _download(dest: Path, endpoints: list[str], progress: ProgressFn, timeout: float, spec: ModelSpec,
              stage: str) -> Path:
    partial = dest.with_name(dest.name + ".partial")
    errors = []
    for endpoint in endpoints:
        where = endpoint.split("{")[0]
        repo = spec.repo_for(endpoint)
        missing = [(i, name) for i, name in enumerate(spec.files) if not (partial / name).is_file()]
        try:
            if missing:
                _answers(file_url(endpoint, repo, missing[0][1]), timeout)
            for i, name in missing:
                bar = _progress_bar(progress, stage, (i, len(spec.files)), name)
                if is_hub(endpoint):
                    hf_hub_download(repo, name, local_dir=partial, endpoint=endpoint, etag_timeout=timeout,
                                    tqdm_class=bar)
                else:
                    fetch_url(file_url(endpoint, repo, name), partial / name, bar)
        except TRANSFER_ERRORS as exc:
            log.warning("download from %s failed: %s", where, exc)
            errors.append(f"{where}: {exc}")
            continue
        shutil.rmtree(partial / HUB_CACHE, ignore_errors=True)
        replace_with(partial, dest)
        progress(stage, 1.0, "model downloaded")
        return dest
    raise DownloadError("; ".join(errors) or "no download endpoint configured")


def _answers(url: str, timeout: float) -> None:
    """Raise the transport error when `url`'s server does not answer at all (offline): once, where
    the library's transfers would retry for half a minute before the next endpoint is tried."""
    get_session().head(url, timeout=timeout, follow_redirects=False)


def fetch_url(url: str, dest: Path, bar: type[tqdm] | None = None) -> Path:
    """Fetch `url` to `dest`, continuing `<dest>.part` with a Range request (a server that ignores
    the range sends the whole file again; one that finds nothing past the part's end: started over)."""
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        with open(part, "ab") as f:
            try:
                http_get(url, f, resume_size=f.tell(), headers={"User-Agent": "cosyfast"}, tqdm_class=bar)
                break
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code != 416 or not f.tell():
                    raise
            f.truncate(0)
    replace_with(part, dest)
    return dest


def _progress_bar(progress: ProgressFn, stage: str, position: tuple[int, int], name: str) -> type[tqdm]:
    """A tqdm class (what huggingface_hub reports bytes to) that reports one file's bytes as
    `progress(stage, fraction of all files, "name done/total MB")`, at most every REPORT_EVERY_S."""
    index, count = position

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": True})
            self.done, self.size, self.last = kwargs.get("initial") or 0, kwargs.get("total"), 0.0

        def update(self, n=1):
            self.done += n or 0
            now = time.monotonic()
            if now - self.last >= REPORT_EVERY_S or (self.size and self.done >= self.size):
                self.last = now
                fraction = (index + (self.done / self.size if self.size else 0.0)) / count
                size = f"{self.done / 1e6:.1f}/{self.size / 1e6:.1f} MB" if self.size else f"{self.done / 1e6:.1f} MB"
                progress(stage, min(fraction, 1.0), f"{name} {size}")

    return Bar


def ensure_demo(path: Path, progress: ProgressFn) -> Path:
    """The tiny demo model at `path`, built once."""
    from cosyvoice3.tools.demo import ensure_demo_model

    progress("demo", 0.0, "building the demo model (random weights: output is not speech)")
    out = ensure_demo_model(path)
    progress("demo", 1.0, "demo model ready")
    return out
