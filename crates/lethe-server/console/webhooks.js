// Webhooks (Organization settings): register a URL, see its signing secret once, follow its
// deliveries (every status change of a deletion task or privacy job), remove it.

import { api, fieldError, h, rerender, setMain, showError } from './core.js';
import { utc } from './format.js';
import { settingsNav } from './tasks.js';

/** One webhook: its URL, a remove button, and its latest deliveries. */
async function webhookCard(webhook) {
  const r = await api('GET', `/api/v1/webhooks/${webhook.id}/deliveries`);
  const deliveries = r.status === 200 ? r.data.deliveries : [];
  // In two steps: the delivery log goes with it.
  const actions = h('div', { class: 'actions' });
  const remove = h('button', { type: 'button' }, 'Remove webhook');
  remove.addEventListener('click', () => {
    const sure = h('button', { type: 'button', class: 'danger' }, 'Remove it and its delivery log');
    sure.addEventListener('click', async () => {
      await api('DELETE', `/api/v1/webhooks/${webhook.id}`);
      rerender();
    });
    actions.replaceChildren(sure);
  });
  const test = h('button', { type: 'button' }, 'Send a test event');
  test.addEventListener('click', async () => {
    await api('POST', `/api/v1/webhooks/${webhook.id}/test`, {});
    setTimeout(rerender, 1000);
  });
  actions.append(test, remove);
  const last = (d) => (d.last_status ? `${d.last_status}` : '') + (d.last_error ? ` ${d.last_error}` : '');
  return h('section', { class: 'card', 'data-webhook': webhook.id, 'aria-label': `Webhook ${webhook.url}` },
    h('h2', { class: 'mono' }, webhook.url),
    h('p', { class: 'muted' }, `Added by ${webhook.created_by}, ${utc(webhook.created_at)}.`),
    deliveries.length
      ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': `Deliveries to ${webhook.url}` },
        h('thead', {}, h('tr', {}, ['Event', 'Task', 'Status', 'Attempts', 'Last answer', 'Created', 'Delivered'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, deliveries.map((d) => h('tr', {},
          h('td', {}, h('code', {}, d.event_type)), h('td', {}, d.task_id ?? '—'),
          h('td', {}, h('span', { class: `badge ${d.status === 'delivered' ? 'completed' : d.status === 'failed' ? 'failed' : 'queued'}` }, d.status)),
          h('td', { class: 'num' }, d.attempts), h('td', {}, last(d) || '—'),
          h('td', {}, utc(d.created_at)), h('td', {}, utc(d.delivered_at)))))))
      : h('p', { class: 'muted' }, 'Nothing sent yet: the next status change of a task is.'),
    actions);
}

export async function webhooksPage() {
  const r = await api('GET', '/api/v1/webhooks');
  const webhooks = r.status === 200 ? r.data.webhooks : [];
  const err = h('p', { class: 'error', role: 'alert' });
  const secret = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', novalidate: true },
    h('h2', {}, 'Add a webhook'),
    h('label', { for: 'webhook-url' }, 'URL to POST to'),
    h('input', { id: 'webhook-url', type: 'url', placeholder: 'https://hooks.example.com/lethe', 'data-field': 'url', 'data-error-id': 'webhook-url-error' }),
    fieldError('webhook-url'), err,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add webhook')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const added = await api('POST', '/api/v1/webhooks', { url: form.querySelector('#webhook-url').value });
    if (added.status !== 201) return showError(form, added.data, err);
    await webhooksPage();
    document.getElementById('webhook-secret').replaceChildren(h('div', { class: 'warning', role: 'note' },
      h('p', {}, h('strong', {}, 'Signing secret, shown this once: '), h('code', { id: 'new-secret' }, added.data.secret)),
      h('p', { class: 'hint' }, 'Each delivery carries webhook-id, webhook-timestamp and webhook-signature headers (Standard Webhooks): v1, then the base64 HMAC-SHA256 of "id.timestamp.body" under this secret.')));
  });
  secret.id = 'webhook-secret';
  setMain('Webhooks', settingsNav(), h('h1', {}, 'Webhooks'),
    h('p', { class: 'muted' }, 'lethe POSTs every status change of a deletion task or privacy job (queued, running, completed, failed) to each URL here, signed, and retries a failed delivery with doubling delays. Payloads hold ids, names, statuses and counts, never event or property values.'),
    secret, form, ...(await Promise.all(webhooks.map(webhookCard))));
}
