"""The voice library on disk: save, list, load, delete, expiry, persistence, damaged files, owners,
and a writer process frozen and killed at arbitrary points of its saves."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cosyvoice3.frontend.prompt import PreparedPrompt
from tests.conftest import ROOT
from webui.voices import MAX_NAME_CHARS, VoiceLibrary, owner_key, voice_id_for

ME = "user:alice"


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
    info = VoiceLibrary(tmp_path).save(ME, "  Alice   calm ", prompt)
    assert info.name == "Alice calm"
    again = VoiceLibrary(tmp_path)  # a new process sees the same voices
    assert [v.voice_id for v in again.list(ME)] == [info.voice_id]
    loaded_info, loaded = again.load(ME, info.voice_id)
    assert loaded_info.name == "Alice calm" and loaded_info.text == prompt.text
    np.testing.assert_array_equal(loaded.speech_tokens, prompt.speech_tokens)
    np.testing.assert_array_equal(loaded.mel, prompt.mel)
    np.testing.assert_array_equal(loaded.embedding, prompt.embedding)
    assert loaded.text == prompt.text and loaded.duration_s == pytest.approx(prompt.duration_s)


def test_same_name_replaces_and_chinese_names_get_distinct_ids(tmp_path):
    library = VoiceLibrary(tmp_path)
    first = library.save(ME, "小王", make_prompt(seed=1))
    second = library.save(ME, "小王", make_prompt(seed=2))
    other = library.save(ME, "小李", make_prompt(seed=3))
    assert first.voice_id == second.voice_id != other.voice_id
    assert len(library.list(ME)) == 2
    np.testing.assert_array_equal(library.load(ME, first.voice_id)[1].speech_tokens, make_prompt(seed=2).speech_tokens)
    assert voice_id_for("小王") == first.voice_id


def test_list_is_most_recently_used_first_and_load_marks_use(tmp_path):
    clock = Clock()
    library = VoiceLibrary(tmp_path, clock=clock)
    a = library.save(ME, "a", make_prompt())
    clock.now += 10
    b = library.save(ME, "b", make_prompt())
    assert [v.name for v in library.list(ME)] == ["b", "a"]
    clock.now += 10
    library.load(ME, a.voice_id)
    assert [v.name for v in library.list(ME)] == ["a", "b"]
    assert b.voice_id in {v.voice_id for v in library.list(ME)}


def test_unused_voices_expire_and_use_keeps_them(tmp_path):
    clock = Clock()
    library = VoiceLibrary(tmp_path, ttl_s=100.0, clock=clock)
    old = library.save(ME, "old", make_prompt())
    kept = library.save(ME, "kept", make_prompt())
    clock.now += 90
    library.load(ME, kept.voice_id)
    clock.now += 20  # old: unused for 110 s, kept: 20 s
    assert [v.name for v in library.list(ME)] == ["kept"]
    assert not (tmp_path / owner_key(ME) / f"{old.voice_id}.npz").exists()
    with pytest.raises(KeyError):
        library.load(ME, old.voice_id)
    forever = VoiceLibrary(tmp_path, ttl_s=None, clock=clock)
    clock.now += 10**9
    assert [v.name for v in forever.list(ME)] == ["kept"]


def test_delete(tmp_path):
    library = VoiceLibrary(tmp_path)
    info = library.save(ME, "gone", make_prompt())
    assert library.delete(ME, info.voice_id) is True
    assert library.list(ME) == []
    assert list((tmp_path / owner_key(ME)).iterdir()) == []
    assert library.delete(ME, info.voice_id) is False
    assert library.delete(ME, "../../etc/passwd") is False


def test_damaged_voices_are_dropped(tmp_path):
    library = VoiceLibrary(tmp_path)
    good = library.save(ME, "good", make_prompt())
    broken = library.save(ME, "broken", make_prompt())
    folder = tmp_path / owner_key(ME)
    (folder / f"{broken.voice_id}.npz").write_bytes(b"not a zip file")
    (folder / "orphan.npz").write_bytes(b"features without metadata")
    assert [v.name for v in library.list(ME)] == ["good"]
    assert sorted(p.name for p in folder.iterdir()) == [f"{good.voice_id}.npz"]


def test_a_voice_is_one_file_and_no_user_name_is_on_disk(tmp_path):
    VoiceLibrary(tmp_path).save(ME, "mine", make_prompt())
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].endswith(".npz") and "alice" not in files[0]


def test_owners_see_load_and_delete_only_their_own_voices(tmp_path):
    library = VoiceLibrary(tmp_path)
    mine = library.save(ME, "Alice", make_prompt(seed=1))
    theirs = library.save("user:bob", "Alice", make_prompt(seed=2))  # the same name, another owner
    assert mine.voice_id == theirs.voice_id
    assert [v.name for v in library.list("user:bob")] == ["Alice"]
    assert library.list("browser:3f6c1c2e5d0a4a579a438d6c3b1e0f00") == []
    np.testing.assert_array_equal(library.load(ME, mine.voice_id)[1].speech_tokens, make_prompt(seed=1).speech_tokens)
    with pytest.raises(KeyError):
        library.load("user:mallory", mine.voice_id)
    assert library.delete("user:mallory", mine.voice_id) is False
    assert library.delete("user:bob", theirs.voice_id) is True
    assert [v.name for v in library.list(ME)] == ["Alice"]  # bob's delete left alice's voice alone
    with pytest.raises(ValueError):
        library.save("", "nobody", make_prompt())


def test_names_are_checked(tmp_path):
    library = VoiceLibrary(tmp_path)
    with pytest.raises(ValueError):
        library.save(ME, "   ", make_prompt())
    info = library.save(ME, "x" * 200, make_prompt())
    assert len(info.name) == MAX_NAME_CHARS


WRITER = """
import sys
from tests.test_webui_voices import ME, make_prompt
from webui.voices import VoiceLibrary

