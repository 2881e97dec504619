"""Prompt audio -> model features (torch, ONNX Runtime): Kaldi fbank, Whisper log-mel, prompt mel,
the official speaker encoder and speech tokenizer, and the whole preparation of a prompt."""
