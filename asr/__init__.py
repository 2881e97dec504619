"""SenseVoice-Small, the speech recogniser that transcribes voice prompts, in plain PyTorch.

It reads the released model directory (FunAudioLLM/SenseVoiceSmall on Hugging Face,
iic/SenseVoiceSmall on ModelScope) unchanged: `config.yaml`, `model.pt` (`torch.load` with
`weights_only=True`, strict key and shape check), `am.mvn` (CMVN) and the sentencepiece model
`chn_jpn_yue_eng_ko_spectok.bpe.model`. The same code reads the tiny random recogniser the
project builds for tests (`python -m asr.demo DIR`).

| module | owns |
|---|---|
| `config.py` | reading `config.yaml` into `SenseVoiceConfig`; the released file names |
| `features.py` | 16 kHz audio -> Kaldi fbank (Hamming) -> LFR (7 frames, stride 6) -> CMVN (`am.mvn`) |
| `encoder.py` | the SAN-M encoder and the CTC head, with the key names of `model.pt` |
| `decoding.py` | CTC greedy decoding, the sentencepiece tokenizer, the rich-text tags (language, emotion, event) |
| `recognizer.py` | `Recognizer.from_pretrained(dir)`, `recognize(wav_16k) -> Transcription` |
| `prompt.py` | transcribing a voice prompt: the prompt checks of synthesis, resampling, then `recognize` |
| `files.py` | where the recogniser comes from: given, cached, downloaded, or the demo one |
| `demo.py` | the tiny random recogniser in the released layout (`python -m asr.demo DIR`) |

It runs in the worker process only (torch), below worker/ and engines/ in the import order, beside
cosyvoice3/: it uses the model package's shared helpers (files, checkpoint, download, errors, the
fbank, the prompt checks) and imports nothing of engines/, worker/ or webui/.
"""
