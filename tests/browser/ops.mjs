// Drives the operations page in headless chromium for tests/e2e/ops_page.rs.
//
//   node tests/browser/ops.mjs <edge base URL, http://127.0.0.1:PORT>
//
// Environment: LOGI_PLAYWRIGHT_CORE (the playwright-core folder that
// .ci/tools/chromium installs) and LOGI_CHROMIUM (the browser to launch; never
// playwright's own download).
//
// The Rust test sends one command a line on stdin; each is answered with one
// line on stdout, "ok <what was seen>". Any check that fails prints why on
// stderr and exits 1. Commands:
//   refused <token> <text>    a page opened with this token asks for another, saying <text>
//   open <token>              the main page connects with this token
//   expect <json>             the main page shows these drivers, bookings and counters
//   reconnecting              the main page says it is reconnecting, with a countdown
//   live                      the main page is connected (again)
//   expiring <token>          a page with this short-lived token is told when it expires
//   screenshot <path>         the main page, as a PNG
//   quit
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const PATIENCE_MS = 10_000;
const base = process.argv[2];
const require = createRequire(join(process.env.LOGI_PLAYWRIGHT_CORE, 'package.json'));
const { chromium } = require('playwright-core');

function fail(message) {
  process.stderr.write(`ops.mjs: ${message}\n`);
  process.exit(1);
}

const browser = await chromium
  .launch({ executablePath: process.env.LOGI_CHROMIUM, args: ['--no-sandbox'] })
  .catch((e) => fail(`chromium at ${process.env.LOGI_CHROMIUM} does not start: ${e.message}`));
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
const consoleErrors = [];
context.on('weberror', (e) => consoleErrors.push(String(e.error())));
let main = null;

const pageUrl = (token) => `${base}/ops/#token=${encodeURIComponent(token)}`;

// Polls `probe` in the page until `ok(value)`; fails with the last value.
async function until(page, what, probe, ok, arg) {
  const deadline = Date.now() + PATIENCE_MS;
  let last;
  for (;;) {
    last = await page.evaluate(probe, arg);
    if (ok(last)) return last;
    if (Date.now() > deadline) fail(`${what}: not within ${PATIENCE_MS / 1000} s; the page shows ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const signinText = () => ({
  visible: !document.getElementById('signin').hidden,
  message: document.getElementById('signin-message').textContent,
  connection: document.body.dataset.connection,
});
const connectionText = () => ({
  state: document.body.dataset.connection,
  pill: document.getElementById('connection').textContent,
});

// What the main page shows of the drivers, bookings and counters named in
// `want`, as a person would read it (counters' text, the table's cells) and as
// drawn (the canvas pixel at each driver's point).
function shown(want) {
  const state = window.opsState();
  const drivers = {};
  const canvas = document.getElementById('map');
  const ctx = canvas.getContext('2d');
  const dpr = window.devicePixelRatio || 1;
  for (const id of Object.keys(want.drivers)) {
    const d = state.drivers[id];
    if (!d) continue;
    let pixel = null;
    if (d.point) {
      const [r, g, b] = ctx.getImageData(Math.round(d.point[0] * dpr), Math.round(d.point[1] * dpr), 1, 1).data;
      pixel = `#${[r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
    }
    drivers[id] = { status: d.status, latitude: d.latitude, longitude: d.longitude, plotted: d.point !== null, pixel };
  }
  const bookings = {};
  for (const id of Object.keys(want.bookings)) {
    const row = document.querySelector(`#bookings tr[data-booking="${id}"]`);
    bookings[id] = row ? { status: row.cells[1].textContent, history: row.cells[3].textContent } : null;
  }
  const counters = {};
  for (const el of document.querySelectorAll('[data-drivers], [data-bookings]')) {
    counters[el.dataset.drivers || el.dataset.bookings] = el.textContent;
  }
  const css = getComputedStyle(document.documentElement);
  const colours = {
    Available: css.getPropertyValue('--available').trim(),
    'On Trip': css.getPropertyValue('--on-trip').trim(),
    Offline: css.getPropertyValue('--offline').trim(),
  };
  const events = [...document.querySelectorAll('#events li span')].map((s) => s.textContent);
  return { connection: state.connection, drivers, bookings, counters, colours, events };
}

function matches(want, got) {
  for (const [id, d] of Object.entries(want.drivers)) {
    const g = got.drivers[id];
    if (!g || g.status !== d.status || !g.plotted || g.pixel !== got.colours[d.status]) return false;
    if (Math.abs(g.latitude - d.latitude) > 1e-9 || Math.abs(g.longitude - d.longitude) > 1e-9) return false;
  }
  for (const [id, history] of Object.entries(want.bookings)) {
    const g = got.bookings[id];
    if (!g || g.status !== history[history.length - 1] || g.history !== history.join(' → ')) return false;
  }
  for (const [name, value] of Object.entries(want.counters)) {
    if (got.counters[name] !== String(value)) return false;
  }
  return want.events.every((e) => got.events.includes(e));
}

const commands = {
  async refused(rest) {
    const [token, expected] = [rest.slice(0, rest.indexOf(' ')), rest.slice(rest.indexOf(' ') + 1)];
    const page = await context.newPage();
    await page.goto(pageUrl(token));
    const seen = await until(page, `a refused token saying "${expected}"`, signinText, (s) => s.visible && s.message.includes(expected));
    const address = page.url();
    if (address.includes('token')) fail(`the page kept the token in its address: ${address}`);
    await page.close();
    return seen.message;
  },
  async open(token) {
    main = await context.newPage();
    await main.goto(pageUrl(token));
    await until(main, 'connecting', connectionText, (c) => c.state === 'live');
    return 'live';
  },
  async expect(json) {
    const want = JSON.parse(json);
    const got = await until(main, 'the expected drivers, bookings and counters', shown, (g) => matches(want, g), want);
    return JSON.stringify({ drivers: got.drivers, bookings: got.bookings, counters: got.counters });
  },
  async reconnecting() {
    const c = await until(main, 'saying it reconnects', connectionText, (c) => c.state === 'reconnecting' && /^Reconnecting in \d+ s…/.test(c.pill));
    return c.pill;
  },
  async live() {
    await until(main, 'reconnecting', connectionText, (c) => c.state === 'live');
    return 'live';
  },
  async expiring(token) {
    const page = await context.newPage();
    await page.goto(pageUrl(token));
    await until(page, 'connecting with the short-lived token', connectionText, (c) => c.state === 'live');
    const seen = await until(page, 'telling that the token expired', signinText, (s) => s.visible && s.message.includes('expired while connected'));
    await page.close();
    return seen.message;
  },
  async screenshot(path) {
    // Highlights of rows that just changed are finished first.
    await main.screenshot({ path, animations: 'disabled' });
    return path;
  },
  async quit() {
    await browser.close();
    if (consoleErrors.length) fail(`the page threw: ${consoleErrors.join('; ')}`);
    process.exit(0);
  },
};

console.log('ok started');
for await (const line of createInterface({ input: process.stdin })) {
  const space = line.indexOf(' ');
  const [name, rest] = space < 0 ? [line, ''] : [line.slice(0, space), line.slice(space + 1)];
  const command = commands[name];
  if (!command) fail(`unknown command ${name}`);
  try {
    const seen = await command(rest);
    if (consoleErrors.length) fail(`the page threw: ${consoleErrors.join('; ')}`);
    console.log(`ok ${seen}`);
  } catch (e) {
    fail(`${name}: ${e.message}`);
  }
}
await browser.close();
