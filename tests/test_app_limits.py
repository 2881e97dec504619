"""The limit flags hold end to end: `python app.py` with every limit flag set, then each limit
probed just below, at and just above it through the page API (`gradio_client` calling
`/synthesize` on the real app with the demo model). The page, the supervisor and the worker ask
one `Limits` object, so a value at a limit is spoken and one past it gets that limit's sentence.

The seed's range (`cosyvoice3.modes` MIN_SEED..MAX_SEED) holds the same way on the Gradio API
and the OpenAI API: its last seed is spoken, the next one is refused with the same sentence.

The text limit is set above the default (5,000) on purpose: the worker once kept its own default
and refused what the page and the supervisor had let through. The long texts are mostly spaces
(which the text front end collapses), so the demo model speaks only a few words of them."""

import httpx
import pytest
import soundfile as sf

from cosyvoice3.modes import MAX_SEED
from tests.app_server import running_app
from tests.browser.audio_samples import speechlike
from webui.i18n import t

MAX_TEXT = 6000
MIN_PROMPT_S, MAX_PROMPT_S = 2.0, 6.0
MAX_UPLOAD_BYTES = 1 << 18  # --max-upload-mb 0.25
WAV_HEADER_BYTES = 44  # soundfile's header of a 16-bit PCM wav
PROMPT_RATE = 16000
UPLOAD_RATE = 48000  # the upload probes are 2.7 s at this rate: inside the prompt length limits


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    flags = ["--max-text-chars", str(MAX_TEXT), "--min-prompt-seconds", str(MIN_PROMPT_S),
             "--max-prompt-seconds", str(MAX_PROMPT_S), "--max-upload-mb", "0.25"]
    with running_app(tmp_path_factory.mktemp("limits"), flags) as server:
        yield server


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def wav_of(folder, name: str, samples: int, rate: int) -> str:
    path = folder / f"{name}.wav"
    sf.write(path, speechlike((samples + 1) / rate, rate)[:samples], rate, subtype="PCM_16")
    assert sf.info(path).frames == samples
    return str(path)


def synthesize(client, text: str, prompt: str, seed: int = 0) -> str:
    from gradio_client import handle_file

    return client.predict(text, "zero_shot", handle_file(prompt), "hello there", "", seed, 1.0,
                          api_name="/synthesize")


def text_of(length: int) -> str:
    text = "Hi." + " " * (length - 6) + "Yo."
    assert len(text) == length
    return text


def assert_spoken(path: str) -> None:
    info = sf.info(path)
    assert info.samplerate == 24000 and info.frames > 0


def test_text_limit(client, tmp_path):
    prompt = wav_of(tmp_path, "prompt", 4 * PROMPT_RATE, PROMPT_RATE)
    for length in (MAX_TEXT - 1, MAX_TEXT):
        assert_spoken(synthesize(client, text_of(length), prompt))
    with pytest.raises(Exception, match=f"The text has {MAX_TEXT + 1} characters; the limit is {MAX_TEXT}"):
        synthesize(client, text_of(MAX_TEXT + 1), prompt)


def test_prompt_length_limits(client, tmp_path):
    """One sample under, at and one sample over each prompt length limit."""
    lengths = {}
    for limit in (MIN_PROMPT_S, MAX_PROMPT_S):
        at = int(limit * PROMPT_RATE)
        for name, samples in (("below", at - 1), ("at", at), ("above", at + 1)):
            lengths[(limit, name)] = wav_of(tmp_path, f"{limit:g}-{name}", samples, PROMPT_RATE)
    with pytest.raises(Exception, match="too short"):
        synthesize(client, "Hi.", lengths[(MIN_PROMPT_S, "below")])
    for probe in ((MIN_PROMPT_S, "at"), (MIN_PROMPT_S, "above"), (MAX_PROMPT_S, "below"), (MAX_PROMPT_S, "at")):
        assert_spoken(synthesize(client, "Hi.", lengths[probe]))
    with pytest.raises(Exception, match=f"longer than {MAX_PROMPT_S:.0f} seconds"):
        synthesize(client, "Hi.", lengths[(MAX_PROMPT_S, "above")])


def test_upload_size_limit(app, client, tmp_path):
    """Files of the limit's size less 2 bytes, exactly, and 2 bytes more (one 16-bit sample);
    the client refuses the last one, and so does the server when it is sent anyway."""
    at = (MAX_UPLOAD_BYTES - WAV_HEADER_BYTES) // 2
    files = {name: wav_of(tmp_path, name, samples, UPLOAD_RATE)
             for name, samples in (("below", at - 1), ("at", at), ("above", at + 1))}
    sizes = {name: len(open(path, "rb").read()) for name, path in files.items()}
    assert sizes == {"below": MAX_UPLOAD_BYTES - 2, "at": MAX_UPLOAD_BYTES, "above": MAX_UPLOAD_BYTES + 2}
    for name in ("below", "at"):
        assert_spoken(synthesize(client, "Hi.", files[name]))
    with pytest.raises(Exception, match=f"exceeds the maximum file size of {MAX_UPLOAD_BYTES} bytes"):
        synthesize(client, "Hi.", files["above"])
    for name, status in (("at", 200), ("above", 413)):
        with open(files[name], "rb") as f:
            reply = httpx.post(app.url + "gradio_api/upload", files={"files": (f"{name}.wav", f, "audio/wav")})
        assert reply.status_code == status, reply.text


def test_seed_range_is_the_model_s_on_both_apis(app, client, tmp_path):
    """Seed 2**32 + 1 would sample as seed 1 (the model keys on 32 bits): both APIs refuse it with
    the range; MAX_SEED is spoken."""
    prompt = wav_of(tmp_path, "prompt", 4 * PROMPT_RATE, PROMPT_RATE)
    refusal = f"The seed {2**32 + 1} is not a whole number from 0 to {MAX_SEED}."
    assert_spoken(synthesize(client, "Hi.", prompt, seed=MAX_SEED))
    with pytest.raises(Exception, match=refusal):
        synthesize(client, "Hi.", prompt, seed=2**32 + 1)
    with open(prompt, "rb") as f:
        voice = httpx.post(app.url + "v1/audio/voices", files={"audio_sample": ("a.wav", f, "audio/wav")},
                           data={"name": "Seedy", "consent": "yes", "transcript": "hello there"}, timeout=60)
    assert voice.status_code == 200, voice.text

    def speech(seed: int) -> httpx.Response:
        return httpx.post(app.url + "v1/audio/speech", timeout=120, json={
            "model": "cosyvoice3", "voice": "Seedy", "input": "Hi.", "response_format": "pcm", "seed": seed})

    assert speech(MAX_SEED).status_code == 200
    refused = speech(2**32 + 1)
    assert refused.status_code == 400
    assert refused.json()["error"] == {"message": refusal, "type": "invalid_request_error", "param": "seed",
                                       "code": "bad_input"}


def test_the_page_states_the_prompt_limit_it_was_started_with(app):
    """The real page's config: the keep-the-first button's label says --max-prompt-seconds."""
    config = httpx.get(app.url + "config", timeout=30).json()
    assert config["i18n_translations"]["en"]["cosyfast_keep_first"] == f"Keep the first {MAX_PROMPT_S:g} s"
    assert config["i18n_translations"]["zh"]["cosyfast_keep_first"] == f"保留前 {MAX_PROMPT_S:g} 秒"
    labels = [c["props"].get("value") for c in config["components"] if c.get("type") == "button"]
    assert str(t("keep_first")) in labels
