// The public pages: face privacy, speech (files, microphone, history) and the "try the new version"
// switch. Everything talks to the gateway's own routes with the browser's cookies, so the canary
// cookie set here steers these requests exactly as it steers any other client's.
import "./style.css";
import { $, type ConsoleConfig, type RouteInfo, cookie, errorOf, fmtMs, h, loadConfig, setCookie } from "./common";

let config: ConsoleConfig;

function routeOf(kind: string): RouteInfo | undefined {
  // Prefer a route with a canary to try; any route of the kind otherwise.
  const all = config.routes.filter((r) => r.kind === kind);
  return all.find((r) => r.try) ?? all[0];
}

// ---------- navigation ----------

function show(): void {
  const page = location.hash === "#speech" ? "speech" : "face";
  for (const id of ["face", "speech"]) {
    $(`#${id}`).hidden = id !== page;
    const nav = $(`#nav-${id}`);
    if (id === page) nav.setAttribute("aria-current", "page");
    else nav.removeAttribute("aria-current");
  }
  if (page === "speech") void refreshHistory();
}

// ---------- API tokens for routes with auth ----------
// Typed by the user and kept in this tab's sessionStorage only: never a cookie, so no other page's
// requests carry it, and gone when the tab closes.

function tokenOf(route: RouteInfo): string {
  return sessionStorage.getItem(`switchyard.token.${route.name}`) ?? "";
}

function authHeaders(route: RouteInfo): Record<string, string> {
  const t = tokenOf(route);
  return t ? { authorization: `Bearer ${t}` } : {};
}

function tokenField(route: RouteInfo): HTMLElement {
  const id = `token-${route.name}`;
  const field = h("input", { type: "password", id, autocomplete: "off", spellcheck: "false" });
  field.value = tokenOf(route);
  field.addEventListener("input", () => {
    const v = field.value.trim();
    if (v) sessionStorage.setItem(`switchyard.token.${route.name}`, v);
    else sessionStorage.removeItem(`switchyard.token.${route.name}`);
  });
  field.addEventListener("change", () => {
    if (route.kind === "asr") void refreshHistory();
  });
  return h(
    "div",
    { class: "token" },
    h("p", { class: "notice", text: `${route.name} needs an API token (${route.auth}); it stays in this browser tab only.` }),
    h("label", { for: id, text: "API token" }),
    field,
  );
}

// ---------- try the new version ----------

function canarySwitch(box: HTMLElement): void {
  const route = routeOf(box.dataset.kind ?? "");
  box.replaceChildren();
  if (!route) {
    box.append(h("p", { class: "muted", text: "This gateway has no route for this service." }));
    return;
  }
  if (route.auth !== "none") box.append(tokenField(route));
  if (!route.try || !route.canary) {
    box.append(h("p", { class: "muted", text: `No new version of ${route.name} is being tried right now.` }));
    return;
  }
  const { cookie: name, value } = route.try;
  const id = `try-${route.name}`;
  const input = h("input", { type: "checkbox", role: "switch", id, "aria-describedby": `${id}-notice` });
  const notice = h("p", { id: `${id}-notice`, class: "notice", role: "status" });
  const render = () => {
    const on = cookie(name) === value;
    input.checked = on;
    input.setAttribute("aria-checked", String(on));
    notice.className = on ? "notice on" : "notice";
    notice.textContent = on
      ? `You are on the new version (${route.canary}). It is being tested: results may differ, and you can switch back at any time.`
      : `You are on the stable version (${route.stable}).`;
  };
  input.addEventListener("change", () => {
    setCookie(name, input.checked ? value : null);
    render();
  });
  render();
  box.append(h("label", { class: "switch", for: id }, input, h("span", { text: "Try the new version" })), notice);
}

// ---------- face privacy ----------

function drawBoxes(svg: SVGSVGElement, img: HTMLImageElement, boxes: number[][]): void {
  const ns = "http://www.w3.org/2000/svg";
  const place = () => {
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    svg.replaceChildren();
    for (const [x0, y0, x1, y1] of boxes) {
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(x0));
      r.setAttribute("y", String(y0));
      r.setAttribute("width", String(x1 - x0));
      r.setAttribute("height", String(y1 - y0));
      r.setAttribute("class", "box");
      svg.append(r);
    }
  };
  if (img.complete && img.naturalWidth) place();
  else img.addEventListener("load", place, { once: true });
}

