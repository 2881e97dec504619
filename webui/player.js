// Streaming playback for cosyfast: the body of the player component's js_on_load (gr.HTML), run
// with `element` (the component) and `server` (its server functions, see webui/player.py).
// It long-polls server.read_stream for int16 PCM (webui/stream.py) and schedules it gap-free
// with Web Audio. window.cosyfastPlayer.history keeps per-generation timings in ms on the
// performance.now() clock: clickAt, firstByteAt, firstSoundAt (the first sample reaches the
// output), endedAt, and samples / chunks / underruns.
// iOS Safari starts Web Audio only inside a user gesture: the AudioContext is made and resumed in
// the Generate button's own click (and touchend) handler, before Gradio's event runs, and a silent
// sample is played there once to unlock output (`unlock`).
const zh = (navigator.language || "").toLowerCase().startsWith("zh");
const say = (en, cn) => (zh ? cn : en);
const START_LEAD_S = 0.03; // scheduling margin for the first chunk and after an underrun

// crypto.randomUUID exists only in secure contexts; plain-http LAN pages need ids too.
const newId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
                               (b) => b.toString(16).padStart(2, "0")).join("");

const decode = (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Int16Array(bytes.buffer, 0, bytes.length >> 1);
};

const GENERATE_ID = "cosyfast-generate";

const P = {
  ctx: null,
  unlocked: false,
  current: null,
  runId: "",
  history: (window.cosyfastPlayer && window.cosyfastPlayer.history) || [],

  // In a user gesture: make and resume the context; the first time, play one silent sample.
  unlock() {
    if (!this.ctx) this.ctx = new AudioContext({ latencyHint: "interactive" });
    this.ctx.resume(); // iOS: "suspended" or "interrupted" until resumed inside a gesture
    if (this.unlocked) return;
    const silence = this.ctx.createBufferSource();
    silence.buffer = this.ctx.createBuffer(1, 1, this.ctx.sampleRate);
    silence.connect(this.ctx.destination);
    silence.start(0);
    this.unlocked = true;
  },

  panel(state, detail) {
    element.querySelector(".cf-state").textContent = state;
    element.querySelector(".cf-detail").textContent = detail;
  },

  // The Generate button's js: gets the event's input values, returns them with a new run id in
  // the last input (the stream's id, and what Stop cancels); streams when the input at `flagIndex`
  // (the streaming checkbox) is on.
  begin(args, flagIndex) {
    this.stop();
    const values = Array.from(args);
    this.runId = newId();
    values[values.length - 1] = this.runId;
    if (!values[flagIndex]) {
      this.panel("", "");
      return values;
    }
    if (!this.ctx) this.ctx = new AudioContext({ latencyHint: "interactive" });
    this.ctx.resume();
    const run = {
      id: this.runId, clickAt: performance.now(), firstByteAt: null, firstSoundAt: null,
      endedAt: null, eventEnded: false, stopped: false, samples: 0, sampleRate: 0, chunks: 0, underruns: 0,
      nextTime: 0, sources: [],
    };
    this.current = run;
    this.history.push(run);
    this.panel(say("Waiting for the first audio...", "等待第一段音频..."), "");
    this.read(run);
    return values;
  },

  async read(run) {
    let next = 0;
    try {
      while (!run.stopped) {
        const reply = await server.read_stream({ id: run.id, start: next });
        if (run.stopped) break;
        if (reply.chunks.length && run.firstByteAt === null) run.firstByteAt = performance.now();
        run.sampleRate = reply.sample_rate || run.sampleRate;
        for (const chunk of reply.chunks) this.play(run, decode(chunk));
        next = reply.next;
        // A generation that never started (e.g. refused by a full queue) never closes its stream.
        if (reply.done || (run.eventEnded && !reply.chunks.length)) break;
      }
    } catch (err) {
      console.warn("cosyfast player:", err);
    }
    run.endedAt = performance.now();
    if (this.current === run) this.showTotals(run);
  },

  play(run, pcm) {
    const ctx = this.ctx;
    if (!pcm.length) return;
    const buffer = ctx.createBuffer(1, pcm.length, run.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    let when = run.nextTime;
    if (when < ctx.currentTime + 0.005) {
      if (run.chunks > 0) run.underruns += 1;
      when = ctx.currentTime + START_LEAD_S;
    }
    source.start(when);
    run.sources.push(source);
    source.onended = () => { run.sources = run.sources.filter((s) => s !== source); };
    if (run.firstSoundAt === null) {
      const outputLatency = ctx.outputLatency || ctx.baseLatency || 0;
      run.firstSoundAt = performance.now() + (when - ctx.currentTime + outputLatency) * 1000;
    }
    run.nextTime = when + buffer.duration;
    run.samples += pcm.length;
    run.chunks += 1;
    this.panel(say("Playing", "播放中"), this.summary(run));
  },

  summary(run) {
    const seconds = (run.samples / run.sampleRate).toFixed(1);
    const heard = ((run.firstSoundAt - run.clickAt) / 1000).toFixed(2);
    return say(`${seconds} s streamed · first sound ${heard} s after the click`,
               `已流式播放 ${seconds} 秒 · 点击后 ${heard} 秒出声`);
  },

  showTotals(run) {
    if (run.samples) this.panel(say("Streamed", "流式播放"), this.summary(run));
    else this.panel("", "");
  },

  // The generation event is over (the `.then` of Generate); polling ends with the stream.
  eventEnded() {
    if (this.current) this.current.eventEnded = true;
  },

  // Stop playback; returns the run id of the last Generate press (for the server to cancel it).
  stop() {
    const run = this.current;
    if (!run) return this.runId || "";
    this.current = null;
    run.stopped = true;
    run.endedAt = performance.now();
    for (const source of run.sources) source.stop();
    run.sources = [];
    this.showTotals(run);
    return this.runId;
  },
};
window.cosyfastPlayer = P;
if (!window.cosyfastGestureUnlock) { // once per page, whichever player instance loads
  window.cosyfastGestureUnlock = (event) => {
    if (event.target instanceof Element && event.target.closest(`#${GENERATE_ID}`)) window.cosyfastPlayer.unlock();
  };
  for (const type of ["touchend", "click"]) document.addEventListener(type, window.cosyfastGestureUnlock, true);
}
