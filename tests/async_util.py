"""Running a coroutine from a test, whatever the calling thread holds.

Playwright's sync API (the browser tests, session-scoped) keeps an event loop running in the main
thread, where `asyncio.run` then refuses to start; a fresh thread always has none.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_coroutine(coro):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
