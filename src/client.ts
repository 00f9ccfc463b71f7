/**
 * A typed client for applications: talks to any node, which routes the key to
 * its owner. Errors are `GCacheError`s with the server's stable code.
 */
import { _deadlineOf, _startCall, type CallOptions } from "./call.ts";
import { _Connection, type ConnectionOptions } from "./wire/connection.ts";
import { GCACHE_SERVICE } from "./wire/messages.ts";

export interface ClientOptions extends ConnectionOptions {
  /** Time limit of a call when the caller sets none, in ms. Default: 5000. */
  timeoutMs?: number;
}

export const DEFAULT_CLIENT_OPTIONS = {
  timeoutMs: 5_000,
} as const;

export interface ClientSetOptions extends CallOptions {
  /** Time to live in ms; unset or 0 uses the group's default TTL. */
  ttlMs?: number;
  /** Absolute expiry (epoch ms); wins over `ttlMs`. */
  expiresAt?: number;
}

export interface ClientEntry {
  value: Uint8Array;
  /** Absolute expiry (epoch ms); 0 means never. */
  expiresAt: number;
}

const EMPTY = new Uint8Array(0);

export class GCacheClient {
  private readonly connection: _Connection;
  private readonly timeoutMs: number;

  /** `address` is host:port of any node. */
  constructor(address: string, options: ClientOptions = {}) {
    this.connection = new _Connection(address, options);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CLIENT_OPTIONS.timeoutMs;
  }

  async get(group: string, key: string, options?: CallOptions): Promise<Uint8Array> {
    return (await this.getEntry(group, key, options)).value;
  }

  async getEntry(group: string, key: string, options?: CallOptions): Promise<ClientEntry> {
    const response = await this.call(options, (context) =>
      this.connection.unary(
        GCACHE_SERVICE.Get,
        { group, key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false },
        context,
      ),
    );
    return { value: response.value, expiresAt: response.expiresAtMs };
  }

  /** Stores a value; resolves with the peers that could not drop their old copies (normally none). */
  async set(group: string, key: string, value: Uint8Array, options?: ClientSetOptions): Promise<{ unreachablePeers: string[] }> {
    const response = await this.call(options, (context) =>
      this.connection.unary(
        GCACHE_SERVICE.Set,
        { group, key, value, ttlMs: options?.ttlMs ?? 0, expiresAtMs: options?.expiresAt ?? 0, fromPeer: false },
        context,
      ),
    );
    return { unreachablePeers: response.unreachablePeers };
  }

  async delete(group: string, key: string, options?: CallOptions): Promise<{ deleted: boolean; unreachablePeers: string[] }> {
    const response = await this.call(options, (context) =>
      this.connection.unary(
        GCACHE_SERVICE.Delete,
        { group, key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false },
        context,
      ),
    );
    return { deleted: response.value, unreachablePeers: response.unreachablePeers };
  }

  /** Empties a group on every node. */
  async clear(group: string, options?: CallOptions): Promise<{ unreachablePeers: string[] }> {
    return this.call(options, (context) =>
      this.connection.unary(GCACHE_SERVICE.Clear, { group, fromPeer: false }, context),
    );
  }

  close(): void {
    this.connection.close();
  }

  private async call<T>(options: CallOptions | undefined, run: (context: { deadline: number; signal?: AbortSignal }) => Promise<T>): Promise<T> {
    if (options?.signal === undefined) {
      // No cancellation to wire: a deadline alone needs no timer (grpc enforces it).
      return run({ deadline: _deadlineOf(options, this.timeoutMs) });
    }
    const call = _startCall(options, this.timeoutMs);
    try {
      return await run(call);
    } finally {
      call.dispose();
    }
  }
}
