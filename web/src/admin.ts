// The operator pages: rollouts (weights, ramps, promote, roll back, blue/green), slots, model loads
// and live charts, all through the admin API that the gateway exposes to the console under
// /ui/api/admin/ (bearer token, kept in session storage only).
import "./style.css";
import { $, errorOf, h, loadConfig } from "./common";

const TOKEN_KEY = "switchyard.adminToken";
const POLL_MS = 3000;
const KEEP = 60;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

class Refused extends Error {}

async function api(method: string, path: string, body?: unknown): Promise<Json> {
  const token = sessionStorage.getItem(TOKEN_KEY) ?? "";
  const r = await fetch(`/ui/api/admin/${path}`, {
    method,
    cache: "no-store",
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 || r.status === 403) throw new Refused(await errorOf(r));
  if (!r.ok) throw new Error(await errorOf(r));
  return r.json();
}

// ---------- sign-in ----------

function signedOut(message = ""): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer !== undefined) clearInterval(timer);
  timer = undefined;
  $("#ops").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
}

async function signIn(token: string): Promise<void> {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await poll();
  } catch (e) {
    signedOut(e instanceof Refused ? `The token was refused: ${e.message}` : `Cannot reach the admin API: ${(e as Error).message}`);
    return;
  }
  $("#login").hidden = true;
  $("#ops").hidden = false;
  $("#login-error").textContent = "";
  timer = window.setInterval(() => {
    poll().catch((e) => {
      if (e instanceof Refused) signedOut(`Signed out: ${e.message}`);
    });
  }, POLL_MS);
}

let timer: number | undefined;

// ---------- actions ----------

function say(text: string, ok: boolean): void {
  const el = $("#result");
  el.className = ok ? "result ok" : "result error";
  el.textContent = text;
}

async function act(question: string, method: string, path: string, body: unknown, done: (r: Json) => string): Promise<void> {
  if (!window.confirm(question)) {
    say("Cancelled.", true);
    return;
  }
  try {
    const r = await api(method, path, body);
    say(done(r), true);
  } catch (e) {
    say(`Failed: ${(e as Error).message}`, false);
  }
  await poll().catch(() => undefined);
}

// ---------- routes ----------

interface RouteView {
  card: HTMLElement;
  facts: HTMLElement;
  weight: HTMLInputElement;
  ramp: HTMLElement;
  switchBtn: HTMLButtonElement;
  promote: HTMLButtonElement;
}
const routeViews = new Map<string, RouteView>();

function fact(dl: HTMLElement, label: string, value: string): void {
  dl.append(h("dt", { text: label }), h("dd", { text: value }));
}

function routeCard(r: Json): RouteView {
  const name: string = r.name;
  const id = `w-${name}`;
  const weight = h("input", { id, type: "number", min: 0, max: 100, step: "any", value: r.canary_weight });
  const facts = h("dl", { class: "facts" });
  const ramp = h("div", { class: "row" });
  const btn = (label: string, onClick: () => void) => {
    const b = h("button", { type: "button", text: label });
    b.addEventListener("click", onClick);
    return b;
  };
  const weightForm = h(
    "form",
    { class: "row" },
    h("label", { for: id, text: "Canary weight (%)" }),
    weight,
    h("button", { type: "submit", text: "Set weight" }),
  );
  weightForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const w = Number(weight.value);
    void act(`Send ${w} % of ${name}'s users to the canary?`, "PUT", `routes/${name}/weight`, { canary_weight: w }, (res) =>
      `${name}: canary weight is now ${res.canary_weight} %.`,
    );
  });
  for (const cmd of ["start", "pause", "resume", "abort"]) {
    ramp.append(
      btn(`${cmd[0].toUpperCase()}${cmd.slice(1)} ramp`, () =>
        void act(`${cmd[0].toUpperCase()}${cmd.slice(1)} the ramp of ${name}?`, "POST", `routes/${name}/ramp/${cmd}`, undefined, (res) =>
          `${name}: ramp ${cmd} → ${phaseText(res.autopilot?.ramp)}.`,
        ),
      ),
    );
  }
  const promote = btn("Promote canary", () =>
    void act(`Make the canary of ${name} the stable slot for everyone?`, "POST", `routes/${name}/promote`, undefined, (res) =>
      `${name}: ${res.stable} is now stable.`,
    ),
  );
  const rollback = btn("Roll back", () =>
    void act(`Send every user of ${name} back to stable now?`, "POST", `routes/${name}/rollback`, undefined, () => `${name}: rolled back, weight 0 %.`),
  );
  const switchBtn = btn("Switch blue/green", () =>
    void act(`Switch all traffic of ${name} to the other colour?`, "POST", `routes/${name}/switch`, undefined, (res) =>
      `${name}: ${res.blue_green?.active} (${res.stable}) now serves everyone.`,
    ),
  );
  const card = h(
    "article",
    { class: "card route", "data-route": name, "aria-labelledby": `route-${name}` },
    h("h3", { id: `route-${name}` }, `${name} `, h("code", { text: r.path })),
    facts,
    weightForm,
    ramp,
    h("div", { class: "row" }, promote, rollback, switchBtn),
  );
  $("#routes").append(card);
  return { card, facts, weight, ramp, switchBtn, promote };
}

