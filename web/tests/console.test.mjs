// The web console in a real browser (Debian's Chromium, driven by playwright-core) against a real
// gateway with real models. Started by `cargo test` (tests/e2e/console.rs), which runs the gateway
// and passes its addresses and fixtures in the environment; runnable alone with the same variables.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through cargo test --test e2e console)`);
  return v;
};
const BASE = env("CONSOLE_URL"); // http://127.0.0.1:PORT
const ADMIN = env("ADMIN_URL"); // the admin listener, to check state independently of the page
const TOKEN = env("ADMIN_TOKEN");
const SPEECH_TOKEN = env("SPEECH_TOKEN"); // the speech route has auth = "bearer"
const PHOTO = env("PHOTO");
const SPEECH = env("SPEECH_FILE");
const SPEECH_TEXT = env("SPEECH_TEXT");
const MIC_WAV = env("MIC_WAV");
const CALL = env("CALL_FILE"); // two speakers, one per channel, overlapping
const CALL_TEXTS = JSON.parse(env("CALL_TEXTS")); // the reference pipeline's text of each channel
const NEW_MODEL = env("NEW_FACE_MODEL");
const ARTIFACTS = env("ARTIFACTS");
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
let context;
let page;
let consoleErrors = [];
// Responses the test provokes on purpose (a wrong token) are logged by Chromium as resource errors.
let allowedErrors = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${MIC_WAV}`,
    ],
  });
  context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["microphone"], { origin: BASE });
  page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" && !allowedErrors.some((a) => m.text().includes(a))) consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
  page.on("dialog", (d) => d.accept());
});

after(async () => {
  await browser?.close();
});

function noConsoleErrors() {
  const errs = consoleErrors;
  consoleErrors = [];
  assert.deepEqual(errs, [], "browser console errors");
}

async function shot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function admin(path, init = {}) {
  const r = await fetch(`${ADMIN}/admin/${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers ?? {}) } });
  assert.equal(r.status, 200, `${path}: HTTP ${r.status}`);
  return r.json();
}

/** Every form control and button has an accessible name. */
async function labelled() {
  const unnamed = await page.locator("input:visible, select:visible, button:visible, a:visible").evaluateAll((els) =>
    els
      .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || el.textContent.trim()))
      .map((el) => el.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unnamed, [], "controls without a name");
}

/** Mean absolute RGB difference of two images inside and outside the boxes. */
async function difference(aBytes, bBytes, boxes) {
  return page.evaluate(
    async ({ a, b, boxes }) => {
      const load = async (b64) => {
        const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const bmp = await createImageBitmap(new Blob([bin]));
        const c = new OffscreenCanvas(bmp.width, bmp.height);
        const g = c.getContext("2d");
        g.drawImage(bmp, 0, 0);
        return g.getImageData(0, 0, bmp.width, bmp.height);
      };
      const [x, y] = [await load(a), await load(b)];
      if (x.width !== y.width || x.height !== y.height) return { size: false };
      let inSum = 0, inN = 0, outSum = 0, outN = 0;
      for (let py = 0; py < x.height; py += 2) {
        for (let px = 0; px < x.width; px += 2) {
          const i = 4 * (py * x.width + px);
          const d = (Math.abs(x.data[i] - y.data[i]) + Math.abs(x.data[i + 1] - y.data[i + 1]) + Math.abs(x.data[i + 2] - y.data[i + 2])) / 3;
          const inside = boxes.some(([x0, y0, x1, y1]) => px >= x0 && px < x1 && py >= y0 && py < y1);
          if (inside) { inSum += d; inN++; } else { outSum += d; outN++; }
        }
      }
      return { size: true, inside: inSum / inN, outside: outSum / outN };
    },
    { a: aBytes.toString("base64"), b: bBytes.toString("base64"), boxes },
  );
}

async function uploadPhoto() {
  const before = await page.locator("#face-results li").count();
  await page.setInputFiles("#face-files", PHOTO);
  const item = page.locator("#face-results li").first();
  await page.waitForFunction((n) => {
    const li = document.querySelectorAll("#face-results li");
    return li.length > n && li[0].dataset.state !== "pending";
  }, before);
  return item;
}

