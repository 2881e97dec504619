"""Browser tests of the page (headless Chromium + Playwright) and their helpers."""
