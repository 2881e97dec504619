"""Reproduce a reference set made by the official implementation and report the errors.

    python -m cosyvoice3.golden DIR [--device cpu] [--stage NAME ...]

DIR has the layout of `shared/golden/`: `model/` (a checkpoint in the official layout) and any of
`tokenizer_cases.json`, `text_normalize.json`, `frontend.npz` (+ `prompt_24k.wav`), `llm.npz`, `dit_estimator.npz`,
`flow.npz`, `hift.npz`, `e2e.npz` (+ `prompt_24k.wav`). Every output is computed from the model
folder and the stored inputs (nothing is read from the stored outputs except to compare). One JSON
line per stage gives the max absolute and relative error of each array and whether it is within
tolerance (for `text_normalize`: each case's normalised text, `got` and `want`, exact equality); the exit code is 1 when any stage is outside tolerance, 2 when nothing could be run.

Randomness is removed as the reference set was made: greedy decoding with the official min-length
rule (`min_len_rule="official"`), and the official fixed noise buffers.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cosyvoice3.config import QWEN_DIR, load_config
from cosyvoice3.decoding.token_batch import SegmentRules, SegmentSpec, decode_alone
from cosyvoice3.features.prepare import align_prompt, compute_features
from cosyvoice3.frontend.audio import load_audio
from cosyvoice3.frontend.text_normalize import TextNormalizer
from cosyvoice3.frontend.tokenizer import TextTokenizer
from cosyvoice3.nn.dit import attention_mask
from cosyvoice3.nn.flow import load_flow
from cosyvoice3.nn.hift import load_hift
from cosyvoice3.nn.llm import load_llm
from cosyvoice3.nn.noise import FixedNoise

# Tolerances of the golden README, section 6: (kind, value) with kind "abs", "rel" or "exact".
TOLERANCES = {
    "ids": ("exact", 0), "logits": ("abs", 1e-4), "hidden": ("abs", 1e-4), "dit": ("abs", 1e-4),
    "mel": ("abs", 1e-4), "f0": ("rel", 1e-4), "audio": ("abs", 1e-3), "fbank": ("abs", 1e-3),
    "logmel": ("abs", 1e-4), "wav": ("abs", 1e-5), "noise": ("exact", 0),
}


class Stage:
    """Collects the comparisons of one stage."""

    def __init__(self, name: str):
        self.name = name
        self.rows: dict[str, dict] = {}

    def compare(self, key: str, ours, ref, kind: str) -> None:
        ours = _np(ours)
        ref = np.asarray(ref)
        mode, tol = TOLERANCES[kind]
        if ours.shape != ref.shape:
            self.rows[key] = {"ok": False, "error": f"shape {list(ours.shape)} vs reference {list(ref.shape)}"}
            return
        diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = np.abs(ref.astype(np.float64))
        max_rel = float((diff / np.maximum(scale, 1e-12)).max()) if diff.size else 0.0
        if mode == "exact":
            ok = max_abs == 0.0
        elif mode == "abs":
            ok = max_abs <= tol
        else:  # rel: relative to each value, with an absolute floor for values near zero
            ok = bool(np.all(diff <= tol * scale + 1e-6))
        self.rows[key] = {"ok": ok, "max_abs": max_abs, "max_rel": max_rel, "tolerance": f"{mode} {tol:g}"}

    def compare_text(self, key: str, ours: str, ref: str) -> None:
        self.rows[key] = {"ok": ours == ref, "got": ours, "want": ref}

    def result(self) -> dict:
        ok = all(r["ok"] for r in self.rows.values()) and bool(self.rows)
        if all("got" in r for r in self.rows.values()):  # text comparisons: no errors to report
            return {"stage": self.name, "ok": ok, "arrays": self.rows}
        worst_abs = max((r.get("max_abs", float("inf")) for r in self.rows.values()), default=0.0)
        worst_rel = max((r.get("max_rel", float("inf")) for r in self.rows.values()), default=0.0)
        return {"stage": self.name, "ok": ok, "max_abs": worst_abs, "max_rel": worst_rel, "arrays": self.rows}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


class Checker:
    def __init__(self, root: Path, device: str = "cpu"):
        self.root = Path(root)
        self.model_dir = self.root / "model"
        self.device = torch.device(device)
        if self.device.type == "cuda":  # the reference is plain FP32: no TF32 in matmuls or convolutions
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.config = load_config(self.model_dir)
        self._cache: dict = {}

    # lazily loaded parts, so a stage only loads what it needs
    def _get(self, name: str, make: Callable):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def tokenizer(self) -> TextTokenizer:
        return self._get("tok", lambda: TextTokenizer.from_dir(self.model_dir / QWEN_DIR))

    @property
    def llm(self):
        return self._get("llm", lambda: load_llm(self.model_dir / "llm.pt", self.config.llm, self.config.qwen,
                                                  self.device))

    @property
    def flow(self):
        return self._get("flow", lambda: load_flow(self.model_dir / "flow.pt", self.config.flow, self.device))

    @property
    def noise(self) -> FixedNoise:
        return self._get("noise", lambda: FixedNoise(self.config))

    @property
    def hift(self):
        return self._get("hift", lambda: load_hift(self.model_dir / "hift.pt", self.config.hift, self.device,
                                                    noise=self.noise))

    def t(self, array, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device, dtype)

    # ------------------------------------------------------------------ stages

    def stage_tokenizer(self, cases: list[dict]) -> Stage:
        st = Stage("tokenizer")
        for i, case in enumerate(cases):
            ids = self.tokenizer.encode(case["text"])
            st.compare(f"case{i}", np.asarray(ids), np.asarray(case["ids"]), "ids")
        return st

    def stage_text_normalize(self, cases: list[dict]) -> Stage:
        st = Stage("text_normalize")
        normalizer = TextNormalizer()
        for i, case in enumerate(cases):
            st.compare_text(f"case{i}", normalizer.normalize(case["text"]), case["normalized"])
        return st

    def stage_frontend(self, ref: dict) -> Stage:
        st = Stage("frontend")
        wav, sr = load_audio(self.root / "prompt_24k.wav")
        feats = compute_features(wav, sr, self.config.mel)
        st.compare("wav_24k", feats.wav_24k[None], ref["wav_24k"], "wav")
        st.compare("wav_16k", feats.wav_16k[None], ref["wav_16k"], "wav")
        st.compare("campplus_fbank", feats.campplus_fbank[None], ref["campplus_fbank"], "fbank")
        st.compare("whisper_logmel", feats.whisper_logmel[None], ref["whisper_logmel"], "logmel")
        st.compare("whisper_logmel_len", np.array([feats.whisper_logmel.shape[1]]), ref["whisper_logmel_len"], "ids")
        st.compare("prompt_feat", feats.prompt_feat[None], ref["prompt_feat"], "logmel")
        st.compare("prompt_feat_len", np.array([feats.prompt_feat.shape[0]]), ref["prompt_feat_len"], "ids")
        return st

    def _greedy(self, text, prompt_text, prompt_speech) -> tuple[SegmentRules, list]:
        spec = SegmentSpec([int(t) for t in prompt_text], [int(t) for t in text], [int(t) for t in prompt_speech],
                           greedy=True, min_len_rule="official")
        return decode_alone(self.llm, self.config.llm, spec, trace=True)

    @torch.no_grad()
    def stage_llm(self, ref: dict) -> Stage:
        st = Stage("llm")
        text, prompt_text, speech = ref["text"][0], ref["prompt_text"][0], ref["prompt_speech_token"][0]
        st.compare("lm_input", self.llm.first_step_input(prompt_text, text, speech), ref["lm_input"], "hidden")
        dec, trace = self._greedy(text, prompt_text, speech)
        logits0 = trace[0].logits.float()
        st.compare("first_step_hidden", trace[0].hidden[None], ref["first_step_hidden"], "hidden")
        st.compare("first_step_logits", logits0, ref["first_step_logits"], "logits")
        st.compare("first_step_logp", logits0.log_softmax(-1), ref["first_step_logp"], "logits")
        if len(trace) > 1:
            st.compare("step2_logits", trace[1].logits, ref["step2_logits"], "logits")
        n = min(len(trace), len(ref["step_hidden"]))
        st.compare("step_hidden", torch.stack([s.hidden for s in trace[:n]]), ref["step_hidden"][:n], "hidden")
        top = torch.stack([s.logits.float().log_softmax(-1) for s in trace[:n]]).topk(10, dim=-1)
        st.compare("step_top10_ids", top.indices.int(), ref["step_top10_ids"][:n], "ids")
        st.compare("step_top10_logp", top.values, ref["step_top10_logp"][:n], "logits")
        st.compare("out_tokens", np.asarray(dec.tokens, np.int32), ref["out_tokens"], "ids")
        st.compare("n_steps", np.asarray(len(trace)), ref["n_steps"], "ids")
        st.compare("min_len", np.asarray(dec.min_len), ref["min_len"], "ids")
        st.compare("max_len", np.asarray(dec.max_len), ref["max_len"], "ids")
        return st

    @torch.no_grad()
    def stage_dit(self, ref: dict) -> Stage:
        st = Stage("dit_estimator")
        est = self.flow.estimator
        x, mask, mu, t, spks, cond = (self.t(ref[k]) for k in ("x", "mask", "mu", "t", "spks", "cond"))
        st.compare("out", est(x, mask, mu, t, spks, cond), ref["out"], "dit")
        chunk = int(ref["static_chunk_size"]) if "static_chunk_size" in ref else self.config.flow.dit.static_chunk_size
        am = attention_mask(mask, streaming=True, chunk_frames=chunk)
        st.compare("out_streaming", est(x, mask, mu, t, spks, cond, attn_mask=am), ref["out_streaming"], "dit")
        return st

    @torch.no_grad()
    def stage_flow(self, ref: dict) -> Stage:
        st = Stage("flow")
        args = (self.t(ref["token"], torch.long), self.t(ref["prompt_token"], torch.long), self.t(ref["prompt_feat"]),
                self.t(ref["embedding"]))
        trace: dict = {}
        mel = self.flow.inference(*args, streaming=False, finalize=True, noise_source=self.noise, trace=trace)
        for key, kind in (("noise", "mel"), ("mu", "mel"), ("cond", "mel"), ("spks_proj", "mel"), ("euler_t", "mel"),
                          ("euler_x", "mel"), ("euler_dphi_cfg_in", "mel")):
            if key in ref and key in trace:
                ours = trace[key]
                st.compare(key, ours.reshape(ref[key].shape) if ours.numel() == ref[key].size else ours, ref[key], kind)
        st.compare("mel", mel, ref["mel"], "mel")
        mel_s = self.flow.inference(*args, streaming=True, finalize=True, noise_source=self.noise)
        st.compare("mel_streaming_dit", mel_s, ref["mel_streaming_dit"], "mel")
        return st

    @torch.no_grad()
    def stage_hift(self, ref: dict) -> Stage:
        st = Stage("hift")
        mel = self.t(ref["mel"])
        st.compare("f0", self.hift.predict_f0(mel, finalize=True), ref["f0"], "f0")
        speech, source = self.hift.inference(mel, finalize=True)
        st.compare("speech", speech, ref["speech"], "audio")
        st.compare("source", source, ref["source"], "audio")
        speech_ff, source_ff = self.hift.inference(mel, finalize=False)
        st.compare("speech_finalize_false", speech_ff, ref["speech_finalize_false"], "audio")
        st.compare("source_finalize_false", source_ff, ref["source_finalize_false"], "audio")
        st.compare("rand_ini", self.noise.rand_ini, ref["rand_ini"], "noise")
        n = ref["sine_noise"].shape[1]
        st.compare("sine_noise", self.noise.sine_noise(n, "cpu"), ref["sine_noise"], "noise")
        return st

    @torch.no_grad()
    def stage_e2e(self, ref: dict) -> Stage:
        """Zero-shot, non-streaming, from the prompt wav + stand-in ONNX outputs stored in the set."""
        st = Stage("e2e")
        wav, sr = load_audio(self.root / "prompt_24k.wav")
        feats = compute_features(wav, sr, self.config.mel)
        tokens, prompt_mel = align_prompt(ref["prompt_speech_token_raw"][0], feats.prompt_feat)
        st.compare("llm_prompt_speech_token", tokens[None], ref["llm_prompt_speech_token"], "ids")
        st.compare("flow_prompt_speech_token", tokens[None], ref["flow_prompt_speech_token"], "ids")
        st.compare("prompt_speech_feat", prompt_mel[None], ref["prompt_speech_feat"], "logmel")
        dec, _ = self._greedy(ref["text"][0], ref["prompt_text"][0], tokens)
        st.compare("min_len", np.asarray(dec.min_len), ref["min_len"], "ids")
        st.compare("max_len", np.asarray(dec.max_len), ref["max_len"], "ids")
        st.compare("speech_tokens", np.asarray(_llm_tokens(dec), np.int32), ref["speech_tokens"], "ids")
        flow_token = np.asarray(dec.tokens, np.int32)[None]
        st.compare("flow_token", flow_token, ref["flow_token"], "ids")
        embedding = self.t(ref["flow_embedding"])
        mel = self.flow.inference(self.t(flow_token, torch.long), self.t(tokens[None], torch.long),
                                  self.t(prompt_mel[None]), embedding, streaming=False, finalize=True,
                                  noise_source=self.noise)
        st.compare("mel", mel, ref["mel"], "mel")
        st.compare("f0", self.hift.predict_f0(mel, finalize=True), ref["f0"], "f0")
        speech, _ = self.hift.inference(mel, finalize=True)
        st.compare("tts_speech", speech, ref["tts_speech"], "audio")
        return st


def _llm_tokens(dec: SegmentRules) -> list[int]:
    """Tokens the LLM produced (before silence trimming), without the stop token."""
    return [t for t in dec.generated if t < dec.speech_token_size]


STAGES = {  # stage name -> (file, method)
    "tokenizer": ("tokenizer_cases.json", "stage_tokenizer"),
    "text_normalize": ("text_normalize.json", "stage_text_normalize"),
    "frontend": ("frontend.npz", "stage_frontend"),
    "llm": ("llm.npz", "stage_llm"),
    "dit_estimator": ("dit_estimator.npz", "stage_dit"),
    "flow": ("flow.npz", "stage_flow"),
    "hift": ("hift.npz", "stage_hift"),
    "e2e": ("e2e.npz", "stage_e2e"),
}


def run(root: Path, device: str = "cpu", only: list[str] | None = None, out=sys.stdout) -> int:
    root = Path(root)
    torch.set_grad_enabled(False)
    checker = Checker(root, device)
    ran, failed = 0, 0
    for name, (file, method) in STAGES.items():
        if only and name not in only:
            continue
        path = root / file
        if not path.is_file():
            continue
        ran += 1
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                with np.load(path) as npz:
                    data = {k: npz[k] for k in npz.files}
            result = getattr(checker, method)(data).result()
        except Exception as e:  # a stage that cannot run is a failed stage, with its reason
            result = {"stage": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                      "trace": traceback.format_exc(limit=3)}
        failed += not result["ok"]
        print(json.dumps(result), file=out, flush=True)
    if ran == 0:
        print(json.dumps({"error": f"no reference files found in {root}"}), file=out)
        return 2
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosyvoice3.golden", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="reference set directory (model/ + *.npz)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--stage", action="append", choices=list(STAGES), help="run only these stages")
    args = p.parse_args(argv)
    return run(Path(args.root), args.device, args.stage)


if __name__ == "__main__":
    sys.exit(main())
