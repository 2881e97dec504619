"""Takes (webui/takes.py): the seeds' rule, and the Gradio API's `/synthesize_takes` on the real app
(`python app.py --demo`, real worker): N wavs with their seeds, each take the audio its seed gives
alone through `/synthesize`."""

import numpy as np
import pytest
import soundfile as sf

from cosyvoice3.errors import BadSeedError
from cosyvoice3.modes import MAX_SEED, MIN_SEED
from tests.app_server import running_app
from tests.browser.audio_samples import speechlike
from webui.takes import MAX_TAKES, check_takes, take_seeds

TEXT = "Hello there. How are you today?"
PCM16_ATOL = 2 / 32768  # two steps of the 16-bit wav the API writes (a batched take: the same tokens)


def test_take_seeds_count_up_from_the_seed():
    assert take_seeds(7, 1) == [7]
    assert take_seeds(7, 3) == [7, 8, 9]


def test_take_seeds_wrap_at_the_end_of_the_range():
    assert take_seeds(MAX_SEED - 1, 4) == [MAX_SEED - 1, MAX_SEED, MIN_SEED, MIN_SEED + 1]
    assert take_seeds(MAX_SEED, 2) == [MAX_SEED, MIN_SEED]


def test_takes_and_seeds_out_of_range_are_refused():
    for n in (0, MAX_TAKES + 1, 1.5, "two", "2", True, None):
        with pytest.raises(ValueError, match="takes must be a whole number from 1 to 4"):
            check_takes(n)
    assert check_takes(2.0) == 2
    with pytest.raises(BadSeedError):
        take_seeds(MAX_SEED + 1, 2)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    with running_app(tmp_path_factory.mktemp("takes")) as server:
        yield Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def prompt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompt") / "prompt.wav"
    sf.write(path, speechlike(4.0, 16000), 16000, subtype="PCM_16")
    return str(path)


def test_synthesize_takes_gives_each_seed_its_own_audio(client, prompt):
    from gradio_client import handle_file

    seed = MAX_SEED - 1  # the third take wraps to MIN_SEED
    files, seeds = client.predict(TEXT, "zero_shot", handle_file(prompt), "hello there", "", seed, 1.0, 3, True,
                                  api_name="/synthesize_takes")
    assert seeds == take_seeds(seed, 3) == [MAX_SEED - 1, MAX_SEED, MIN_SEED]
    takes = [sf.read(path, dtype="float32")[0] for path in files]
    assert len(takes) == 3 and all(len(audio) > 0 for audio in takes)
    for (n, a), b in zip(enumerate(takes), takes[1:]):
        assert len(a) != len(b) or not np.allclose(a, b), f"takes {n + 1} and {n + 2} sound the same"
    for take_seed, audio in zip(seeds, takes):
        alone = client.predict(TEXT, "zero_shot", handle_file(prompt), "hello there", "", take_seed, 1.0, True,
                               api_name="/synthesize")
        expected = sf.read(alone, dtype="float32")[0]
        assert len(audio) == len(expected)
        np.testing.assert_allclose(audio, expected, atol=PCM16_ATOL)


def test_synthesize_takes_refuses_a_count_out_of_range(client, prompt):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="Takes must be a whole number from 1 to 4"):
        client.predict(TEXT, "zero_shot", handle_file(prompt), "hello there", "", 0, 1.0, MAX_TAKES + 1, True,
                       api_name="/synthesize_takes")
