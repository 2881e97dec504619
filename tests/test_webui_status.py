"""The status panel and the generation report rendered from health snapshots and stats."""

from webui.report import message_html, progress_html, stats_html
from webui.status import CAUSES, format_duration, render_status
from worker.supervisor.causes import CAUSES as RESTART_CAUSES


def health(**worker):
    base = {"state": "ready", "pid": 4242, "uptime_s": 3725.0, "restarts": 0, "last_restart_cause": None,
            "backends": {"llm": {"backend": "tensorrt", "precision": "fp16", "device": "cuda:0",
                                 "reason": "engine cached"},
                         "hift": {"backend": "torch", "precision": "fp32", "device": "cuda:0",
                                  "reason": "tensorrt: iSTFT not supported"}},
            "device": "cuda:0", "dtype": "fp16", "demo": False, "boot_error": None,
            "loading": {"stage": "ready", "fraction": 1.0, "message": ""}, "gpu_memory": 3 * 2**30,
            "batch": {"current": 12, "mean": 9.25, "max": 16}}
    base.update(worker)
    return {"status": "ok", "worker": base, "queue_depth": 2, "inflight": 1}


def test_ready_worker_shows_every_fact():
    html = render_status(health())
    for text in ("Ready", "Worker 4242", "uptime 1 h 2 min", "restarts 0", "queue 2", "in progress 1",
                 "GPU memory 3.00 GiB", "batch 12 (mean 9.2, max 16)", "cuda:0 fp16", "llm tensorrt", "hift torch",
                 "tensorrt: iSTFT not supported", 'aria-label="Status"'):
        assert text in html, text
    assert "Demo model" not in html and "<progress" not in html
    assert "批大小 12 (平均 9.2, 最大 16)" in render_status(health(), "zh")
    assert "batch" not in render_status(health(batch={"current": 0, "mean": 0.0, "max": 0}))  # nothing served yet


def test_the_flow_cache_shows_its_memory_voices_and_hit_rate():
    cache = {"budget_mb": 40960.0, "used_mb": 1234.4, "voices": 3, "hits": 9, "misses": 3, "hit_rate": 0.75}
    html = render_status(health(batch={"current": 2, "mean": 1.5, "max": 4, "flow_cache": cache}))
    assert "flow cache 1234/40960 MiB, 3 voices, hit rate 75%" in html
    zh = render_status(health(batch={"current": 2, "mean": 1.5, "max": 4, "flow_cache": cache}), "zh")
    assert "流缓存 1234/40960 MiB, 3 个声音, 命中率 75%" in zh
    off = dict(cache, budget_mb=0.0)
    assert "flow cache" not in render_status(health(batch={"current": 2, "mean": 1.5, "max": 4, "flow_cache": off}))


def test_the_prompt_prefixes_show_how_many_and_their_hit_rate():
    prefixes = {"budget_mb": 64.0, "used_kb": 410.2, "prompts": 2, "hits": 6, "misses": 2, "hit_rate": 0.75}
    html = render_status(health(batch={"current": 1, "mean": 1.0, "max": 2, "prefix_cache": prefixes}))
    assert "prompt prefixes 2, hit rate 75%" in html
    assert "提示前缀 2, 命中率 75%" in render_status(health(batch={"current": 1, "mean": 1.0, "max": 2,
                                                                 "prefix_cache": prefixes}), "zh")
    unused = dict(prefixes, hits=0, misses=0, hit_rate=None)
    assert "prompt prefixes" not in render_status(health(batch={"current": 1, "mean": 1.0, "max": 2,
                                                               "prefix_cache": unused}))


def test_restarting_worker_reads_recovering_with_its_cause():
    html = render_status(health(state="starting", restarts=2, last_restart_cause="hung",
                                loading={"stage": "starting", "fraction": 0.0, "message": "starting the worker"}))
    assert "Recovering" in html and "restarts 2" in html and "last cause: stopped responding" in html
    assert "恢复中" in render_status(health(state="recovering", restarts=1), "zh")
    assert "Loading the model" in render_status(health(state="loading", restarts=0))


def test_model_loading_and_engine_building_show_progress():
    html = render_status(health(state="loading", loading={"stage": "engines", "fraction": 0.4,
                                                          "message": "building the DiT engine"}))
    assert '<progress max="1" value="0.400">' in html and "40% building the DiT engine" in html


