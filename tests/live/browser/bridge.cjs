// One headless Chromium (the system's, never a downloaded one) driven by puppeteer-core, for
// the Python tests: one JSON command per stdin line, one JSON answer per stdout line.
//   {"id", "op": "launch", "executable", "wav"?}  {"id", "op": "goto", "url"}
//   {"id", "op": "newPage"}  (the page closed, a new one in a fresh context: no cache, no storage)
//   {"id", "op": "eval", "js"}  (an expression; promises are awaited)
//   {"id", "op": "click"|"focus", "selector"}  {"id", "op": "type", "selector", "text"}
//   {"id", "op": "press", "key"}  {"id", "op": "screenshot", "path", "width", "height"}
//   {"id", "op": "close"}
// Answers: {"id", "ok": true, "value"} or {"id", "ok": false, "error"}; console lines of the
// page as {"console": text}.
const path = require("node:path");
const readline = require("node:readline");
const puppeteer = require(path.join(__dirname, "../../../workers/web/client/node_modules/puppeteer-core"));

let browser = null;
let page = null;
let context = null; // newPage's, closed with its page

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function watch(p) {
  page = p;
  page.on("console", (m) => send({ console: m.text() }));
  page.on("pageerror", (e) => send({ console: `pageerror: ${e.message}` }));
}

const ops = {
  async launch({ executable, wav }) {
    const args = [
      "--no-sandbox", // the tests run as root in a namespace of their own
      "--autoplay-policy=no-user-gesture-required",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
    ];
    if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}%noloop`);
    browser = await puppeteer.launch({ executablePath: executable, headless: true, args });
    watch(await browser.newPage());
    return (await browser.version());
  },
  async newPage() {
    await page.close();
    if (context) await context.close();
    context = await browser.createBrowserContext();
    watch(await context.newPage());
  },
  async goto({ url }) {
    await page.goto(url, { waitUntil: "load" });
  },
  async eval({ js }) {
    return await page.evaluate(js);
  },
  async click({ selector }) {
    await page.click(selector);
  },
  async focus({ selector }) {
    await page.focus(selector);
  },
  async type({ selector, text }) {
    await page.type(selector, text);
  },
  async press({ key }) {
    await page.keyboard.press(key);
  },
  async screenshot({ path: file, width, height }) {
    await page.setViewport({ width, height });
    await page.screenshot({ path: file, fullPage: true });
  },
  async close() {
    if (browser) await browser.close();
    browser = null;
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
    const value = await ops[cmd.op](cmd);
    send({ id: cmd.id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    send({ id: cmd?.id, ok: false, error: String(e && e.stack ? e.stack : e) });
  }
});
lines.on("close", async () => {
  if (browser) await browser.close();
  process.exit(0);
});
