// What the end-to-end tests share: the real `lethe` binary on an ephemeral port over a fresh
// data dir, its export read back, and headless Chromium (Debian's /usr/bin/chromium).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.LETHE_BIN || join(here, '..', 'target', 'debug', 'lethe');
export const ARTIFACTS = join(here, 'artifacts');
export const ADMIN = { email: 'admin@example.com', password: 'e2e admin password' };

/** Starts lethe on a fresh data dir; resolves with its URL and the first project's keys. */
export function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'lethe-e2e-'));
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--flush-interval', '200ms'], {
    env: { ...process.env, LETHE_ADMIN_EMAIL: ADMIN.email, LETHE_ADMIN_PASSWORD: ADMIN.password, RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const info = { child, dir };
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`lethe exited with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const value = (label) => line.trim().startsWith(label) && line.trim().slice(label.length).trim().split(/\s+/)[0];
      info.apiKey ||= value('api_key:');
      info.secretKey ||= value('secret_key:');
      info.projectId ||= Number(value('project id:')) || undefined;
      const m = line.match(/listening on (http:\/\/\S+)/);
      if (m) { info.url = m[1]; resolve(info); }
    });
  });
}

/** Stops a server the hard way and removes its data dir. */
export function stopServer(server) {
  server?.child.removeAllListeners('exit');
  server?.child.kill('SIGKILL');
  if (server) rmSync(server.dir, { recursive: true, force: true });
}

/** The export of the last two days: every event line. Read as a streaming reader would,
 *  local header by local header, so entries must carry their sizes there. */
export async function exportEvents(server) {
  const day = (d) => d.toISOString().slice(0, 10).replaceAll('-', '');
  const now = new Date();
  const start = day(new Date(now.getTime() - 86400000));
  const auth = 'Basic ' + Buffer.from(`${server.apiKey}:${server.secretKey}`).toString('base64');
  const r = await fetch(`${server.url}/api/2/export?start=${start}T00&end=${day(now)}T23`, { headers: { authorization: auth } });
  if (r.status === 404) return [];
  assert.equal(r.status, 200);
  const zip = Buffer.from(await r.arrayBuffer());
  const events = [];
  for (let at = 0; zip.readUInt32LE(at) === 0x04034b50;) {
    const size = zip.readUInt32LE(at + 18);
    const start = at + 30 + zip.readUInt16LE(at + 26) + zip.readUInt16LE(at + 28);
    const text = gunzipSync(zip.subarray(start, start + size)).toString();
    events.push(...text.split('\n').filter(Boolean).map((l) => JSON.parse(l)));
    at = start + size;
  }
  return events;
}

/** Headless Chromium. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}
