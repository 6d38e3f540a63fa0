import { randomBytes } from 'node:crypto';
import type { BackendContext } from '../../bindings/backend';
import type { ClientIdentity } from '../../filter/identity';
import { UNKNOWN_IDENTITY } from '../../filter/identity';
import type { AliasPolicy } from '../../filter/policy';
import type { ArchLayout } from '../../pkcs11/arch';
import { NATIVE_ARCH } from '../../pkcs11/arch';

/**
 * One PKCS#11 application as the daemon sees it: the Cryptoki state that a
 * client process owns (module choice, C_Initialize, sessions, handles,
 * login). Usually one connection; a client library that opens several
 * connections joins them into one application with px_JoinApp.
 * Each layer of the call stack keeps its own per-application data in
 * `layerState`, keyed by a symbol private to that layer.
 */
export class Application {
  private static lastId = 0;
  /** Daemon-wide application number (a backend's BackendContext.appId). */
  readonly id = ++Application.lastId;
  /** Backend alias chosen by C_LoadModule; null means the default module. */
  moduleAlias: string | null = null;
  /** Set by C_Initialize, cleared by C_Finalize and when the last connection leaves. */
  initialized = false;
  readonly layerState = new Map<symbol, unknown>();
  /** Connections bound to this application; its state is released when it drops to 0. */
  connections = 1;
  /** The router layer's context for this application's backend; rebuilt when the alias changes. */
  backendContext: BackendContext | null = null;
  /**
   * The filter policy this application is bound to, the filter generation it came from and the client
   * identity it was chosen for (filter-layer.ts; a joined connection of another identity rebinds).
   */
  filterPolicy: { readonly generation: number; readonly policy: AliasPolicy; readonly identity?: ClientIdentity } | null = null;
  /** Set once px_GetAppToken has published the application for joining. */
  token: Buffer | null = null;
}

/** One client connection: its own CK_ULONG layout, the application it belongs to. */
export class ConnectionState {
  /** Client's CK_ULONG layout, declared by C_SetupArch; native until then. */
  arch: ArchLayout = NATIVE_ARCH;
  app = new Application();

  constructor(
    readonly id: number,
    /** 'unix' or the TCP peer address, for logs. */
    readonly peer: string,
    /** Who the transport says is connected: picks the filter profile (filter.conf profile_map). */
    readonly identity: ClientIdentity = UNKNOWN_IDENTITY,
  ) {}

  /**
   * True while the filter evaluates a shadow-mode policy for this connection's call (its refusals are
   * logged as not enforced). Calls of one connection run one at a time, so a per-connection flag is exact.
   */
  filterDryRun = false;

  get moduleAlias(): string | null {
    return this.app.moduleAlias;
  }
  set moduleAlias(v: string | null) {
    this.app.moduleAlias = v;
    this.app.filterPolicy = null;
  }
  get initialized(): boolean {
    return this.app.initialized;
  }
  set initialized(v: boolean) {
    this.app.initialized = v;
  }

  stateFor<T>(key: symbol, create: () => T): T {
    let s = this.app.layerState.get(key) as T | undefined;
    if (s === undefined) {
      s = create();
      this.app.layerState.set(key, s);
    }
    return s;
  }
}

/** Size of an application token: worker index byte + 16 random bytes (rpc/pkcs11.x PX_APP_TOKEN_SIZE). */
export const APP_TOKEN_SIZE = 17;

/**
 * Published applications of this process, by token. The token's first byte
 * is the worker index so the primary can route a joining connection to the
 * process that holds the application.
 */
export class AppRegistry {
  private readonly apps = new Map<string, Application>();

  constructor(private readonly workerIndex: number) {}

  publish(app: Application): Buffer {
    if (!app.token) {
      app.token = Buffer.concat([Buffer.from([this.workerIndex & 0xff]), randomBytes(APP_TOKEN_SIZE - 1)]);
      this.apps.set(app.token.toString('hex'), app);
    }
    return app.token;
  }

  find(token: Buffer): Application | undefined {
    return this.apps.get(token.toString('hex'));
  }

  forget(app: Application): void {
    if (app.token) this.apps.delete(app.token.toString('hex'));
    app.token = null;
  }
}