async function anonymise(file: File): Promise<void> {
  const route = routeOf("face");
  const list = $("#face-results");
  const status = h("p", { class: "status", text: `Anonymising ${file.name}…` });
  const item = h("li", { class: "card result", "data-state": "pending" }, h("h3", { text: file.name }), status);
  list.prepend(item);
  if (!route) {
    status.textContent = "No face route is configured.";
    return;
  }
  const style = $<HTMLSelectElement>("#face-style").value;
  const strength = $<HTMLInputElement>("#face-strength").value;
  const started = performance.now();
  let resp: Response;
  try {
    resp = await fetch(`${route.path}/blur?style=${encodeURIComponent(style)}&strength=${encodeURIComponent(strength)}`, {
      method: "POST",
      headers: { "content-type": file.type || "application/octet-stream", ...authHeaders(route) },
      body: file,
    });
  } catch (e) {
    item.dataset.state = "error";
    status.textContent = `Network error: ${e}`;
    return;
  }
  if (!resp.ok) {
    item.dataset.state = "error";
    status.className = "status error";
    status.textContent = await errorOf(resp);
    return;
  }
  const blob = await resp.blob();
  const ms = performance.now() - started;
  const faces = Number(resp.headers.get("x-faces") ?? "0");
  const boxes = (resp.headers.get("x-face-boxes") ?? "")
    .split(";")
    .filter(Boolean)
    .map((b) => b.split(",").map(Number));
  const slot = resp.headers.get("x-switchyard-slot") ?? "?";
  const version = resp.headers.get("x-switchyard-version") ?? "?";
  const origUrl = URL.createObjectURL(file);
  const outUrl = URL.createObjectURL(blob);
  const orig = h("img", { src: origUrl, alt: `Original: ${file.name}` });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "boxes");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.toggleAttribute("hidden", !$<HTMLInputElement>("#face-boxes").checked);
  drawBoxes(svg, orig, boxes);
  const ext = (blob.type.split("/")[1] ?? "jpg").replace("jpeg", "jpg");
  const base = file.name.replace(/\.[^.]+$/, "");
  item.dataset.state = "done";
  item.dataset.faces = String(faces);
  item.dataset.slot = slot;
  status.textContent = `${faces} face${faces === 1 ? "" : "s"} · answered by ${slot} (version ${version}) · ${fmtMs(ms)}`;
  item.append(
    h(
      "div",
      { class: "pair" },
      h("figure", {}, h("div", { class: "frame" }, orig, svg), h("figcaption", { text: "Original" })),
      h("figure", {}, h("img", { src: outUrl, alt: `Anonymised: ${file.name}`, class: "anonymised" }), h("figcaption", { text: "Anonymised" })),
    ),
    h("a", { href: outUrl, download: `${base}-anonymised.${ext}`, class: "button" }, "Download anonymised photo"),
  );
}

function setupFace(): void {
  const input = $<HTMLInputElement>("#face-files");
  const run = (files: FileList | File[]) => {
    for (const f of Array.from(files)) void anonymise(f);
  };
  input.addEventListener("change", () => {
    if (input.files) run(input.files);
    input.value = "";
  });
  dropZone($("#face-drop"), run);
  const strength = $<HTMLInputElement>("#face-strength");
  strength.addEventListener("input", () => {
    $("#face-strength-out").textContent = Number(strength.value).toFixed(1);
  });
  $<HTMLInputElement>("#face-boxes").addEventListener("change", (e) => {
    const on = (e.target as HTMLInputElement).checked;
    document.querySelectorAll("#face-results svg.boxes").forEach((s) => s.toggleAttribute("hidden", !on));
  });
}

function dropZone(zone: HTMLElement, onFiles: (f: File[]) => void): void {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer?.files) onFiles(Array.from(e.dataTransfer.files));
  });
}

// ---------- speech: files ----------

/** A recognised segment as `/transcribe` returns it. */
interface Segment {
  start: number;
  end: number;
  text: string;
  channel?: number;
}