function phaseText(ramp: Json): string {
  if (!ramp) return "no ramp configured";
  const p = ramp.phase ?? {};
  switch (p.state) {
    case "running":
    case "paused":
      return `${p.state} at step ${p.step + 1} (${ramp.step_weight} %)`;
    case "rolled_back":
      return `rolled back: ${p.reason}`;
    default:
      return String(p.state ?? "unknown").replace("_", " ");
  }
}

function renderRoutes(routes: Json[]): void {
  for (const r of routes) {
    const v = routeViews.get(r.name) ?? routeCard(r);
    routeViews.set(r.name, v);
    v.card.dataset.weight = String(r.canary_weight);
    const ap = r.autopilot ?? {};
    v.card.dataset.ramp = phaseText(ap.ramp);
    v.facts.replaceChildren();
    fact(v.facts, "Stable", r.stable);
    fact(v.facts, "Canary", r.canary ?? "none");
    fact(v.facts, "Weight", `${r.canary_weight} %${r.runtime_override ? " (changed at runtime)" : ""}`);
    if (r.blue_green) fact(v.facts, "Blue/green", `${r.blue_green.active} is live`);
    fact(v.facts, "Breaker", ap.breaker ? ap.breaker.state : "off");
    fact(v.facts, "Ramp", phaseText(ap.ramp));
    fact(v.facts, "Fallbacks", String(ap.fallbacks_total ?? 0));
    if (ap.shadow) {
      const s = ap.shadow;
      const parts = [];
      if (s.face_samples) parts.push(`face F1 ${s.face_f1.toFixed(3)}`);
      if (s.asr_samples) parts.push(`WER ${(100 * s.wer).toFixed(1)} %`);
      if (s.http_samples) parts.push(`match ${(100 * s.match_rate).toFixed(1)} %`);
      fact(v.facts, "Shadow", parts.join(", ") || "no samples yet");
    }
    if (document.activeElement !== v.weight) v.weight.value = String(r.canary_weight);
    v.weight.disabled = !r.canary;
    v.promote.disabled = !r.canary;
    v.ramp.hidden = !ap.ramp;
    v.switchBtn.hidden = !r.blue_green;
  }
}

// ---------- slots ----------

let slotKinds = new Map<string, string>();

function renderSlots(slots: Json[]): void {
  $("#slots tbody").replaceChildren(
    ...slots.map((s) => {
      const m = s.last_minute;
      return h(
        "tr",
        { "data-slot": s.name },
        h("th", { scope: "row", text: s.name }),
        h("td", { text: s.kind }),
        h("td", { class: "version", text: s.version }),
        h("td", { class: "num", text: s.inflight }),
        h("td", { class: "num", text: m.requests_per_s.toFixed(2) }),
        h("td", { class: "num", text: `${(100 * m.error_rate).toFixed(1)} %` }),
        h("td", { class: "num", text: m.requests ? `${Math.round(m.p95_ms)} ms` : "–" }),
      );
    }),
  );
  const sel = $<HTMLSelectElement>("#load-slot");
  const models = slots.filter((s) => s.kind === "face" || s.kind === "asr");
  slotKinds = new Map(models.map((s) => [s.name, s.kind]));
  if (sel.options.length !== models.length) {
    sel.replaceChildren(...models.map((s) => h("option", { value: s.name, text: `${s.name} (${s.kind})` })));
    loadKind();
  }
}

function loadKind(): void {
  const asr = slotKinds.get($<HTMLSelectElement>("#load-slot").value) === "asr";
  $("#load-detector-label").hidden = asr;
  $("#load-model-label").textContent = asr ? "Model directory on the gateway" : "Model file on the gateway";
  $<HTMLInputElement>("#load-model").placeholder = asr ? "models/asr/zipformer-en-3m" : "models/centerface/centerface.onnx";
}

