"""The GPU worker process: everything that runs in it, and nothing of the app side.

- `main.py`: the process entry (`run`, the spawn target): boot, pipe reader, heartbeats;
- `scheduler.py`: the model loop (messages in, rounds of the `BatchEngine`, chunks out);
- `transcription.py`: `Transcribe` requests and the recogniser loaded on first use;
- `faults.py`: test-only fault injection.

The app side (worker/supervisor/) reaches it through the pipe only, and names one thing of it:
`worker.gpu.main.run`, imported when a process is launched. Nothing here imports
`worker.supervisor` (tests/test_import_graph.py); both sides share worker/protocol.py and
worker/logs.py. No gradio anywhere, no torch at import time: the spawned child imports this
package again.
"""
