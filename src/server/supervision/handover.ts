/**
 * Messages between the primary and its workers (JSON over the IPC channel).
 * A connection travels as {t:'conn'} with the socket attached; the primary
 * keeps its own descriptor until the worker answers {t:'taken'} with the same
 * id, so a worker that dies first never takes a connection with it: the
 * primary gives the socket to another worker or closes it.
 */
import type { PeerIdentity } from '../transport/types';

export interface ConnMessage {
  t: 'conn';
  /** Hand-over id, unique in the primary's life. */
  id: number;
  /** 'tls': a raw TCP socket of a TLS address; the worker runs the handshake (`initial` holds the ClientHello). */
  transport: 'unix' | 'tcp' | 'tls';
  remote: string;
  peer: PeerIdentity;
  /** base64 of the bytes the primary read to route the connection. */
  initial: string;
}

/** SIGHUP: compile `text` (the filter file as the primary read it) and swap the policy in; answer 'reloaded'. */
export interface ReloadMessage {
  t: 'reload';
  /** Reload number in the primary's life, echoed in the answer. */
  id: number;
  text: string;
}

/** `objects`: a worker changed a module object (C_SetAttributeValue, C_DestroyObject); the primary relays it to the other workers, which drop their filter attribute caches. */
export type ToWorker =
  /** The first message to a new worker: the filter.conf text in force (daemon.ts filterText); null: no filter file. */
  | { t: 'filter'; text: string | null }
  | ConnMessage
  | ReloadMessage
  | { t: 'objects' }
  | { t: 'stop' }
  /** SIGHUP: reopen the audit file by name (logrotate moved it). */
  | { t: 'reopen' }
  /** SIGHUP with use_ssl: read the TLS files again (daemon.ts reloadTlsMaterial). */
  | { t: 'tls-reload' }
  /** A scrape of the metrics endpoint: answer this process's metrics as prom-client JSON. */
  | { t: 'metrics'; id: number };

export type ToPrimary =
  | { t: 'ready' }
  | { t: 'taken'; id: number }
  | { t: 'objects' }
  /** The connection taken with this hand-over id has closed: the primary releases its admission counts. */
  | { t: 'closed'; id: number }
  /** `error` set: the file was refused and the old policy stays. */
  | { t: 'reloaded'; id: number; error?: string }
  /** Answer to {t:'metrics'}: prom-client's getMetricsAsJSON() of the worker. */
  | { t: 'metrics'; id: number; metrics: unknown[] };