library = VoiceLibrary(sys.argv[1])
versions = [make_prompt(n_tokens=1500, text=f"version {k}", seed=k) for k in (0, 1)]
library.save(ME, "Voice", versions[0])
print("saved", flush=True)
saves = 1
while True:
    library.save(ME, "Voice", versions[saves % 2])
    saves += 1
    print("saved", flush=True)
"""


def whole_version(root) -> int:
    """Which of the writer's two versions is on disk; fails unless it is one of them, whole."""
    voices = VoiceLibrary(root).list(ME)
    assert [v.name for v in voices] == ["Voice"]
    info, prompt = VoiceLibrary(root).load(ME, voices[0].voice_id)
    version = int(info.text.split()[-1])
    expected = make_prompt(n_tokens=1500, text=f"version {version}", seed=version)
    assert prompt.text == info.text == expected.text
    np.testing.assert_array_equal(prompt.speech_tokens, expected.speech_tokens)
    np.testing.assert_array_equal(prompt.mel, expected.mel)
    return version


def test_a_writer_frozen_or_killed_at_any_point_leaves_one_whole_voice(tmp_path):
    """A real process saves two versions of a voice in turn, as fast as it can; it is frozen
    (SIGSTOP) at whatever point it has reached, hundreds of times, and the disk checked each time;
    then it is killed while frozen. Each check finds one version whole, never a mix.

    Between two freezes the test waits for the writer to report one more finished save (so it
    cannot be frozen again before it ran), then lets it go on for a random part of a save so the
    next freeze lands at an arbitrary point inside the next one."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)

    def freeze() -> None:
        os.kill(writer.pid, signal.SIGSTOP)
        _, status = os.waitpid(writer.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status)

    try:
        assert writer.stdout.readline().strip() == "saved"  # the first save has landed
        seen = []
        rng = random.Random(0)
        for _ in range(300):
            freeze()
            seen.append(whole_version(tmp_path))
            os.kill(writer.pid, signal.SIGCONT)
            assert writer.stdout.readline().strip() == "saved"
            time.sleep(rng.uniform(0, 0.01))  # where inside the next save the freeze lands
        freeze()
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
        seen.append(whole_version(tmp_path))
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
    assert set(seen) == {0, 1}  # the writer moved on between the checks