/** Seconds as m:ss. */
function clock(s: number): string {
  const whole = Math.floor(s);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function transcribe(file: File): void {
  const route = routeOf("asr");
  const progress = h("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
  const status = h("p", { class: "status", text: "Uploading…" });
  const text = h("p", { class: "transcript" });
  const item = h("li", { class: "card result", "data-state": "pending" }, h("h4", { text: file.name }), progress, status, text);
  $("#asr-results").prepend(item);
  if (!route) {
    status.textContent = "No speech route is configured.";
    return;
  }
  const split = $<HTMLInputElement>("#asr-split").checked;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${route.path}/transcribe${split ? "?channels=split" : ""}`);
  for (const [k, v] of Object.entries(authHeaders(route))) xhr.setRequestHeader(k, v);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
  };
  xhr.upload.onload = () => {
    progress.value = 100;
    status.textContent = "Recognising…";
  };
  xhr.onerror = () => {
    item.dataset.state = "error";
    status.textContent = "Network error";
  };
  xhr.onload = () => {
    const body = xhr.response;
    if (xhr.status !== 200) {
      item.dataset.state = "error";
      status.className = "status error";
      status.textContent = body?.error ? `${body.error.message} (${body.error.code}, HTTP ${xhr.status})` : `HTTP ${xhr.status}`;
      return;
    }
    item.dataset.state = "done";
    item.dataset.slot = body.slot;
    if (body.channels) {
      // One line per segment, in time order, naming the channel (the speaker) it came from.
      for (const seg of body.segments as Segment[]) {
        text.append(
          h(
            "span",
            { class: "turn", "data-channel": seg.channel },
            h("span", { class: "who", text: `Channel ${(seg.channel ?? 0) + 1}` }),
            h("time", { text: clock(seg.start) }),
            h("span", { class: "said", text: seg.text }),
          ),
        );
      }
      if (!text.childElementCount) text.textContent = "(no speech recognised)";
    } else {
      text.textContent = body.text || "(no speech recognised)";
    }
    status.textContent = `${body.duration_s.toFixed(1)} s of audio · answered by ${body.slot} (version ${body.version}) · ${fmtMs(body.timings_ms.total)}`;
    void refreshHistory();
  };
  // A form, so that the file's name goes with it into the recognition history.
  const form = new FormData();
  form.append("audio", file, file.name);
  xhr.send(form);
}

// ---------- speech: microphone over the WebSocket ----------

interface Mic {
  ws: WebSocket;
  ctx: AudioContext;
  stream: MediaStream;
  node: ScriptProcessorNode;
}
let mic: Mic | null = null;

async function startMic(): Promise<void> {
  const route = routeOf("asr");
  const state = $("#mic-state");
  if (!route) {
    state.textContent = "No speech route is configured.";
    return;
  }
  $<HTMLButtonElement>("#mic-start").disabled = true;
  let stream: MediaStream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  } catch (e) {
    state.textContent = `No microphone: ${(e as Error).message}`;
    $<HTMLButtonElement>("#mic-start").disabled = false;
    return;
  }
  const ctx = new AudioContext();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // A browser cannot set Authorization on a WebSocket: the gateway takes the token from the query.
  const token = tokenOf(route);
  const auth = token ? `&access_token=${encodeURIComponent(token)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}${route.path}/stream?sample_rate=${ctx.sampleRate}${auth}`);
  ws.binaryType = "arraybuffer";
  $("#live-final").textContent = "";
  $("#live-partial").textContent = "";
  const source = ctx.createMediaStreamSource(stream);
  // ScriptProcessor keeps the page free of extra worklet files; 4096 frames ≈ 85 ms at 48 kHz.
  const node = ctx.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const f = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(f.length);
    for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
    ws.send(pcm.buffer);
  };
  ws.onopen = () => {
    source.connect(node);
    node.connect(ctx.destination);
    state.textContent = "Recording…";
    $<HTMLButtonElement>("#mic-stop").disabled = false;
  };
  ws.onmessage = (m) => {
    const ev = JSON.parse(String(m.data));
    if (ev.type === "partial") $("#live-partial").textContent = ev.text;
    if (ev.type === "final") {
      const fin = $("#live-final");
      fin.textContent = `${fin.textContent} ${ev.text}`.trim();
      $("#live-partial").textContent = "";
    }
  };
  ws.onclose = (e) => {
    state.textContent = e.code === 1000 ? "Stopped." : `Stream closed: ${e.reason || e.code}`;
    stopAudio();
    void refreshHistory();
  };
  mic = { ws, ctx, stream, node };
}

function stopAudio(): void {
  if (!mic) return;
  mic.node.disconnect();
  mic.stream.getTracks().forEach((t) => t.stop());
  void mic.ctx.close();
  mic = null;
  $<HTMLButtonElement>("#mic-start").disabled = false;
  $<HTMLButtonElement>("#mic-stop").disabled = true;
}

function stopMic(): void {
  if (!mic) return;
  $("#mic-state").textContent = "Finishing…";
  $<HTMLButtonElement>("#mic-stop").disabled = true;
  mic.node.disconnect();
  if (mic.ws.readyState === WebSocket.OPEN) mic.ws.send(JSON.stringify({ event: "end" }));
}

// ---------- speech: history ----------

function historyQuery(): URLSearchParams {
  const p = new URLSearchParams();
  const q = $<HTMLInputElement>("#history-q").value.trim();
  const slot = $<HTMLSelectElement>("#history-slot").value;
  const version = $<HTMLSelectElement>("#history-version").value;
  if (q) p.set("q", q);
  if (slot) p.set("slot", slot);
  if (version) p.set("version", version);
  return p;
}

function fillSelect(sel: HTMLSelectElement, values: Iterable<string>): void {
  const have = new Set(Array.from(sel.options).map((o) => o.value));
  for (const v of values) if (v && !have.has(v)) sel.append(h("option", { value: v, text: v }));
}

async function refreshHistory(): Promise<void> {
  const route = routeOf("asr");
  const status = $("#history-status");
  if (!route) return;
  const q = historyQuery();
  $<HTMLAnchorElement>("#history-csv").href = `${route.path}/history.csv?${q}`;
  q.set("limit", "200");
  const r = await fetch(`${route.path}/history?${q}`, { cache: "no-store", headers: authHeaders(route) });
  const body = $("#history tbody");
  if (!r.ok) {
    status.textContent = await errorOf(r);
    body.replaceChildren();
    return;
  }
  const { items } = await r.json();
  fillSelect($<HTMLSelectElement>("#history-slot"), [route.stable, route.canary ?? "", ...items.map((i: { slot: string }) => i.slot)]);
  fillSelect($<HTMLSelectElement>("#history-version"), items.map((i: { version: string }) => i.version));
  status.textContent = `${items.length} recognition${items.length === 1 ? "" : "s"}`;
  body.replaceChildren(
    ...items.map((i: { time: string; slot: string; version: string; file_name: string; duration_s: number; text: string }) =>
      h(
        "tr",
        {},
        h("td", { text: new Date(i.time).toLocaleString() }),
        h("td", { text: i.slot }),
        h("td", { text: i.version }),
        h("td", { text: i.file_name }),
        h("td", { class: "num", text: i.duration_s.toFixed(1) }),
        h("td", { text: i.text }),
      ),
    ),
  );
}

function setupSpeech(): void {
  const input = $<HTMLInputElement>("#asr-files");
  input.addEventListener("change", () => {
    for (const f of Array.from(input.files ?? [])) transcribe(f);
    input.value = "";
  });
  dropZone(input.closest("label") as HTMLElement, (files) => files.forEach(transcribe));
  $("#mic-start").addEventListener("click", () => void startMic());
  $("#mic-stop").addEventListener("click", stopMic);
  $("#history-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void refreshHistory();
  });
  for (const id of ["#history-slot", "#history-version"]) $(id).addEventListener("change", () => void refreshHistory());
  // A plain link cannot carry the token: with one, the CSV is fetched with it and saved from memory.
  const csv = $<HTMLAnchorElement>("#history-csv");
  csv.addEventListener("click", (e) => {
    const route = routeOf("asr");
    if (!route || !tokenOf(route)) return;
    e.preventDefault();
    void (async () => {
      const r = await fetch(csv.href, { headers: authHeaders(route) });
      if (!r.ok) {
        $("#history-status").textContent = await errorOf(r);
        return;
      }
      const url = URL.createObjectURL(await r.blob());
      const a = h("a", { href: url, download: "history.csv" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    })();
  });
}

async function start(): Promise<void> {
  try {
    config = await loadConfig();
  } catch (e) {
    const el = $("#config-error");
    el.hidden = false;
    el.textContent = `The console cannot reach the gateway: ${(e as Error).message}`;
    return;
  }
  $("#footer-version").textContent = `Switchyard ${config.version}`;
  document.querySelectorAll<HTMLElement>(".canary").forEach(canarySwitch);
  setupFace();
  setupSpeech();
  window.addEventListener("hashchange", show);
  show();
}

void start();
