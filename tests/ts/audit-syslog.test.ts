/**
 * The audit trail's syslog sink (processor.audit_syslog): one datagram per
 * event on a local AF_UNIX datagram socket. The socket stands in for
 * /dev/log: a real SOCK_DGRAM socket bound by a python3 receiver (Node has
 * no Unix datagram sockets), which prints every datagram it reads as one
 * JSON string per line. Checked: the header (PRI with facility and
 * severity, TAG[PID] or the RFC 5424 fields), the JSON event after it, the
 * events of a session (startup, login success and failure,
 * object_created), and that neither the PIN, a wrong PIN nor an imported
 * key's value is in any datagram. A bad key refuses to start.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, ulong } from './helpers/attrs';
import { CLI, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const WRONG_PIN = `Zq8-${randomBytes(6).toString('hex')}`;
const VALUE = randomBytes(32);

const RECEIVER = `
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("READY", flush=True)
while True:
    data = s.recv(1 << 20)
    sys.stdout.write(json.dumps(data.decode("utf-8", "replace")) + "\\n")
    sys.stdout.flush()
`;

/** A datagram socket bound at `socketPath`; collects what arrives. */
class Receiver {
  readonly messages: string[] = [];
  private buf = '';
  private constructor(private readonly proc: ChildProcessWithoutNullStreams) {}

  static async bind(socketPath: string): Promise<Receiver> {
    const proc = spawn('python3', ['-c', RECEIVER, socketPath]);
    const r = new Receiver(proc);
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
      const onData = (d: Buffer) => {
        r.buf += d.toString();
        let nl: number;
        while ((nl = r.buf.indexOf('\n')) >= 0) {
          const line = r.buf.slice(0, nl);
          r.buf = r.buf.slice(nl + 1);
          if (line === 'READY') resolve();
          else r.messages.push(JSON.parse(line) as string);
        }
      };
      proc.stdout.on('data', onData);
    });
    return r;
  }

  /** Polls until pred holds on the messages so far (deadline 10 s). */
  async waitFor(pred: (m: string[]) => boolean): Promise<string[]> {
    const end = Date.now() + 10_000;
    while (!pred(this.messages)) {
      if (Date.now() > end) throw new Error(`syslog never matched; it has:\n${this.messages.join('\n')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.messages;
  }

  stop(): void {
    this.proc.kill('SIGKILL');
  }
}

interface Parsed {
  pri: number;
  header: string;
  event: Record<string, unknown>;
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-syslog-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A session's worth of events: login with a wrong PIN, then the right one, an imported AES key. */
async function session(d: RunningDaemon): Promise<void> {
  const c = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(WRONG_PIN) })).toBe(p.CKR_PIN_INCORRECT);
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  const imported = await c.call('C_CreateObject', {
    session: s,
    template: [
      ulong(p.CKA_CLASS, p.CKO_SECRET_KEY),
      ulong(p.CKA_KEY_TYPE, p.CKK_AES),
      bool(p.CKA_TOKEN, false),
      bytes(p.CKA_LABEL, 'syslog-imported'),
      bytes(p.CKA_VALUE, VALUE),
    ],
  });
  expect(imported.rv).toBe(p.CKR_OK);
  await c.close();
}

function noSecret(messages: string[]): void {
  const text = messages.join('\n');
  for (const s of [WRONG_PIN, VALUE.toString('hex'), VALUE.toString('hex').toUpperCase(), VALUE.toString('base64'), VALUE.toString('latin1')])
    expect(text).not.toContain(s);
  // The right PIN is short: no field of any event holds it.
  for (const m of messages) {
    const ev = JSON.parse(m.slice(m.indexOf('{'))) as Record<string, unknown>;
    for (const v of Object.values(ev)) expect(v).not.toBe(USER_PIN);
  }
}

test.each([
  ['rfc3164', 'audit_syslog_facility = "local3"; audit_syslog_tag = "p11audit";', 19],
  ['rfc5424', 'audit_syslog_format = "rfc5424";', 10],
])('%s: each event is one datagram, header then the JSON event; no secret', async (format, extra, facility) => {
  const sock = path.join(dir, `log-${format}`);
  const rx = await Receiver.bind(sock);
  let d: RunningDaemon | undefined;
  try {
    d = await startDaemon({ workers: 1, processorExtra: `audit_syslog = "${sock}"; ${extra}` });
    await session(d);
    const messages = await rx.waitFor((m) => m.filter((x) => x.includes('"event":"login"')).length === 2 && m.some((x) => x.includes('"event":"object_created"')));
    const parsed: Parsed[] = messages.map((m) => {
      const mm = /^<(\d+)>(.*?)(\{.*\})$/s.exec(m);
      if (!mm) throw new Error(`not a syslog message with a JSON event: ${m}`);
      return { pri: Number(mm[1]), header: mm[2], event: JSON.parse(mm[3]) as Record<string, unknown> };
    });
    for (const x of parsed) {
      expect(x.pri >> 3).toBe(facility);
      const pid = String(x.event.pid);
      if (format === 'rfc3164') expect(x.header).toMatch(new RegExp(`^[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d p11audit\\[${pid}\\]: $`));
      else expect(x.header).toBe(`1 ${String(x.event.time)} ${os.hostname()} pkcs11proxyd ${pid} ${String(x.event.event)} - `);
    }
    const kinds = new Set(parsed.map((x) => x.event.event));
    for (const k of ['startup', 'login', 'object_created']) expect(kinds).toContain(k);
    // Severity: the failed login is a warning (4), the good one a notice (5).
    const logins = parsed.filter((x) => x.event.event === 'login');
    expect(new Map(logins.map((x) => [x.event.rv, x.pri & 7]))).toEqual(
      new Map([
        ['CKR_PIN_INCORRECT', 4],
        ['CKR_OK', 5],
      ]),
    );
    noSecret(messages);
  } finally {
    await d?.stop();
    rx.stop();
  }
});

const BAD = [
  'audit_syslog = "dev/log";',
  'audit_syslog = "/dev/log"; audit_syslog_facility = "kern";',
  'audit_syslog = "/dev/log"; audit_syslog_tag = "a b";',
  'audit_syslog = "/dev/log"; audit_syslog_format = "json";',
];

test('no syslog daemon listening: the daemon starts and serves (events are lost, not fatal); bad values refuse to start with exit 78', async () => {
  const sock = path.join(dir, 'nobody-here');
  const d = await startDaemon({ processorExtra: `audit_syslog = "${sock}";` });
  try {
    const c = await P11Client.open({ path: d.socketPath });
    expect((await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).rv).toBe(p.CKR_OK);
    await c.close();
  } finally {
    await d.stop();
  }
  fs.writeFileSync(path.join(dir, 'filter.conf'), 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\n');
  const conf = path.join(dir, 'pkcs11proxyd.conf');
  for (const extra of BAD) {
    fs.writeFileSync(
      conf,
      `netplex { service { name = "t"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${dir}/s"; }; };
         processor { type = "rpc_pkcs11"; filter_config = "filter.conf"; ${extra} }; }; };\n`,
    );
    const r = spawnSync(process.execPath, [CLI, '-fg', '-conf', conf], { encoding: 'utf8' });
    expect({ extra, status: r.status }).toEqual({ extra, status: 78 });
    expect(r.stderr).toMatch(/audit_syslog/);
  }
});
