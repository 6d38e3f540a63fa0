import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';

/**
 * The netplex keys lstn_backlog and so_keepalive are honoured, with and
 * without workers (one listener module): read back from the kernel with ss(8).
 */
function listenQueue(port: number): number {
  // State Recv-Q Send-Q Local Peer: for a listening socket Send-Q is the backlog.
  const line = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim();
  return Number(line.split(/\s+/)[2]);
}

function keepAliveTimer(localPort: number): boolean {
  // The server side of our connection: its source port is the daemon's.
  const out = execFileSync('ss', ['-Htno', `dport = :${localPort}`], { encoding: 'utf8' });
  return /timer:\(keepalive/.test(out);
}

describe.each([0, 2])('workers %i', (workers) => {
  for (const keepAlive of [true, false]) {
    test(`lstn_backlog = 37, so_keepalive = ${keepAlive}`, async () => {
      const d: RunningDaemon = await startDaemon({ workers, tcp: true, protocolExtra: `lstn_backlog = 37; so_keepalive = ${keepAlive}; tcp_nodelay = true;` });
      try {
        expect(listenQueue(d.tcpPort!)).toBe(37);
        const c = net.connect({ host: '127.0.0.1', port: d.tcpPort! });
        await new Promise<void>((r) => c.once('connect', () => r()));
        // The server sets the option on accept (in the primary with workers); poll briefly.
        const end = Date.now() + 5000;
        let seen = keepAliveTimer(c.localPort!);
        while (seen !== keepAlive && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 20));
          seen = keepAliveTimer(c.localPort!);
        }
        expect(seen).toBe(keepAlive);
        c.destroy();
      } finally {
        await d.stop();
      }
    });
  }
});
