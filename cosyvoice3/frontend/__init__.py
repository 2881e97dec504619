"""What the web process may import without torch: audio decoding, text normalisation and
splitting, the tokenizer, instruction presets, the LLM text of each mode, the prepared prompt."""
