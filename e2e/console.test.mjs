// End-to-end tests of the web console: the real `lethe` binary on an ephemeral port, driven
// in headless Chromium (Debian's /usr/bin/chromium) through playwright-core. Screenshots go
// to e2e/artifacts/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { ADMIN, ARTIFACTS, exportEvents, launchBrowser, startServer, stopServer } from './harness.mjs';

const MEMBER = { email: 'member@example.com', password: 'member password 1' };

let server;
let browser;

async function post(path, body, headers = {}) {
  const r = await fetch(server.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: r.status, data: await r.json().catch(() => null) };
}

async function token() {
  const r = await post('/api/v1/auth/login', ADMIN);
  return r.data.token;
}

/** Test data: events to delete, a property to remove on one type only, and data to keep. */
async function seed() {
  const events = [];
  for (let i = 0; i < 30; i++) events.push({ event_type: 'Bad Test Event', user_id: `e2e-user-${i % 5}`, event_properties: { run: i } });
  for (let i = 0; i < 20; i++) events.push({ event_type: 'Purchase', user_id: `e2e-user-${i % 5}`, event_properties: { email: `buyer${i}@example.com`, amount: i } });
  for (let i = 0; i < 10; i++) events.push({ event_type: 'Page View', user_id: `e2e-user-${i % 5}`, event_properties: { email: `reader${i}@example.com` } });
  const r = await post('/2/httpapi', { api_key: server.apiKey, events });
  assert.equal(r.status, 200);
}

async function signIn(page, who) {
  await page.goto(server.url + '/');
  await page.waitForURL(/\/signin/);
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Deletion tasks' }).waitFor();
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  return context.newPage();
}

/** Checks one name in a clause's picker (searching first, as a user would). */
async function pick(clause, pickerLabel, name) {
  const picker = clause.locator('.picker').filter({ has: clause.page().getByLabel(pickerLabel, { exact: true }) });
  await picker.getByRole('searchbox').fill(name.slice(0, 4));
  await picker.getByRole('checkbox', { name }).check();
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startServer();
  await seed();
  browser = await launchBrowser();
  await new Promise((r) => setTimeout(r, 1100)); // the wizard's end time (to the second) is after the seed
});

after(async () => {
  await browser?.close();
  stopServer(server);
});