test("face privacy: a photo comes back anonymised with its face boxes, and downloads", async () => {
  await page.goto(`${BASE}/ui/`);
  await page.waitForSelector("#face:not([hidden])");
  await labelled();
  const item = await uploadPhoto();
  assert.equal(await item.getAttribute("data-state"), "done", await item.textContent());
  assert.equal(await item.getAttribute("data-faces"), "6");
  assert.equal(await item.locator("svg.boxes rect").count(), 6);
  assert.match(await item.locator(".status").textContent(), /6 faces · answered by faces-v1 \(version 1\.0\)/);
  await item.locator("img.anonymised").evaluate((img) => img.decode());
  await shot("face");

  const [download] = await Promise.all([page.waitForEvent("download"), item.getByRole("link", { name: /download/i }).click()]);
  assert.match(download.suggestedFilename(), /^t1-anonymised\.jpg$/);
  const saved = join(ARTIFACTS, download.suggestedFilename());
  await download.saveAs(saved);
  const boxes = await item.locator("svg.boxes rect").evaluateAll((rs) =>
    rs.map((r) => ["x", "y", "width", "height"].map((k) => Number(r.getAttribute(k)))).map(([x, y, w, h]) => [x, y, x + w, y + h]),
  );
  const d = await difference(readFileSync(PHOTO), readFileSync(saved), boxes);
  assert.ok(d.size, "the download has the photo's size");
  assert.ok(d.inside > 8 && d.inside > 3 * d.outside, `inside the boxes ${d.inside}, outside ${d.outside}`);
  noConsoleErrors();
});

test("try the new version: the switch sends this browser to the canary, persists, and turns off", async () => {
  await page.goto(`${BASE}/ui/#face`);
  const sw = page.getByRole("switch", { name: "Try the new version" });
  await sw.waitFor();
  assert.equal(await sw.isChecked(), false);
  // Keyboard: focus the switch and press Space.
  await sw.focus();
  await page.keyboard.press("Space");
  assert.equal(await sw.isChecked(), true);
  assert.match(await page.locator(".notice.on").textContent(), /new version \(faces-v2\)/);
  let item = await uploadPhoto();
  assert.equal(await item.getAttribute("data-slot"), "faces-v2");
  assert.match(await item.locator(".status").textContent(), /answered by faces-v2/);
  await shot("face-canary");
  await page.reload();
  await sw.waitFor();
  assert.equal(await sw.isChecked(), true, "the choice survives a reload");
  await sw.click();
  assert.equal(await sw.isChecked(), false);
  item = await uploadPhoto();
  assert.equal(await item.getAttribute("data-slot"), "faces-v1");
  noConsoleErrors();
});

/** Uploads a speech file (the LibriSpeech clip by default) and waits for its result card. */
async function uploadSpeech(file = SPEECH) {
  const before = await page.locator("#asr-results li").count();
  await page.setInputFiles("#asr-files", file);
  await page.waitForFunction((n) => {
    const li = document.querySelectorAll("#asr-results li");
    return li.length > n && li[0].dataset.state !== "pending";
  }, before, { timeout: 60000 });
  return page.locator("#asr-results li").first();
}

test("speech: an uploaded LibriSpeech clip gives the reference transcript and lands in the history", async () => {
  // The speech route needs a token: refused without one (the history too), served once it is typed in.
  allowedErrors = ["status of 401"];
  await page.goto(`${BASE}/ui/#speech`);
  await page.waitForSelector("#speech:not([hidden])");
  await labelled();
  await page.waitForFunction(() => /HTTP 401/.test(document.querySelector("#history-status")?.textContent ?? ""));
  let item = await uploadSpeech();
  assert.equal(await item.getAttribute("data-state"), "error");
  assert.match(await item.locator(".status").textContent(), /HTTP 401/);
  allowedErrors = [];
  await page.getByLabel("API token").fill(SPEECH_TOKEN);
  item = await uploadSpeech();
  assert.equal(await item.getAttribute("data-state"), "done", await item.textContent());
  assert.equal((await item.locator(".transcript").textContent()).trim(), SPEECH_TEXT);
  assert.equal(await item.locator("progress").evaluate((p) => p.value), 100);
  await page.fill("#history-q", "dishonoured bosom");
  await page.click("#history-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#history-status")?.textContent?.startsWith("1 recognition"));
  const row = await page.locator("#history tbody tr").first().textContent();
  assert.match(row, /DISHONOURED BOSOM/);
  assert.match(row, /1\.wav/, "the history names the uploaded file");
  // The CSV link fetches with the token and saves the file.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#history-csv")]);
  const csvFile = join(ARTIFACTS, "history.csv");
  await download.saveAs(csvFile);
  assert.match(readFileSync(csvFile, "utf8"), /DISHONOURED BOSOM/);
  await shot("speech");
  noConsoleErrors();
});

test("speech: a stereo call split by channel shows each speaker's lines in time order", async () => {
  await page.goto(`${BASE}/ui/#speech`);
  assert.equal(await page.getByLabel("API token").inputValue(), SPEECH_TOKEN);
  const split = page.getByLabel("One speaker per channel");
  await split.check();
  const item = await uploadSpeech(CALL);
  assert.equal(await item.getAttribute("data-state"), "done", await item.textContent());
  const turns = item.locator(".turn");
  const lines = await turns.evaluateAll((els) =>
    els.map((e) => ({ channel: e.dataset.channel, who: e.querySelector(".who").textContent, said: e.querySelector(".said").textContent })),
  );
  assert.deepEqual(lines.map((l) => l.channel), ["0", "1"], JSON.stringify(lines));
  assert.deepEqual(lines.map((l) => l.who), ["Channel 1", "Channel 2"]);
  assert.deepEqual(lines.map((l) => l.said), CALL_TEXTS);
  await shot("speech-call");
  await split.uncheck();
  noConsoleErrors();
});

