"""The networks, loading the official checkpoints: Qwen2 body, the speech LM, DiT + flow, HiFT,
and the reference's fixed noise."""
