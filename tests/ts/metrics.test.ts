import http from 'node:http';
import * as p from 'pkcs11js';
import { mech } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

function get(at: { host: string; port: number }, urlPath: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: at.host, port: at.port, path: urlPath }, (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

/** Prometheus text format: `name{a="x",b="y"} value` → value, keyed by name and sorted labels. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}=${x[2]}`).sort() : [];
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

describe('Prometheus metrics with 2 workers', () => {
  let d: RunningDaemon;
  let sock: { host: string; port: number };

  beforeAll(async () => {
    d = await startDaemon({ workers: 2, filterExtra: 'forbidden_mechanisms = [(".*", [CKM_RSA_X_509])]', processorExtra: 'metrics_listen = "127.0.0.1:0";' });
    // The daemon prints the endpoint it bound before READY.
    sock = JSON.parse(/^METRICS (.*)$/m.exec(d.output())![1]) as { host: string; port: number };
  });
  afterAll(async () => {
    await d?.stop();
  });

  test('scrape: calls by procedure and CK_RV, latency histogram, connections, sessions, workers, refusals by rule, summed over both workers', async () => {
    // Round-robin: the first connection goes to one worker, the second to the other.
    const a = await P11Client.open({ path: d.socketPath });
    const b = await P11Client.open({ path: d.socketPath });
    const sessions: number[] = [];
    for (const [c, n] of [[a, 3], [b, 5]] as const) {
      const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
      const session = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
      sessions.push(session);
      for (let i = 0; i < n; i++) expect((await c.call('C_GetSessionInfo', { session })).rv).toBe(p.CKR_OK);
      expect(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from('wrong-pin') })).toBe(p.CKR_PIN_INCORRECT);
    }
    expect(await a.call('C_SignInit', { session: sessions[0], mechanism: mech(p.CKM_RSA_X_509), key: 1 })).toBe(p.CKR_MECHANISM_INVALID);

    const r = await get(sock, '/metrics');
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parse(r.body);
    expect({
      ok: m.get('pkcs11proxyd_calls_total{procedure=C_GetSessionInfo,rv=CKR_OK}'),
      pinIncorrect: m.get('pkcs11proxyd_calls_total{procedure=C_Login,rv=CKR_PIN_INCORRECT}'),
      loginErrors: m.get('pkcs11proxyd_call_errors_total{procedure=C_Login}'),
      opened: m.get('pkcs11proxyd_calls_total{procedure=C_OpenSession,rv=CKR_OK}'),
      histCount: m.get('pkcs11proxyd_call_duration_seconds_count{procedure=C_GetSessionInfo}'),
      histInf: m.get('pkcs11proxyd_call_duration_seconds_bucket{le=+Inf,procedure=C_GetSessionInfo}'),
      connections: m.get('pkcs11proxyd_connections{}'),
      sessions: m.get('pkcs11proxyd_sessions{}'),
      workers: m.get('pkcs11proxyd_workers{}'),
    }).toEqual({ ok: 8, pinIncorrect: 2, loginErrors: 2, opened: 2, histCount: 8, histInf: 8, connections: 2, sessions: 2, workers: 2 });
    expect(m.get('pkcs11proxyd_call_duration_seconds_sum{procedure=C_GetSessionInfo}')).toBeGreaterThan(0);
    const refusals = [...m].filter(([k]) => k.startsWith('pkcs11proxyd_refusals_total{'));
    expect(refusals).toHaveLength(1);
    expect(refusals[0][0]).toMatch(/^pkcs11proxyd_refusals_total\{call=C_SignInit,rule=forbidden_mechanisms \(.*filter\.conf:\d+:\d+\),rv=CKR_MECHANISM_INVALID\}$/);
    expect(refusals[0][1]).toBe(1);

    // Disconnects: the implicit C_Finalize closes the sessions. A closed connection's sessions
    // are released after it is counted gone (in slices, off the loop), so both gauges are awaited.
    await a.close();
    await b.close();
    const end = Date.now() + 10_000;
    let after = parse((await get(sock, '/metrics')).body);
    while ((after.get('pkcs11proxyd_connections{}') !== 0 || after.get('pkcs11proxyd_sessions{}') !== 0) && Date.now() < end) {
      await new Promise((res) => setTimeout(res, 50));
      after = parse((await get(sock, '/metrics')).body);
    }
    expect({ connections: after.get('pkcs11proxyd_connections{}'), total: after.get('pkcs11proxyd_connections_total{}'), sessions: after.get('pkcs11proxyd_sessions{}') }).toEqual({
      connections: 0,
      total: 2,
      sessions: 0,
    });
  });

  test('anything but GET /metrics is 404', async () => {
    expect((await get(sock, '/')).status).toBe(404);
  });
});
