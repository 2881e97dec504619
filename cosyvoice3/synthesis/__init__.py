"""Serving many requests on one model: the request and its audio chunks, the state of a request in
progress, and the engine that advances many of them together (batched LLM steps, flow and vocoder).
"""
