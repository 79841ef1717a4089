// Drives Debian's headless chromium for tests/dashboard.rs, one JSON command per line on stdin and
// one JSON answer per line on stdout:
//   {"open": URL}                      load the page, recording console errors and every request
//   {"wait": JS, "timeout_ms": N}      until JS (an expression) is truthy; answers its value
//   {"eval": JS}                       the value of JS
//   {"shot": PATH}                     a full-page screenshot
//   {"report": true}                   console errors, requests made, bytes of the dashboard's files
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const executablePath = process.env.AIFN_CHROMIUM || "/usr/bin/chromium";
let browser, page, openedAt;
const consoleErrors = [];
const requests = [];
const sizes = new Map();

async function open(url) {
  browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("request", (r) => requests.push(r.url()));
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname.startsWith("/dashboard")) {
      try { sizes.set(r.url(), (await r.body()).length); } catch { /* a redirect has no body */ }
    }
  });
  openedAt = Date.now();
  await page.goto(url, { waitUntil: "load" });
  return { loaded_ms: Date.now() - openedAt };
}

async function run(command) {
  if (command.open) return open(command.open);
  if (command.wait) {
    // Polled from here: the page's content security policy forbids the eval that
    // page.waitForFunction would need, and DevTools evaluation is not subject to it.
    const deadline = Date.now() + (command.timeout_ms || 30000);
    for (;;) {
      const value = await page.evaluate(command.wait);
      if (value) return { value, since_open_ms: Date.now() - openedAt };
      if (Date.now() > deadline) throw new Error(`not true within ${command.timeout_ms} ms: ${command.wait}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  if (command.eval) return { value: await page.evaluate(command.eval) };
  if (command.shot) {
    await page.screenshot({ path: command.shot, fullPage: true });
    return {};
  }
  if (command.report) {
    let bytes = 0;
    for (const n of sizes.values()) bytes += n;
    return { console_errors: consoleErrors, requests, dashboard_bytes: bytes };
  }
  throw new Error("unknown command " + JSON.stringify(command));
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = { ok: true, ...(await run(JSON.parse(line))) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
if (browser) await browser.close();
