import fs from 'node:fs';
import http from 'node:http';
import { AggregatorRegistry, Registry } from 'prom-client';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import { errorMessage } from '../../pkcs11/errors';
import type { Logger } from '../log';
import type { MetricsSettings } from '../settings';
import type { ProcessMetrics } from './registry';

/** One process's metrics in prom-client's JSON form (what a worker sends over IPC). */
export type MetricsJson = Array<MetricObjectWithValues<MetricValue<string>>>;

/** How long a scrape waits for a worker's answer; a worker that does not answer is left out of that scrape. */
export const WORKER_SCRAPE_TIMEOUT_MS = 2000;

/**
 * The Prometheus text of the daemon: this process's registry merged with the
 * JSON each worker sent for this scrape. Workers are forked processes, not
 * node:cluster workers, so prom-client's cluster mode does not apply; its
 * `AggregatorRegistry.aggregate` does the merge (counters and gauges summed
 * per label set, histogram buckets summed per `le`).
 */
export async function aggregateText(local: ProcessMetrics, workers: ReadonlyArray<Promise<MetricsJson | null>>): Promise<string> {
  const parts: MetricsJson[] = [(await local.registry.getMetricsAsJSON()) as MetricsJson];
  for (const w of await Promise.all(workers)) if (w !== null) parts.push(w);
  return AggregatorRegistry.aggregate(parts as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
}

/**
 * `GET /metrics` over HTTP on a TCP address or a Unix socket (mode 0600,
 * a stale socket file is replaced). Off unless processor.metrics_listen is set.
 */
export class MetricsEndpoint {
  private constructor(
    private readonly server: http.Server,
    readonly address: { path?: string; host?: string; port?: number },
  ) {}

  static open(s: MetricsSettings, scrape: () => Promise<string>, log: Logger): Promise<MetricsEndpoint> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
        return;
      }
      scrape().then(
        (text) => res.writeHead(200, { 'content-type': Registry.PROMETHEUS_CONTENT_TYPE }).end(text),
        (e: unknown) => {
          log('error', `metrics scrape failed: ${errorMessage(e)}`);
          res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
        },
      );
    });
    server.keepAliveTimeout = 5000;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const l = s.listen;
      const ready = () => {
        server.off('error', reject);
        server.on('error', (e) => log('error', `metrics endpoint: ${errorMessage(e)}`));
        const a = server.address();
        if (l.type === 'local') {
          fs.chmodSync(l.path, 0o600);
          resolve(new MetricsEndpoint(server, { path: l.path }));
        } else resolve(new MetricsEndpoint(server, { host: l.host, port: typeof a === 'object' && a !== null ? a.port : l.port }));
      };
      if (l.type === 'local') {
        try {
          if (fs.lstatSync(l.path).isSocket()) fs.unlinkSync(l.path);
        } catch {
          // absent
        }
        server.listen(l.path, ready);
      } else server.listen(l.port, l.host, ready);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => {
        if (this.address.path !== undefined) fs.rmSync(this.address.path, { force: true });
        resolve();
      });
    });
  }
}
