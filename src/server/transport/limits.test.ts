import { setAuditSink } from '../audit';
import type { AuditEvent } from '../audit';
import { AdmissionControl, sourceOf } from './limits';
import type { PeerIdentity } from './types';

const uid = (n: number): PeerIdentity => ({ transport: 'unix', uid: n, gid: n, pid: 1 });
const tcp = (a: string): PeerIdentity => ({ transport: 'tcp', address: a, port: 40000 });

let events: AuditEvent[] = [];
const logs: string[] = [];
beforeEach(() => {
  events = [];
  logs.length = 0;
  setAuditSink((e) => events.push(e));
});
afterAll(() => setAuditSink(null));

function control(limits: Partial<ConstructorParameters<typeof AdmissionControl>[0]>, clock: { t: number }): AdmissionControl {
  return new AdmissionControl(
    { maxConnections: 0, maxConnectionsPerSource: 0, connectionRatePerSource: 0, connectionBurstPerSource: 0, ...limits },
    (_level, msg) => logs.push(msg),
    () => clock.t,
  );
}

test('sources: uid, address; an IPv4-mapped address is the IPv4 address', () => {
  expect(sourceOf(uid(1000))).toBe('uid:1000');
  expect(sourceOf(tcp('::ffff:10.0.0.1'))).toBe(sourceOf(tcp('10.0.0.1')));
  expect(sourceOf({ transport: 'tls', address: '::1', port: 1 })).toBe('address:::1');
});

test('counts per source and in total; release is idempotent; each refusal is one limit event', () => {
  const c = control({ maxConnections: 3, maxConnectionsPerSource: 2 }, { t: 0 });
  const a1 = c.admit(uid(1));
  const a2 = c.admit(uid(1));
  expect(a1.ok && a2.ok).toBe(true);
  const a3 = c.admit(uid(1));
  expect(a3).toMatchObject({ ok: false, limit: 'max_connections_per_source', source: 'uid:1' });
  const b1 = c.admit(uid(2));
  expect(b1.ok).toBe(true);
  expect(c.admit(uid(3))).toMatchObject({ ok: false, limit: 'max_connections' });
  if (!a1.ok) throw new Error('unreachable');
  a1.ticket.release();
  a1.ticket.release();
  expect(c.openConnections).toBe(2);
  expect(c.openFrom('uid:1')).toBe(1);
  expect(c.admit(uid(1)).ok).toBe(true);
  expect(events.map((e) => [e.event, e.limit, e.source])).toEqual([
    ['limit', 'max_connections_per_source', 'uid:1'],
    ['limit', 'max_connections', 'uid:3'],
  ]);
  expect(logs).toHaveLength(2);
});

test('token bucket per source: burst, then the rate; a flood is reported once per window with its count', () => {
  const clock = { t: 0 };
  const c = control({ connectionRatePerSource: 2, connectionBurstPerSource: 3 }, clock);
  for (let i = 0; i < 3; i++) expect(c.admit(tcp('10.0.0.1')).ok).toBe(true);
  for (let i = 0; i < 10; i++) expect(c.admit(tcp('10.0.0.1'))).toMatchObject({ ok: false, limit: 'connection_rate_per_source' });
  // Another source has its own bucket.
  expect(c.admit(tcp('10.0.0.2')).ok).toBe(true);
  clock.t = 499;
  expect(c.admit(tcp('10.0.0.1')).ok).toBe(false);
  clock.t = 1000;
  expect(c.admit(tcp('10.0.0.1')).ok).toBe(true);
  expect(events).toHaveLength(1);
  clock.t = 11_000;
  for (let i = 0; i < 30; i++) c.admit(tcp('10.0.0.1'));
  expect(events).toHaveLength(2);
  // The second report counts the 10 refusals the first window kept quiet.
  expect(events[1]).toMatchObject({ event: 'limit', limit: 'connection_rate_per_source', suppressed: 10 });
});
