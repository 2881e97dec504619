"""The voice library on disk: save, list, load, delete, expiry, persistence, damaged files."""

import numpy as np
import pytest

from cosyvoice3.frontend.prompt import PreparedPrompt
from webui.voices import MAX_NAME_CHARS, VoiceLibrary, voice_id_for


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_prompt(n_tokens=12, text="hello", seed=0) -> PreparedPrompt:
    rng = np.random.default_rng(seed)
    return PreparedPrompt(speech_tokens=rng.integers(0, 6561, n_tokens), embedding=rng.standard_normal(192),
                          mel=rng.standard_normal((2 * n_tokens, 80)), text=text, duration_s=n_tokens / 25)


def test_save_load_round_trip_and_persistence(tmp_path):
    prompt = make_prompt(text="希望你以后能够做的比我还好呦。")
    info = VoiceLibrary(tmp_path).save("  Alice   calm ", prompt)
    assert info.name == "Alice calm"
    again = VoiceLibrary(tmp_path)  # a new process sees the same voices
    assert [v.voice_id for v in again.list()] == [info.voice_id]
    loaded_info, loaded = again.load(info.voice_id)
    assert loaded_info.name == "Alice calm" and loaded_info.text == prompt.text
    np.testing.assert_array_equal(loaded.speech_tokens, prompt.speech_tokens)
    np.testing.assert_array_equal(loaded.mel, prompt.mel)
    np.testing.assert_array_equal(loaded.embedding, prompt.embedding)
    assert loaded.text == prompt.text and loaded.duration_s == pytest.approx(prompt.duration_s)


def test_same_name_replaces_and_chinese_names_get_distinct_ids(tmp_path):
    library = VoiceLibrary(tmp_path)
    first = library.save("小王", make_prompt(seed=1))
    second = library.save("小王", make_prompt(seed=2))
    other = library.save("小李", make_prompt(seed=3))
    assert first.voice_id == second.voice_id != other.voice_id
    assert len(library.list()) == 2
    np.testing.assert_array_equal(library.load(first.voice_id)[1].speech_tokens, make_prompt(seed=2).speech_tokens)
    assert voice_id_for("小王") == first.voice_id


def test_list_is_most_recently_used_first_and_load_marks_use(tmp_path):
    clock = Clock()
    library = VoiceLibrary(tmp_path, clock=clock)
    a = library.save("a", make_prompt())
    clock.now += 10
    b = library.save("b", make_prompt())
    assert [v.name for v in library.list()] == ["b", "a"]
    clock.now += 10
    library.load(a.voice_id)
    assert [v.name for v in library.list()] == ["a", "b"]
    assert b.voice_id in {v.voice_id for v in library.list()}


def test_unused_voices_expire_and_use_keeps_them(tmp_path):
    clock = Clock()
    library = VoiceLibrary(tmp_path, ttl_s=100.0, clock=clock)
    old = library.save("old", make_prompt())
    kept = library.save("kept", make_prompt())
    clock.now += 90
    library.load(kept.voice_id)
    clock.now += 20  # old: unused for 110 s, kept: 20 s
    assert [v.name for v in library.list()] == ["kept"]
    assert not (tmp_path / f"{old.voice_id}.npz").exists()
    with pytest.raises(KeyError):
        library.load(old.voice_id)
    forever = VoiceLibrary(tmp_path, ttl_s=None, clock=clock)
    clock.now += 10**9
    assert [v.name for v in forever.list()] == ["kept"]


def test_delete(tmp_path):
    library = VoiceLibrary(tmp_path)
    info = library.save("gone", make_prompt())
    assert library.delete(info.voice_id) is True
    assert library.list() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert library.delete(info.voice_id) is False
    assert library.delete("../../etc/passwd") is False


def test_damaged_or_half_written_voices_are_dropped(tmp_path):
    library = VoiceLibrary(tmp_path)
    good = library.save("good", make_prompt())
    broken = library.save("broken", make_prompt())
    (tmp_path / f"{broken.voice_id}.json").write_text("{not json")
    (tmp_path / "orphan.npz").write_bytes(b"features without metadata")
    assert [v.name for v in library.list()] == ["good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{good.voice_id}.json", f"{good.voice_id}.npz"])


def test_names_are_checked(tmp_path):
    library = VoiceLibrary(tmp_path)
    with pytest.raises(ValueError):
        library.save("   ", make_prompt())
    info = library.save("x" * 200, make_prompt())
    assert len(info.name) == MAX_NAME_CHARS
