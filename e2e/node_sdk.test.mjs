// The official Node SDK (@amplitude/analytics-node from npm) sends to lethe unchanged: track,
// identify, groupIdentify and revenue all answer 200, and the export holds what was sent.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as amplitude from '@amplitude/analytics-node';
import { exportEvents, startServer, stopServer } from './harness.mjs';

let server;

before(async () => { server = await startServer(); });
after(() => stopServer(server));

test('the Node SDK tracks, identifies, identifies groups and records revenue', async () => {
  const client = amplitude.createInstance();
  await client.init(server.apiKey, { serverUrl: `${server.url}/2/httpapi`, flushQueueSize: 1, flushIntervalMillis: 50 }).promise;
  const user = { user_id: 'node-user-1', device_id: 'node-device-1' };
  const codes = [
    (await client.track('Node Track', { n: 1 }, user).promise).code,
    (await client.identify(new amplitude.Identify().set('plan', 'pro').add('logins', 2), user).promise).code,
    (await client.groupIdentify('org', 'acme', new amplitude.Identify().set('seats', 7), user).promise).code,
    (await client.revenue(new amplitude.Revenue().setProductId('sku-9').setPrice(9.99).setQuantity(3), user).promise).code,
    (await client.track({ event_type: 'Node Grouped', groups: { org: 'acme' }, ...user }).promise).code,
  ];
  assert.deepEqual(codes, [200, 200, 200, 200, 200]);
  await client.flush().promise;

  const events = await exportEvents(server);
  const byType = Object.fromEntries(events.map((e) => [e.event_type, e]));
  assert.deepEqual(Object.keys(byType).sort(), ['$identify', 'Node Grouped', 'Node Track', 'revenue_amount'],
    'a group identification is no event');
  assert.equal(events.length, 4);
  assert.deepEqual(byType['Node Track'].event_properties, { n: 1 });
  assert.match(byType['Node Track'].library, /^amplitude-node-ts\//);
  assert.deepEqual(byType['Node Grouped'].user_properties, { plan: 'pro', logins: 2 });
  assert.deepEqual(byType['Node Grouped'].groups, { org: 'acme' });
  assert.deepEqual(byType['Node Grouped'].group_properties, { org: { acme: { seats: 7 } } });
  const revenue = byType.revenue_amount.event_properties;
  assert.equal(revenue.$price, 9.99);
  assert.equal(revenue.$quantity, 3);
  assert.equal(revenue.$productId, 'sku-9');
  const ids = new Set(events.map((e) => e.amplitude_id));
  assert.equal(ids.size, 1, 'one user, one amplitude_id');
});
