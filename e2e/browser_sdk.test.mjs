// The official browser SDK (@amplitude/analytics-browser, its bundled script from npm), on a
// page served from another origin, sends its events to lethe with every transport it has:
// `fetch` (the default) and `xhr` preflight their JSON POSTs, `beacon` does not; identify,
// groupIdentify and revenue arrive too.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportEvents, launchBrowser, startServer, stopServer } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SDK = readFileSync(join(here, 'node_modules/@amplitude/analytics-browser/lib/scripts/amplitude-min.js'));

let server;
let site;
let browser;

/** A web site on another origin (`localhost`, its own port): one page loading the SDK. */
function startSite() {
  const http = createServer((req, res) => {
    if (req.url === '/amplitude.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(SDK);
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>shop</title><script src="/amplitude.js"></script>');
  });
  return new Promise((resolve) => http.listen(0, '127.0.0.1', () => resolve(http)));
}

before(async () => {
  server = await startServer();
  site = await startSite();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.close();
  stopServer(server);
});

test('the browser SDK stores its events from another origin with fetch, xhr and beacon, and its identify, groupIdentify and revenue', async () => {
  const context = await browser.newContext();
  // Nothing leaves the machine: whatever the SDK would fetch elsewhere (remote configuration)
  // is refused here.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return ['127.0.0.1', 'localhost'].includes(host) ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  const refused = [];
  page.on('console', (m) => { if (/CORS|Access-Control/i.test(m.text())) refused.push(m.text()); });
  await page.goto(`http://localhost:${site.address().port}/`);
  for (const transport of ['fetch', 'xhr', 'beacon']) {
    const code = await page.evaluate(async ({ apiKey, serverUrl, transport }) => {
      const client = window.amplitude.createInstance();
      await client.init(apiKey, `browser-user-${transport}`, {
        serverUrl, transport, flushQueueSize: 1, flushIntervalMillis: 50, autocapture: false,
        fetchRemoteConfig: false,
      }).promise;
      const result = await client.track(`Web ${transport}`, { transport }).promise;
      return result.code;
    }, { apiKey: server.apiKey, serverUrl: `${server.url}/2/httpapi`, transport });
    assert.equal(code, 200, `${transport}: ${refused.join('; ')}`);
  }
  // identify, groupIdentify and revenue go the same way (fetch), and so does a grouped event.
  const codes = await page.evaluate(async ({ apiKey, serverUrl }) => {
    const a = window.amplitude;
    const client = a.createInstance();
    await client.init(apiKey, 'browser-user-calls', {
      serverUrl, flushQueueSize: 1, flushIntervalMillis: 50, autocapture: false, fetchRemoteConfig: false,
    }).promise;
    return [
      (await client.identify(new a.Identify().set('plan', 'pro')).promise).code,
      (await client.groupIdentify('org', 'acme', new a.Identify().set('seats', 5)).promise).code,
      (await client.revenue(new a.Revenue().setProductId('sku-1').setPrice(3.5).setQuantity(2)).promise).code,
      (await client.track({ event_type: 'Web grouped', groups: { org: 'acme' } }).promise).code,
    ];
  }, { apiKey: server.apiKey, serverUrl: `${server.url}/2/httpapi` });
  assert.deepEqual(codes, [200, 200, 200, 200], refused.join('; '));
  assert.deepEqual(refused, [], 'no CORS refusal in the console');
  const deadline = Date.now() + 10_000;
  let events = [];
  while (Date.now() < deadline) {
    events = await exportEvents(server);
    if (events.length >= 6) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(events.map((e) => e.event_type).sort(),
    ['$identify', 'Web beacon', 'Web fetch', 'Web grouped', 'Web xhr', 'revenue_amount']);
  const grouped = events.find((e) => e.event_type === 'Web grouped');
  assert.deepEqual(grouped.user_properties.plan, 'pro');
  assert.deepEqual(grouped.group_properties, { org: { acme: { seats: 5 } } });
  const revenue = events.find((e) => e.event_type === 'revenue_amount').event_properties;
  assert.equal(revenue.$price, 3.5);
  assert.equal(revenue.$quantity, 2);
  const agent = await page.evaluate(() => navigator.userAgent);
  for (const e of events) {
    assert.equal(e.ip_address, '127.0.0.1', 'the client address, filled in by the server');
    assert.equal(e.user_agent, agent, "the page's user agent");
  }
});