test("speech: the microphone streams over the WebSocket with partial, then final text", async () => {
  await page.goto(`${BASE}/ui/#speech`);
  // The token typed in the previous test is still in this tab; the stream carries it in its URL.
  assert.equal(await page.getByLabel("API token").inputValue(), SPEECH_TOKEN);
  await page.click("#mic-start");
  await page.waitForFunction(() => (document.querySelector("#live-partial")?.textContent ?? "").trim().length > 0, null, { timeout: 30000 });
  const partial = await page.locator("#live-partial").textContent();
  await page.waitForFunction(() => /LAMPS/.test(document.querySelector("#live")?.textContent ?? ""), null, { timeout: 30000 });
  await page.click("#mic-stop");
  await page.waitForFunction(() => document.querySelector("#mic-state")?.textContent === "Stopped.", null, { timeout: 30000 });
  const final = await page.locator("#live-final").textContent();
  assert.ok(partial.length > 0, "a partial came first");
  assert.match(final, /YELLOW LAMPS/, `final: ${final}`);
  await shot("speech-live");
  noConsoleErrors();
});

test("operator: a wrong token is refused; weight, ramp and model loads act on the gateway", async () => {
  await page.goto(`${BASE}/ui/admin/`);
  await labelled();
  allowedErrors = ["status of 403", "status of 401"];
  await page.fill("#token", "not-the-token");
  await page.click("#login-form button");
  await page.waitForFunction(() => (document.querySelector("#login-error")?.textContent ?? "").includes("refused"));
  assert.equal(await page.locator("#ops").isHidden(), true);
  allowedErrors = [];
  assert.equal(await page.evaluate(() => sessionStorage.getItem("switchyard.adminToken")), null);

  await page.fill("#token", TOKEN);
  await page.click("#login-form button");
  await page.waitForSelector("#ops:not([hidden])");
  assert.ok(!page.url().includes(TOKEN), "the token is never in the URL");
  const card = page.locator('article[data-route="faces"]');
  await card.waitFor();

  await card.getByLabel("Canary weight (%)").fill("20");
  await card.getByRole("button", { name: "Set weight" }).click();
  await page.waitForFunction(() => /canary weight is now 20 %/.test(document.querySelector("#result")?.textContent ?? ""));
  assert.equal((await admin("routes/faces")).canary_weight, 20);

  await card.getByRole("button", { name: "Start ramp" }).click();
  await page.waitForFunction(() => /ramp start/.test(document.querySelector("#result")?.textContent ?? ""));
  let route = await admin("routes/faces");
  assert.deepEqual(route.autopilot.ramp.phase, { state: "running", step: 0 });
  assert.equal(route.canary_weight, 5);
  await card.getByRole("button", { name: "Abort ramp" }).click();
  await page.waitForFunction(() => /ramp abort/.test(document.querySelector("#result")?.textContent ?? ""));
  route = await admin("routes/faces");
  assert.deepEqual(route.autopilot.ramp.phase, { state: "aborted" });
  assert.equal(route.canary_weight, 0);
  await page.waitForFunction(() => document.querySelector('article[data-route="faces"]')?.dataset.ramp === "aborted");

  await page.selectOption("#load-slot", "faces-v2");
  await page.selectOption("#load-detector", "centerface");
  await page.fill("#load-model", NEW_MODEL);
  await page.fill("#load-version", "2.1");
  await page.click("#load-form button[type=submit]");
  await page.waitForFunction(() => /faces-v2: now serving version 2\.1/.test(document.querySelector("#result")?.textContent ?? ""), null, { timeout: 30000 });
  const { slots } = await admin("slots");
  assert.equal(slots.find((s) => s.name === "faces-v2").version, "2.1");
  await page.waitForFunction(() => document.querySelector('#slots tr[data-slot="faces-v2"] .version')?.textContent === "2.1");
  await page.waitForSelector("#charts figure");
  await shot("operator");
  noConsoleErrors();
});

test("phone width: pages fit the screen without horizontal scrolling", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, url] of [
    ["phone-face", "/ui/#face"],
    ["phone-speech", "/ui/#speech"],
    ["phone-operator", "/ui/admin/"],
  ]) {
    await page.goto(`${BASE}${url}`);
    await page.waitForLoadState("networkidle");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${name} is ${overflow} px wider than the screen`);
    await shot(name);
  }
  writeFileSync(join(ARTIFACTS, "README.txt"), "Screenshots of the console taken by web/tests/console.test.mjs.\n");
  noConsoleErrors();
});