test('an admin builds, verifies and submits a two-clause task; it completes and the data is gone', async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.getByRole('link', { name: 'Organization settings' }).click();
  await page.getByRole('heading', { name: 'Self Service Data Deletion' }).waitFor();
  await page.getByRole('link', { name: 'New Deletion Task' }).click();

  const name = 'Remove test events and buyer emails';
  await page.getByLabel('Task name').fill(name);
  // To the minute: Chromium renders a datetime-local value with ":00" seconds without them,
  // and Playwright refuses a fill that does not read back as typed (a flaky failure once a
  // minute).
  const yesterday = new Date(Date.now() - 86400000).toISOString().slice(0, 16);
  await page.getByLabel('Start (UTC)').fill(yesterday);
  await page.getByText('The end cannot be later than now').waitFor();

  // Inline validation: no clause yet.
  await page.getByRole('button', { name: 'Next' }).click();
  await page.locator('#clauses-error').filter({ hasText: 'clause' }).waitFor();

  await page.getByRole('button', { name: 'Add events or properties' }).click();
  const first = page.locator('fieldset[data-clause="0"]');
  await pick(first, 'Events to delete (with all their properties)', 'Bad Test Event');
  await page.getByRole('button', { name: 'Add events or properties' }).click();
  const second = page.locator('fieldset[data-clause="1"]');
  await second.getByLabel('Type of data').selectOption('event_property');
  await pick(second, 'Event properties to remove', 'email');
  await second.getByRole('radio', { name: 'Specific events' }).check();
  await pick(second, 'Only on these events', 'Purchase');

  const [previewRequest] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith('/deletion-tasks/preview')),
    page.getByRole('button', { name: 'Next' }).click(),
  ]);
  const table = page.locator('#verify-counts');
  await table.waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'wizard-verification.png'), fullPage: true });

  // The screen shows exactly the API's preview of the same task.
  const api = await post(`/api/v1/projects/${server.projectId}/deletion-tasks/preview`, JSON.parse(previewRequest.postData()),
    { authorization: `Bearer ${await token()}` });
  assert.equal(api.status, 200);
  const cells = async (row) => (await table.locator('tbody tr').nth(row).locator('td').allTextContents()).map((t) => Number(t.replaceAll(',', '')));
  const expect = (c) => [c.events_deleted, c.event_property_values_removed, c.user_property_values_removed, c.group_property_values_removed];
  assert.deepEqual(await cells(0), expect(api.data.clauses[0]));
  assert.deepEqual(await cells(1), expect(api.data.clauses[1]));
  assert.deepEqual(await cells(2), expect(api.data.totals));
  assert.deepEqual(expect(api.data.totals), [30, 20, 0, 0]);

  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByText('This cannot be undone or cancelled.').waitFor();
  const del = page.getByRole('button', { name: 'Delete' });
  assert.equal(await del.isDisabled(), true);
  await page.getByLabel('Type the task name to confirm').fill(name.slice(0, -1));
  assert.equal(await del.isDisabled(), true);
  await page.getByLabel('Type the task name to confirm').fill(name);
  await del.click();

  await page.waitForURL(server.url + '/');
  const row = page.locator('tr', { hasText: name });
  await row.getByText('completed').waitFor({ timeout: 30000 });
  await row.getByText('30 events deleted').waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'home.png'), fullPage: true });

  // The audit log shows the submission and the completion, without values.
  await page.getByRole('link', { name: 'Organization settings' }).click();
  await page.getByRole('link', { name: 'Audit log' }).click();
  const auditTable = page.getByRole('table', { name: 'Audit log' });
  await auditTable.getByText('task.completed').waitFor();
  await auditTable.getByText('task.submitted').waitFor();
  assert.equal(await auditTable.getByText('buyer1@example.com').count(), 0);

  const events = await exportEvents(server);
  assert.equal(events.filter((e) => e.event_type === 'Bad Test Event').length, 0);
  const purchases = events.filter((e) => e.event_type === 'Purchase');
  assert.equal(purchases.length, 20);
  assert.ok(purchases.every((e) => e.event_properties.email === undefined && e.event_properties.amount !== undefined));
  assert.equal(events.filter((e) => e.event_type === 'Page View' && e.event_properties.email).length, 10);
});

test('an admin deletes by value: only the events whose property matches, and blocking is not offered', async () => {
  const events = [];
  for (let i = 0; i < 16; i++) events.push({ event_type: 'Trial Started', user_id: `e2e-user-${i % 5}`, event_properties: { plan: i % 4 === 0 ? 'Internal QA' : 'pro' } });
  assert.equal((await post('/2/httpapi', { api_key: server.apiKey, events })).status, 200);
  await new Promise((r) => setTimeout(r, 1100)); // before the wizard's end time
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(server.url + '/settings/deletion/new');
  const name = 'Remove internal QA trials';
  await page.getByLabel('Task name').fill(name);
  await page.getByLabel('Start (UTC)').fill(new Date(Date.now() - 86400000).toISOString().slice(0, 16));
  await page.getByRole('button', { name: 'Add events or properties' }).click();
  const clause = page.locator('fieldset[data-clause="0"]');
  await pick(clause, 'Events to delete (with all their properties)', 'Trial Started');
  await clause.getByLabel('Only where a property has a value').check();
  await clause.getByLabel('Property kind').selectOption('event');
  await clause.getByLabel('Property', { exact: true }).selectOption('plan');
  await clause.getByLabel('Operator').selectOption('contains');
  await clause.getByLabel('Values, one per line (any of them)').fill('internal qa');
  await page.getByRole('button', { name: 'Next' }).click();
  const table = page.locator('#verify-counts');
  await table.waitFor();
  const first = (await table.locator('tbody tr').nth(0).locator('td').allTextContents()).map((t) => Number(t.replaceAll(',', '')));
  assert.deepEqual(first, [4, 0, 0, 0], 'contains ignores case, as Amplitude’s does');
  await table.getByText('where event property plan contains "internal qa"').waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'wizard-where.png'), fullPage: true });
  await page.getByRole('button', { name: 'Next' }).click();
  assert.equal(await page.locator('#keep-blocking').isDisabled(), true);
  await page.getByLabel('Type the task name to confirm').fill(name);
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(server.url + '/');
  const row = page.locator('tr', { hasText: name });
  await row.getByText('completed').waitFor({ timeout: 30000 });
  await row.getByText('(1 value(s), redacted)').waitFor();
  const left = (await exportEvents(server)).filter((e) => e.event_type === 'Trial Started');
  assert.equal(left.length, 12);
  assert.ok(left.every((e) => e.event_properties.plan === 'pro'));
});

