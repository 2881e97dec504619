"""Dialogue scripts through the page's generate handler, on the real worker (the demo model):
pauses before the first line (they wait for its sample rate) and after the last, the chosen voice
for text before any voice tag, captions naming each line's voice, the page's mode left alone; an
unknown voice refused with its lines before the worker sees anything; Stop cancelling every line
in flight at once."""

import threading
import time

import gradio as gr
import soundfile as sf

from tests.test_captions import read_srt
from tests.test_webui_handlers import (  # noqa: F401 (fixtures)
    EN,
    RUN_ID,
    BROWSER,
    client,
    final_stats,
    handlers,
    output,
    run_generate,
    samples,
)
from webui import messages as M
from webui.handlers import RECORDING
from worker import protocol as P

RATE = 24000


def save_alice(handlers, samples):
    session, *_ = handlers.prompt_changed(str(samples["speech"]), EN)
    handlers.save_voice("Alice", "hello there", None, session, EN)
    return session


def test_pauses_voices_and_captions_of_a_script(handlers, samples):
    session = save_alice(handlers, samples)
    text = "[pause:0.25s]\nHi.\n[voice:Alice] Hello.\n[pause:0.5s]"
    yields = run_generate(handlers, session, text=text, prompt_audio=str(samples["speech"]), prompt_text="hello there")
    assert "RTF" in final_stats(yields)
    assert all(output(update, "mode") == gr.skip() for update in yields)  # each line has its own mode
    files = output(yields[-1], "downloads")["value"]
    wav, rate = sf.read(files[0], dtype="float32")
    assert rate == RATE
    assert not wav[:round(0.25 * RATE)].any() and wav[round(0.25 * RATE)] != 0
    assert not wav[-round(0.5 * RATE):].any()
    cues = read_srt(open(next(f for f in files if f.endswith(".srt")), encoding="utf-8").read())
    assert [body for *_, body in cues] == [f"{RECORDING}: Hi.", "Alice: Hello."]
    assert cues[0][0] == 250 and cues[0][1] == cues[1][0]
    assert cues[1][1] == round((len(wav) - 0.5 * RATE) * 1000 / RATE)


def test_an_unknown_voice_is_refused_with_its_lines_before_any_work(handlers, samples):
    served = handlers.client.health()["served"]
    yields = run_generate(handlers, text="[voice:Nobody] Hi.\n[pause:1s]\n[voice:Nobody] Bye.",
                          prompt_audio=str(samples["speech"]))
    sentence = final_stats(yields)
    assert sentence.startswith("⚠") and "“Nobody” (lines 1, 3)" in sentence
    assert handlers.client.health()["served"] == served and handlers.client.health()["inflight"] == 0
    preview, note = handlers.script_preview("[voice:Nobody] Hi.", "", EN)
    assert preview["visible"] is False and "“Nobody” (line 1)" in note


def test_the_preview_lists_the_lines_with_their_voices_and_modes(handlers, samples):
    save_alice(handlers, samples)
    preview, note = handlers.script_preview("Hi.\n[pause:0.8s]\n[voice:alice] [instruction:Cantonese] Hello.",
                                            "my words", EN)
    assert note == "" and preview["visible"] is True
    assert preview["value"] == [[1, M.notice("script_chosen_voice", M.EN), P.ZERO_SHOT, "Hi."],
                                [2, M.notice("script_pause", M.EN), "", "0.8 s"],
                                [3, "Alice", P.INSTRUCT, "Hello."]]
    assert handlers.script_voices(EN)["choices"] == ["Alice"]


def test_stop_cancels_every_line_in_flight(handlers, samples):
    session = save_alice(handlers, samples)
    text = "\n".join("[voice:Alice] One, two, three, four, five, six, seven, eight." for _ in range(3))
    served, in_flight = handlers.client.health()["served"], []

    def press_stop_once_the_lines_run():
        while len(getattr(handlers._running.get((BROWSER, RUN_ID)), "_runs", ())) < 3:
            time.sleep(0.002)
        in_flight.append(len(handlers._running[(BROWSER, RUN_ID)]._runs))
        handlers.stop(RUN_ID, EN)

    presser = threading.Thread(target=press_stop_once_the_lines_run)
    presser.start()
    yields = run_generate(handlers, session, text=text)
    presser.join(5)
    assert in_flight == [3]  # the three lines were submitted at once
    assert final_stats(yields) == "⚠ " + M.error_sentence(P.CANCELLED, M.EN)
    health = handlers.client.health()
    assert health["inflight"] + health["queue_depth"] == 0 and not handlers._running  # none left in the book
    assert health["served"] == served
