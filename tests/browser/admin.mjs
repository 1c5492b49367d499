// Drives the admin UI (/admin/) in a real browser — Debian's chromium through playwright-core —
// against a running faaswap server whose model repository holds tiny_gpt2 and tiny_bert:
// devices shown, deploys through the form, invoke, the swap-in seen in the event feed and the
// memory map, an SLO edit, a streamed generation with the reference tokens.
//
//   node tests/browser/admin.mjs <server-url> <screenshot-path>
//
// Env: CHROMIUM (default /usr/bin/chromium), FAASWAP_TOKEN (typed into the token dialog if the
// page asks for one), FAASWAP_UI_FUNCTION (function name to deploy, default gpt2-ui).
// Exits 0 on success; on failure prints why, saves a screenshot anyway and exits 1.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node tests/browser/admin.mjs <server-url> <screenshot-path>');
  process.exit(2);
}
const base = url.replace(/\/+$/, '');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const token = process.env.FAASWAP_TOKEN || '';
const fn = process.env.FAASWAP_UI_FUNCTION || 'gpt2-ui';
const WAIT_MS = 15_000;
// tiny_gpt2's greedy continuation of [310, 37, 23] (../shared/fixtures/tiny_gpt2/reference.json).
const PROMPT = '310,37,23';
const EXPECTED_IDS = [193, 193, 347, 347, 347, 347, 347, 412];

async function step(name, body) {
  const started = Date.now();
  console.log(`-- ${name}`);
  await body();
  console.log(`   ok (${Date.now() - started} ms)`);
}

