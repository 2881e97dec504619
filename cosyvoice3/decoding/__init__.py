"""Turning the networks into a speech-token stream: RAS sampling, the per-request token loop,
the streaming hop schedule."""
