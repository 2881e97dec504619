"""The wire messages: picklable, torch-free, and a closed set of error codes."""

import pickle
import subprocess
import sys

import numpy as np

import cosyvoice3.errors as errors
from cosyvoice3.spec import SpeechSpec
from worker import protocol as p


def test_every_message_survives_pickling_with_its_arrays():
    pcm = np.linspace(-1, 1, 480, dtype=np.float32)
    messages = [
        p.Synthesize("r1", SpeechSpec("Hello.", seed=7), prompt_audio=pcm, prompt_sample_rate=24000, start_segment=2,
                     skip_chunks=1, first_seq=5, attempt=1, fault={"kind": "crash", "step": 3}),
        p.PreparePrompt("r2", pcm, 16000, "text"), p.Cancel("r1"), p.Shutdown("test"),
        p.Ready(12, {"device": "cpu", "backends": {"llm": {"backend": "torch"}}}), p.BootFailed(12, "no dir"),
        p.Progress("", "loading", 0.5, "llm.pt"), p.Chunk("r1", 3, pcm, 24000, 1, 2, True),
        p.Done("r1", {"rtf": 0.5}), p.Failed("r1", p.OOM, "out of memory", retryable=True),
        p.Failed.of("r3", errors.PromptTooShortError("too short", seconds=0.4, min_seconds=1.0)),
        p.Heartbeat(busy=("r1",), steps=9, rss=1 << 20, pid=12), p.Poisoned(12, "oom", "twice"),
        p.WorkerConfig(model_dir="/m", faults=True),
    ]
    for msg in messages:
        back = pickle.loads(pickle.dumps(msg))
        assert type(back) is type(msg)
        for name, value in vars(msg).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(getattr(back, name), value) and getattr(back, name).dtype == value.dtype
            else:
                assert getattr(back, name) == value


def test_error_codes_of_the_model_package_are_protocol_codes():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.CosyVoiceError)]
    assert len(classes) > 5
    assert {c.code for c in classes} <= set(p.ERROR_CODES)
    assert len(set(p.ERROR_CODES)) == len(p.ERROR_CODES) == 9


def test_protocol_and_app_side_worker_modules_do_not_import_torch():
    code = ("import sys, worker.protocol, worker.supervisor, worker.client, cosyvoice3.download; "
            "print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == "[]"


def test_a_refusal_carries_its_reason_and_numbers():
    failed = p.Failed.of("r1", errors.PromptTooLongError("the prompt audio is 35.0 s", seconds=35.0, max_seconds=30.0))
    assert (failed.code, failed.reason, failed.params) == (p.TOO_LONG, "prompt_too_long", {"seconds": 35.0,
                                                                                             "max_seconds": 30.0})
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.BadInputError)]
    prompt = [c for c in classes if c.__name__.startswith(("Prompt", "Silent", "AudioDecode"))]
    assert len({c.reason for c in prompt}) == len(prompt) == 4  # each prompt problem its own reason