def test_demo_boot_failure_and_no_answer():
    assert "Demo model" in render_status(health(demo=True))
    failed = render_status(health(state="boot_failed", boot_error="model directory not found: /x\nTraceback"))
    assert "Failed to start" in failed and "model directory not found: /x" in failed and "Traceback" not in failed
    assert "not available" in render_status({})
    assert "<script>" not in render_status(health(last_restart_cause="<script>alert(1)</script>"))


def test_report_fragments():
    assert "(40%)" in progress_html("Generating", 0.4) and "%" not in progress_html("Waiting", 0.0)
    assert "value=" not in progress_html("Waiting", None)
    assert message_html("a < b", "⚠") == '<div class="cf-message">⚠ a &lt; b</div>'
    table = stats_html(2.0, 1.0, 0.25, 0.2, "llm torch", "en")
    for text in ("<dt>Audio</dt><dd>2.00 s</dd>", "<dt>RTF</dt><dd>0.50</dd>",
                 "<dt>First chunk</dt><dd>0.25 s (worker 0.20 s)</dd>", "<dt>Backend</dt><dd>llm torch</dd>"):
        assert text in table, text
    assert "<dt>实时率</dt>" in stats_html(2.0, 1.0, None, None, "x", "zh")
    assert format_duration(59) == "59 s" and format_duration(61) == "1 min 1 s"


def test_every_restart_cause_of_the_supervisor_has_a_label():
    assert set(CAUSES) == set(RESTART_CAUSES)


def test_several_workers_each_get_a_line_and_the_panel_counts_the_ready_ones():
    ready = health()["worker"]
    workers = [dict(ready, name="cosyfast-worker-gpu0", pid=11, queue_depth=1, inflight=3),
               dict(ready, name="cosyfast-worker-gpu1", pid=12, state="starting", restarts=1,
                    last_restart_cause="crashed", queue_depth=0, inflight=0,
                    loading={"stage": "loading", "fraction": 0.5, "message": "loading the model"})]
    html = render_status({"status": "ok", "worker": workers[0], "workers": workers, "queue_depth": 1,
                          "inflight": 3})
    assert "1 of 2 workers ready" in html and "cf-warn" in html
    lines = html.split('<div class="cf-status-line">')
    assert "Worker gpu0" in lines[2] and "pid 11" in lines[2] and "in progress 3" in lines[2]
    assert "Worker gpu1" in lines[3] and "Recovering" in lines[3] and "last cause: crashed" in lines[3]
    assert "50% loading the model" in html and html.count("llm tensorrt") == 1  # backends once
    assert "2 个工作进程中 1 个就绪" in render_status({"workers": workers, "worker": workers[0]}, "zh")
    one = render_status({**health(), "workers": [health()["worker"]]})  # one worker: as before
    assert one == render_status(health()) and "workers ready" not in one


def test_an_idle_worker_reads_idle_and_one_waking_up_shows_its_boot():
    idle = render_status(health(state="idle", pid=None, restarts=1, last_restart_cause="crashed",
                                loading={"stage": "idle", "fraction": 1.0, "message": "released while idle"}))
    assert "Idle" in idle and "cf-ok" in idle and "<progress" not in idle and "Recovering" not in idle
    assert "空闲" in render_status(health(state="idle", pid=None), "zh")
    waking = health(state="waking", restarts=1, loading={"stage": "loading", "fraction": 0.5,
                                                         "message": "loading flow.pt"})
    html = render_status(waking)
    assert "Waking up" in html and "Recovering" not in html and "50% loading flow.pt" in html
    assert "正在唤醒" in render_status(waking, "zh")


def test_idle_workers_of_a_set_count_as_healthy():
    ready = health()["worker"]
    workers = [dict(ready, name="cosyfast-worker-gpu0"), dict(ready, name="cosyfast-worker-gpu1", state="idle")]
    html = render_status({"status": "ok", "worker": workers[0], "workers": workers})
    assert "1 of 2 workers ready" in html and "cf-ok" in html.split("Worker gpu0")[0]  # the summary's tone
    workers[0] = dict(workers[0], state="recovering")
    assert "cf-warn" in render_status({"status": "ok", "worker": workers[1], "workers": workers}).split("Worker")[0]
