"""The API's request and answer objects, in OpenAI's field names.

`SpeechRequest` is OpenAI's `POST /v1/audio/speech` body plus what CosyVoice3 has and OpenAI
lacks: `seed` (the same seed, text and voice give the same audio; `cosyvoice3.modes`' range,
checked with the page's by `Synthesis.check`), `mode` (zero_shot,
cross_lingual or instruct; by default instruct when `instructions` are given, else zero-shot,
which runs as cross-lingual for a voice without a transcript), `prompt_text` (the words of the
voice's recording, instead of the transcript saved with it) and `text_frontend` (false: the input
is spoken as written, not normalised or cut into sentences), and for `/v1/audio/captioned_speech`
`takes` (that many seeds at once, a list of answers; kept raw here: webui/takes.py's `checked_takes`
owns its range and words its refusal, and speech.py refuses it on the streaming route and with a
script). Unknown fields are ignored, as OpenAI's own clients may send newer ones. `model` is
accepted whatever it names: there is one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cosyvoice3.modes import MAX_SEED, MIN_SEED

from ..takes import MAX_TAKES, MIN_TAKES
from ..voices import VoiceInfo
from .audio import FORMATS

MODEL_ID = "cosyvoice3"
MODEL_CREATED = 1764547200  # 2025-12-01, the release of Fun-CosyVoice3-0.5B-2512


class VoiceRef(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = MODEL_ID
    input: str
    voice: str | VoiceRef
    response_format: Literal[FORMATS] = "mp3"
    speed: float = 1.0
    instructions: str = ""
    stream_format: Literal["audio", "sse"] = "audio"
    seed: int = Field(default=0, description=f"{MIN_SEED} .. {MAX_SEED}")
    mode: Literal["zero_shot", "cross_lingual", "instruct"] | None = None
    prompt_text: str | None = None
    text_frontend: bool = True
    takes: Any = Field(default=None, description=f"{MIN_TAKES} .. {MAX_TAKES}, captioned_speech only; "
                                                 "absent or null: one answer, not a list")

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


def voice_object(info: VoiceInfo) -> dict:
    """A saved voice as the API shows it (OpenAI's voice object plus its transcript)."""
    return {"id": info.voice_id, "object": "audio.voice", "type": "audio_sample", "name": info.name,
            "transcript": info.text, "created_at": int(info.created)}


def model_list() -> dict:
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": MODEL_CREATED,
                                        "owned_by": "cosyfast"}]}
