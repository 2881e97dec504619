"""cosyfast on a Ray Serve cluster: the same worker code, one supervised worker per replica.

The optional extra (`pip install -r requirements-ray.txt`); nothing else in the project imports
this package. It sits at the app's level of the import order (app -> webui -> worker -> engines ->
cosyvoice3) and uses app.py's flags and FastAPI app as they are. Following a request:

- `application.py`: `build(ClusterOptions)`, the Serve application (`serve run`, serve.yaml);
- `ingress.py`: `Ingress`, the page and the OpenAI-compatible API (app.py's `build_app`) over
  a `WorkerClient` whose supervisor is `ServeWorkers`;
- `workers.py`: `ServeWorkers`, a supervisor's face over Serve handles: submit, cancel and health
  forwarded to the replicas, events streamed back;
- `replica.py`: `WorkerReplica`, one GPU (or CPU) replica running one `Supervisor` and its worker
  process, with Ray's health check;
- `checks.py`: when a replica tells Ray to replace it (pure);
- `board.py`: `HealthBoard`, where replicas post their health, and the cluster's `/health`.
"""