test('a task holds at most five clauses: the add button disables at five', async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(server.url + '/settings/deletion/new');
  const add = page.getByRole('button', { name: 'Add events or properties' });
  for (let i = 0; i < 5; i++) await add.click();
  assert.equal(await page.locator('fieldset[data-clause]').count(), 5);
  assert.equal(await add.isDisabled(), true);
  await page.getByText('A task holds at most 5 clauses.').waitFor();
  await add.click({ force: true });
  assert.equal(await page.locator('fieldset[data-clause]').count(), 5);
  // A clause can name group properties, and also remove them from the current groups.
  const first = page.locator('fieldset[data-clause="0"]');
  await first.getByLabel('Type of data').selectOption('group_property');
  await first.getByText('Group properties to remove').waitFor();
  await first.getByLabel('Also remove from current groups').waitFor();
});

test('admins manage users; a member finds no way to create a task and the URL is refused', async () => {
  const admin = await newPage();
  await signIn(admin, ADMIN);
  await admin.getByRole('link', { name: 'Users' }).click();
  await admin.getByLabel('Email').fill(MEMBER.email);
  await admin.getByLabel('Initial password').fill(MEMBER.password);
  await admin.getByLabel('Role', { exact: true }).selectOption('admin');
  await admin.getByRole('button', { name: 'Add user' }).click();
  const role = admin.getByLabel(`Role of ${MEMBER.email}`);
  await role.waitFor();
  await Promise.all([
    admin.waitForResponse((r) => r.url().includes('/api/v1/users/') && r.request().method() === 'PATCH'),
    role.selectOption('member'),
  ]);
  // The last administrator cannot demote themselves.
  await admin.getByLabel(`Role of ${ADMIN.email}`).selectOption('viewer');
  await admin.getByText('at least one active administrator').waitFor();

  // A member reaches only the projects granted on the Projects page.
  const page = await newPage();
  await signIn(page, MEMBER);
  const projectsOf = () => page.evaluate(async () => (await (await fetch('/api/v1/projects')).json()).map((p) => p.id));
  assert.deepEqual(await projectsOf(), []);
  await admin.getByRole('link', { name: 'Projects' }).click();
  await Promise.all([
    admin.waitForResponse((r) => r.url().includes('/members/') && r.request().method() === 'PUT'),
    admin.getByLabel(`${MEMBER.email} in Default`).selectOption('member'),
  ]);
  await admin.getByText(`${MEMBER.email}: member in Default`).waitFor();
  assert.deepEqual(await projectsOf(), [server.projectId]);
  await page.reload();
  assert.equal(await page.getByRole('link', { name: 'New Deletion Task' }).count(), 0);
  assert.equal(await page.getByRole('link', { name: 'Organization settings' }).count(), 0);
  assert.equal(await page.getByRole('link', { name: 'Users' }).count(), 0);
  const refused = await page.goto(server.url + '/settings/deletion/new');
  assert.equal(refused.status(), 403);
  await page.getByRole('heading', { name: 'Not allowed' }).waitFor();
  // The API refuses too, even with the member's own CSRF token.
  const csrf = await page.evaluate(async () => (await (await fetch('/api/v1/me')).json()).csrf_token);
  const status = await page.evaluate(async ([id, csrf]) => (await fetch(`/api/v1/projects/${id}/deletion-tasks/preview`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': csrf }, body: '{}',
  })).status, [server.projectId, csrf]);
  assert.equal(status, 403);

  // Deactivation ends the member's session.
  await admin.getByRole('link', { name: 'Users' }).click();
  await admin.getByRole('button', { name: `Deactivate ${MEMBER.email}` }).click();
  await admin.getByRole('button', { name: `Reactivate ${MEMBER.email}` }).waitFor();
  await page.goto(server.url + '/');
  await page.waitForURL(/\/signin/);
});

