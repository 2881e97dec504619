"""The store of the LLM's prompt prefixes: its byte bound and least-recently-used order; a worker
reports it. (That a join continuing a stored prefix gives the tokens and first-token logits of a
full prefill is in `test_token_batch.py`.)"""

import numpy as np
import torch

from cosyvoice3.decoding.prefix_store import Prefix, PrefixStore


def test_the_store_keeps_its_byte_bound_least_recently_used_first():
    def prefix(n):  # 2 layers, 1 kv head, n positions, head dim 4, float32: 64 n bytes
        return Prefix(torch.zeros(2, 1, n, 4), torch.zeros(2, 1, n, 4))

    store = PrefixStore(64 * 10)
    assert store.put([1], prefix(4)) and store.put([2], prefix(4))
    assert store.get([1]) is not None  # [2] is now the least recently used
    assert store.put([3], prefix(3))  # 704 bytes: [2] goes
    assert store.get([2]) is None and store.get([1]) is not None and store.get([3]) is not None
    assert not store.put([4], prefix(11))  # larger than the whole budget: refused, nothing evicted
    assert len(store) == 2 and store.used == 64 * 7
    report = store.report()
    assert (report["hits"], report["misses"], report["evictions"], report["prompts"]) == (3, 1, 1, 2)
    assert report["hit_rate"] == 0.75
    assert not PrefixStore(0).enabled


def test_a_workers_health_reports_its_prompt_prefixes(start_worker, synthesize):
    from tests.conftest import next_heartbeats
    from worker.protocol import Done

    supervisor, client = start_worker()
    first = synthesize(client, forced_tokens=30, seed=1)
    again = synthesize(client, forced_tokens=30, seed=1)
    assert isinstance(first.final, Done) and isinstance(again.final, Done)
    np.testing.assert_allclose(again.pcm, first.pcm, rtol=0, atol=1e-4)  # the second continued the stored prefix
    next_heartbeats(supervisor)
    prefixes = client.health()["worker"]["batch"]["prefix_cache"]
    assert prefixes["budget_mb"] == 64.0 and prefixes["prompts"] == 1 and prefixes["used_kb"] > 0
    assert prefixes["hits"] >= 1 and prefixes["misses"] == 1
