// Helpers shared by the public and the operator pages.

/** A route as `/ui/api/config` describes it. */
export interface RouteInfo {
  name: string;
  path: string;
  kind: string;
  stable: string;
  canary: string | null;
  canary_weight: number;
  auth: string;
  try: { cookie: string; value: string } | null;
}

/** `/ui/api/config`. */
export interface ConsoleConfig {
  version: string;
  routes: RouteInfo[];
  operator: boolean;
}

/** `document.querySelector` that fails loudly when the page lacks the element. */
export function $<T extends Element = HTMLElement>(sel: string, root: ParentNode = document): T {
  const el = root.querySelector<T>(sel);
  if (!el) throw new Error(`missing element ${sel}`);
  return el;
}

/** Creates an element with attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | number | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

/** The error message of a gateway JSON error body, or the status text. */
export async function errorOf(resp: Response): Promise<string> {
  try {
    const body = await resp.json();
    const e = body?.error;
    if (e?.problems) return `${e.message ?? e.code}: ${e.problems.join("; ")}`;
    if (e?.message) return `${e.message} (${e.code}, HTTP ${resp.status})`;
  } catch {
    /* not JSON */
  }
  return `HTTP ${resp.status} ${resp.statusText}`;
}

export async function loadConfig(): Promise<ConsoleConfig> {
  const r = await fetch("/ui/api/config", { cache: "no-store" });
  if (!r.ok) throw new Error(await errorOf(r));
  return r.json();
}

export function cookie(name: string): string | null {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

export function setCookie(name: string, value: string | null): void {
  const base = `${name}=${value === null ? "" : encodeURIComponent(value)}; Path=/; SameSite=Lax`;
  document.cookie = value === null ? `${base}; Max-Age=0` : `${base}; Max-Age=${180 * 24 * 3600}`;
}

export function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}