test('the data page shows the catalog and a daily volume chart; sign-out ends the session', async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.getByRole('link', { name: 'Data' }).click();
  const chart = page.locator('#volume-chart');
  await chart.locator('polyline').first().waitFor();
  assert.ok(await chart.locator('polyline').count() >= 2);
  await page.getByRole('table', { name: 'Event types' }).getByRole('cell', { name: 'Purchase' }).waitFor();
  await page.getByRole('table', { name: 'Event properties' }).getByRole('cell', { name: 'amount' }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'data-chart.png'), fullPage: true });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole('link', { name: 'Home' }).click();
  await page.getByRole('heading', { name: 'Deletion tasks' }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'home-narrow.png'), fullPage: true });

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/signin/);
  await page.goto(server.url + '/data');
  await page.waitForURL(/\/signin\?next=\/data/);
});

test('an admin sees the users a privacy request suppressed, by hash only, and lifts one', async () => {
  const auth = 'Basic ' + Buffer.from(`${server.apiKey}:${server.secretKey}`).toString('base64');
  const r = await post('/api/2/deletions/users', { user_ids: ['e2e-user-4'], requester: 'dpo@example.com', suppress: true },
    { authorization: auth });
  assert.equal(r.status, 200);
  assert.equal(r.data.status, 'staging');
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.getByRole('link', { name: 'Projects' }).click();
  const table = page.getByRole('table', { name: 'Suppressed end users' });
  await table.waitFor();
  assert.equal(await table.locator('tbody tr').count(), 1);
  assert.equal(await table.getByText('e2e-user-4').count(), 0);
  await page.screenshot({ path: join(ARTIFACTS, 'projects.png'), fullPage: true });
  await table.getByRole('button', { name: /Lift suppression/ }).click();
  await page.getByRole('heading', { name: 'Suppressed end users' }).locator('..').getByText('None.').waitFor();

  // Secret keys are shown once: a new one replaces the old, which stops working at once.
  await page.getByRole('button', { name: 'New secret key for Default' }).click();
  await page.getByRole('button', { name: 'Replace the secret key of Default' }).click();
  const secret = await page.getByLabel('New secret key of Default').textContent();
  assert.match(secret, /^[0-9a-f]{32}$/);
  const taxonomy = (key) => fetch(`${server.url}/api/2/taxonomy/event`, {
    headers: { authorization: 'Basic ' + Buffer.from(`${server.apiKey}:${key}`).toString('base64') },
  }).then((r) => r.status);
  assert.equal(await taxonomy(server.secretKey), 401);
  assert.equal(await taxonomy(secret), 200);
  server.secretKey = secret;

  // The chart time zone: a wrong name is refused with the server's message, a right one saved.
  const zone = page.getByLabel('Chart time zone of Default');
  const zoneForm = zone.locator('xpath=..');
  await zone.fill('Mars/Olympus');
  await zoneForm.getByRole('button', { name: 'Save' }).click();
  await zoneForm.getByText(/IANA time zone/).waitFor();
  await zone.fill('Europe/Berlin');
  await zoneForm.getByRole('button', { name: 'Save' }).click();
  await zoneForm.getByText('saved: Europe/Berlin').waitFor();
  const projects = await page.evaluate(async () => (await (await fetch('/api/v1/projects')).json()));
  assert.equal(projects.find((p) => p.name === 'Default').time_zone, 'Europe/Berlin');
});

