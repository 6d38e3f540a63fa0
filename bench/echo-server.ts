/**
 * Node.js echo server for bench/c/floor.sh: what one round trip costs a Node
 * event loop that does no work. `workers` > 0 runs that many processes behind
 * node:cluster, whose primary accepts and hands sockets over as our daemon's
 * primary does.
 *
 *   node dist/bench/echo-server.js PATH [WORKERS]
 */
import cluster from 'node:cluster';
import fs from 'node:fs';
import net from 'node:net';

function main(): void {
  const [path, workersArg] = process.argv.slice(2);
  const workers = Number(workersArg ?? '0');
  if (!path || !Number.isInteger(workers) || workers < 0) {
    process.stderr.write('usage: echo-server.js PATH [WORKERS]\n');
    process.exit(64);
  }
  if (cluster.isPrimary) fs.rmSync(path, { force: true });
  if (workers > 0 && cluster.isPrimary) {
    let listening = 0;
    for (let i = 0; i < workers; i++) {
      cluster.fork().on('listening', () => {
        if (++listening === workers) process.stdout.write('READY\n');
      });
    }
    return;
  }
  net
    .createServer((s) => {
      s.on('data', (d: Buffer) => s.write(d));
      s.on('error', () => s.destroy());
    })
    .listen(path, () => {
      if (cluster.isPrimary) process.stdout.write('READY\n');
    });
}

main();