/** Polls `check` until it returns a truthy value; `describe` says what was last seen. */
async function until(what, check, describe = async () => '') {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await check().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) {
      const seen = await describe().catch((e) => String(e));
      throw new Error(`timed out after ${WAIT_MS / 1000} s waiting for ${what}${seen ? `; seen: ${seen}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

if (!existsSync(executablePath)) {
  console.error(`FAIL: no chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(1);
}

const headers = token ? { Authorization: `Bearer ${token}` } : {};
const devicesRes = await fetch(`${base}/api/v1/devices`, { headers });
if (!devicesRes.ok) {
  console.error(`FAIL: GET /api/v1/devices answered ${devicesRes.status}: ${await devicesRes.text()}`);
  process.exit(1);
}
const devices = await devicesRes.json();

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const problems = []; // uncaught errors and CSP violations in the page fail the run
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) problems.push(`console: ${m.text()}`);
});
const text = (selector) => page.locator(selector).first().innerText({ timeout: 1000 });
const row = page.getByTestId(`function-row-${fn}`);
const bertFn = 'bert-ui';
const bertRow = page.getByTestId(`function-row-${bertFn}`);

let failed = null;
try {
  await step(`open ${base}/admin/`, async () => {
    const res = await page.goto(`${base}/admin/`);
    if (!res || !res.ok()) throw new Error(`/admin/ answered ${res && res.status()}`);
    await page.locator('#token-dialog[open], #devices .device').first().waitFor({ timeout: WAIT_MS });
  });

  if (await page.locator('#token-dialog[open]').isVisible()) {
    await step('enter the API token', async () => {
      if (!token) throw new Error('the page asks for an API token: set FAASWAP_TOKEN');
      await page.fill('#token-input', token);
      await page.click('#token-save');
      await page.locator('#devices .device').first().waitFor({ timeout: WAIT_MS });
    });
  }

  await step(`devices shown: ${devices.map((d) => `${d.id} (${d.kind})`).join(', ')}`, async () => {
    for (const d of devices) {
      const card = page.getByTestId(`device-${d.id}`);
      await until(`device ${d.id} with kind ${d.kind}`, async () => {
        const t = await card.innerText({ timeout: 1000 });
        return t.includes(d.id) && t.includes(d.kind);
      }, () => text('#devices'));
    }
  });

  await step(`deploy tiny_gpt2 as ${fn} through the deploy form`, async () => {
    await page.locator('#deploy-model option[value="tiny_gpt2"]').waitFor({ state: 'attached', timeout: WAIT_MS });
    await page.selectOption('#deploy-model', 'tiny_gpt2');
    await page.fill('#deploy-name', fn);
    await page.click('#deploy-submit');
    await until(`${fn} in the functions table`, async () => {
      const t = await row.innerText({ timeout: 1000 });
      return t.includes(fn) && t.includes('tiny_gpt2');
    }, () => text('#deploy-status'));
  });

  await step(`invoke ${fn}; a swap_in event and the residency change`, async () => {
    await page.getByTestId(`invoke-${fn}`).click();
    await until('the invoke result', async () => (await text('#invoke-result')).includes(`${fn} →`),
      () => text('#invoke-result'));
    console.log(`   ${await text('#invoke-result')}`);
    const swap = page.locator(`#events li[data-type="swap_in"][data-function="${fn}"]`).first();
    await swap.waitFor({ timeout: WAIT_MS });
    console.log(`   event: ${(await swap.innerText()).replace(/\s+/g, ' ')}`);
    await until(`${fn} resident on a device in the table`, async () => {
      const t = await page.getByTestId(`resident-${fn}`).innerText({ timeout: 1000 });
      return devices.some((d) => t.includes(d.id));
    }, () => page.getByTestId(`resident-${fn}`).innerText());
    await until(`${fn} in a device's memory map`, async () =>
      page.locator(`#devices .device [data-function="${fn}"]`).first().isVisible(), () => text('#devices'));
  });

  await step(`deploy tiny_bert as ${bertFn} with a 200 ms SLO and invoke it`, async () => {
    await page.selectOption('#deploy-model', 'tiny_bert');
    await page.fill('#deploy-name', bertFn);
    await page.fill('#deploy-slo', '200');
    await page.click('#deploy-submit');
    await until(`${bertFn} in the functions table with its SLO`, async () =>
      (await bertRow.innerText({ timeout: 1000 })).includes('200 ms'), () => text('#deploy-status'));
    await page.getByTestId(`invoke-${bertFn}`).click();
    await until('the invoke result', async () => (await text('#invoke-result')).includes(`${bertFn} →`),
      () => text('#invoke-result'));
    console.log(`   ${await text('#invoke-result')}`);
  });

  await step(`edit ${fn}'s SLO to 750 ms`, async () => {
    await page.getByTestId(`settings-${fn}`).click();
    await page.fill('#settings-slo-ms', '750');
    await page.click('#settings-save');
    await until('the new deadline in the table', async () => (await row.innerText({ timeout: 1000 })).includes('750 ms'),
      () => row.innerText());
  });

  await step(`generate 8 tokens from ${PROMPT} in the playground`, async () => {
    await page.selectOption('#gen-function', fn);
    await page.selectOption('#gen-mode', 'ids');
    await page.fill('#gen-prompt', PROMPT);
    await page.fill('#gen-max-tokens', '8');
    await page.fill('#gen-temperature', '0');
    await page.check('#gen-ignore-eos');
    await page.click('#gen-start');
    const tokens = page.locator('#gen-output .tok');
    await until('8 streamed tokens and the done timings', async () =>
      (await tokens.count()) === 8 && (await text('#gen-timings')).includes('first token'),
    async () => `${await tokens.count()} tokens; ${await text('#gen-timings')}`);
    const ids = (await tokens.evaluateAll((ts) => ts.map((t) => Number(t.dataset.id))));
    console.log(`   ids ${JSON.stringify(ids)}; ${await text('#gen-timings')}`);
    if (JSON.stringify(ids) !== JSON.stringify(EXPECTED_IDS)) {
      throw new Error(`streamed ids ${JSON.stringify(ids)}, expected ${JSON.stringify(EXPECTED_IDS)}`);
    }
  });

  if (problems.length) throw new Error(problems.join('\n'));
} catch (e) {
  failed = e;
}

try {
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`-- screenshot: ${screenshot}`);
} catch (e) {
  console.error(`could not save the screenshot: ${e.message}`);
}
await browser.close();
if (failed) {
  console.error(`FAIL: ${failed.message}`);
  process.exit(1);
}
console.log('PASS: admin UI');