test('an admin blocks a name and lifts it, and adds and removes a retention policy, on the projects page; a completed task offers its signed receipt', async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  const receipt = page.locator('tr', { hasText: 'Remove test events and buyer emails' }).getByRole('link', { name: 'Signed receipt' });
  await receipt.waitFor();
  const r = await fetch(server.url + await receipt.getAttribute('href'), { headers: { authorization: `Bearer ${await token()}` } });
  assert.equal(r.status, 200);
  const signed = await r.json();
  assert.equal(signed.signature.length, 128);
  assert.equal(signed.receipt.result.events_deleted, 30);

  await page.getByRole('link', { name: 'Projects' }).click();
  const card = page.getByRole('heading', { name: 'Blocked at ingestion' }).locator('..');
  await card.getByText('None.').waitFor();
  await card.getByLabel('Kind').selectOption('user_property');
  await card.getByLabel('Name to block').fill('e2e-blocked-key');
  await card.getByRole('button', { name: 'Block' }).click();
  const table = page.getByRole('table', { name: 'Blocked names' });
  await table.getByText('e2e-blocked-key').waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'blocks.png'), fullPage: true });
  await table.getByRole('button', { name: /Lift block/ }).click();
  await page.getByRole('heading', { name: 'Blocked at ingestion' }).locator('..').getByText('None.').waitFor();

  // A retention policy: previewed (today's data is within any age), added, removed.
  const retention = page.getByRole('heading', { name: 'Retention policies' }).locator('..');
  await retention.getByLabel('Keep events (days)').fill('30');
  await retention.getByRole('button', { name: 'Preview' }).click();
  await retention.getByText('Today its task would delete 0 events').waitFor();
  await retention.getByRole('button', { name: 'Add policy' }).click();
  const policies = page.getByRole('table', { name: 'Retention policies' });
  await policies.getByText('30 days').waitFor();
  await policies.getByRole('button', { name: /Remove retention policy/ }).click();
  await page.getByRole('heading', { name: 'Retention policies' }).locator('..').getByText('None.').waitFor();
});

test('an admin adds a webhook, sees its secret once and every delivery of a task in its log, then removes it', async () => {
  const received = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => { received.push({ headers: req.headers, body: JSON.parse(body) }); res.writeHead(204).end(); });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  try {
    const page = await newPage();
    await signIn(page, ADMIN);
    await page.getByRole('link', { name: 'Organization settings' }).click();
    await page.getByRole('link', { name: 'Webhooks' }).click();
    await page.getByLabel('URL to POST to').fill('ftp://nowhere/');
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await page.locator('#webhook-url-error').filter({ hasText: 'http' }).waitFor();
    await page.getByLabel('URL to POST to').fill(url);
    await page.getByRole('button', { name: 'Add webhook' }).click();
    const secret = await page.locator('#new-secret').textContent();
    assert.match(secret, /^whsec_/);

    // A task's queued, running and completed, each delivered once and signed with the secret.
    const now = new Date();
    const r = await post(`/api/v1/projects/${server.projectId}/deletion-tasks`, {
      name: 'Webhook demo', confirm: 'DELETE', start: new Date(now - 3600000).toISOString(), end: now.toISOString(),
      clauses: [{ kind: 'event', event_types: ['Page View'] }],
    }, { authorization: `Bearer ${await token()}` });
    assert.equal(r.status, 202);
    for (let i = 0; i < 300 && received.length < 3; i++) await new Promise((res) => setTimeout(res, 100));
    assert.deepEqual(received.map((d) => d.body.type), ['deletion_task.queued', 'deletion_task.running', 'deletion_task.completed']);
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    for (const d of received) {
      const signed = `${d.headers['webhook-id']}.${d.headers['webhook-timestamp']}.${JSON.stringify(d.body)}`;
      assert.equal(d.headers['webhook-signature'], `v1,${createHmac('sha256', key).update(signed).digest('base64')}`);
    }

    await page.reload();
    const log = page.getByRole('table', { name: `Deliveries to ${url}` });
    await log.waitFor();
    assert.equal(await log.getByText('delivered', { exact: true }).count(), 3);
    assert.equal(await page.locator('#new-secret').count(), 0, 'the secret is not shown again');
    await page.getByRole('button', { name: 'Send a test event' }).click();
    for (let i = 0; i < 100 && received.length < 4; i++) await new Promise((res) => setTimeout(res, 100));
    assert.equal(received[3]?.body.type, 'webhook.test');
    await log.getByText('webhook.test').waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'webhooks.png'), fullPage: true });
    await page.getByRole('button', { name: 'Remove webhook' }).click();
    await page.getByRole('button', { name: 'Remove it and its delivery log' }).click();
    await page.getByRole('table', { name: `Deliveries to ${url}` }).waitFor({ state: 'detached' });
    const listed = await fetch(`${server.url}/api/v1/webhooks`, { headers: { authorization: `Bearer ${await token()}` } }).then((r) => r.json());
    assert.deepEqual(listed.webhooks, [], 'removed');
  } finally {
    receiver.close();
  }
});