function setupLoad(): void {
  $("#load-slot").addEventListener("change", loadKind);
  $("#load-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const slot = $<HTMLSelectElement>("#load-slot").value;
    const model = $<HTMLInputElement>("#load-model").value.trim();
    const version = $<HTMLInputElement>("#load-version").value.trim();
    const detector = $<HTMLSelectElement>("#load-detector").value;
    const body: Record<string, string> =
      slotKinds.get(slot) === "asr" ? { model_dir: model, version } : { model, version, ...(detector ? { detector } : {}) };
    void act(`Load ${model} as version ${version} into ${slot}? It serves as soon as it passes its check.`, "POST", `slots/${slot}/load`, body, (r) =>
      `${slot}: now serving version ${r.details?.version ?? version}.`,
    );
  });
}

// ---------- charts ----------

const series = new Map<string, Map<string, number[]>>();
let lastFallbacks = new Map<string, [number, number]>();

function push(chart: string, line: string, value: number | null): void {
  if (value === null || !Number.isFinite(value)) return;
  const c = series.get(chart) ?? new Map<string, number[]>();
  series.set(chart, c);
  const s = c.get(line) ?? [];
  c.set(line, s);
  s.push(value);
  if (s.length > KEEP) s.shift();
}

const COLOURS = ["#1f5fbf", "#b3261e", "#1b7a3a", "#7a3db8", "#8a5a00", "#00707a"];

function drawChart(title: string, unit: string, lines: Map<string, number[]>): HTMLElement {
  const W = 320;
  const H = 120;
  const max = Math.max(1e-9, ...Array.from(lines.values()).flat());
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const latest: string[] = [];
  const legend = h("ul", { class: "legend" });
  let i = 0;
  for (const [name, values] of lines) {
    const c = i++ % COLOURS.length;
    const colour = COLOURS[c];
    const pts = values.map((v, k) => `${(k / (KEEP - 1)) * W},${H - 4 - (v / max) * (H - 8)}`).join(" ");
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("points", pts);
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", colour);
    pl.setAttribute("stroke-width", "2");
    svg.append(pl);
    const last = values[values.length - 1] ?? 0;
    const text = `${name}: ${last.toFixed(last < 10 ? 2 : 0)} ${unit}`;
    latest.push(text);
    legend.append(h("li", {}, h("span", { class: `swatch c${c}` }), text));
  }
  svg.setAttribute("aria-label", `${title}. Latest: ${latest.join("; ") || "no data"}`);
  return h("figure", { class: "card chart" }, h("figcaption", { text: `${title} (max ${max.toFixed(max < 10 ? 2 : 0)} ${unit})` }), svg, legend);
}

function renderCharts(routes: Json[], slots: Json[]): void {
  const now = performance.now() / 1000;
  for (const s of slots) {
    const m = s.last_minute;
    push("Requests per second", s.name, m.requests_per_s);
    push("Error rate", s.name, 100 * m.error_rate);
    if (m.requests) push("p95 latency", s.name, m.p95_ms);
  }
  const next = new Map<string, [number, number]>();
  for (const r of routes) {
    const ap = r.autopilot ?? {};
    const total = ap.fallbacks_total ?? 0;
    const prev = lastFallbacks.get(r.name);
    if (prev) push("Fallbacks per second", r.name, (total - prev[1]) / Math.max(0.001, now - prev[0]));
    next.set(r.name, [now, total]);
    if (ap.shadow?.face_samples) push("Shadow face F1", r.name, ap.shadow.face_f1);
    if (ap.shadow?.asr_samples) push("Shadow WER", r.name, 100 * ap.shadow.wer);
  }
  lastFallbacks = next;
  const units: Record<string, string> = {
    "Requests per second": "req/s",
    "Error rate": "%",
    "p95 latency": "ms",
    "Fallbacks per second": "/s",
    "Shadow face F1": "",
    "Shadow WER": "%",
  };
  $("#charts").replaceChildren(
    ...Object.keys(units)
      .filter((t) => series.has(t))
      .map((t) => drawChart(t, units[t], series.get(t) as Map<string, number[]>)),
  );
}

async function poll(): Promise<void> {
  const [{ routes }, { slots }] = await Promise.all([api("GET", "routes"), api("GET", "slots")]);
  renderRoutes(routes);
  renderSlots(slots);
  renderCharts(routes, slots);
}

function start(): void {
  setupLoad();
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $<HTMLInputElement>("#token");
    void signIn(input.value.trim());
    input.value = "";
  });
  $("#logout").addEventListener("click", () => signedOut("Signed out."));
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) void signIn(saved);
  // Without an admin token the gateway refuses every operator call: say so before anyone types.
  loadConfig()
    .then((c) => {
      if (!c.operator) {
        $("#login-error").textContent =
          "This gateway has no admin token, so its operator console is off. Set [admin] token_env (or token) and restart.";
        $<HTMLButtonElement>("#login-form button").disabled = true;
      }
    })
    .catch(() => undefined);
}

start();
