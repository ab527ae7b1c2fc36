// The one formatter of the console: numbers, and times (always UTC, the time deletion
// tasks select by).

const fmt = new Intl.NumberFormat('en-US');
export const num = (n) => fmt.format(n ?? 0);

/** `2026-01-31 12:00 UTC` from an RFC 3339 time or epoch ms. */
export function utc(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

/** `2026-01-31` (UTC) of a Date. */
export const ymd = (d) => d.toISOString().slice(0, 10);
