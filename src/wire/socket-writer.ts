/**
 * Output to one of Bun's TCP sockets, which takes what the kernel takes and
 * keeps nothing: the rest waits here, in order, until the socket drains.
 * Shared by the HTTP gateway's connections and the peer link's.
 */

/** The part of a Bun socket a writer needs. */
export interface _WritableSocket {
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
}

export class _SocketWriter {
  private unsent: Uint8Array[] | null = null;
  private isClosed = false;

  constructor(private readonly socket: _WritableSocket) {}

  /** Earlier bytes still wait for the socket to drain. */
  get backedUp(): boolean {
    return this.unsent !== null;
  }

  /** The socket refused a write (closed or shutting down); nothing more is sent. */
  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Sends the first `length` bytes of `bytes`; true when they all went out
   * now. `reused`: the caller writes over `bytes` next, so what of them has
   * to wait is copied; otherwise a view of them waits. Written by offset and
   * length, so bytes that go out whole allocate nothing.
   */
  write(bytes: Uint8Array, length: number, reused: boolean): boolean {
    if (this.isClosed) return false;
    if (this.unsent !== null) {
      this.unsent.push(rest(bytes, 0, length, reused));
      return false;
    }
    const written = this.socket.write(bytes, 0, length);
    if (written >= length) return true;
    if (written < 0) this.close();
    else this.unsent = [rest(bytes, written, length, reused)];
    return false;
  }

  /** The socket can take more: sends what waits. True once nothing waits (false also when the socket closed). */
  drain(): boolean {
    const unsent = this.unsent;
    if (unsent === null) return !this.isClosed;
    while (unsent.length > 0) {
      const bytes = unsent[0]!;
      const written = this.socket.write(bytes);
      if (written < 0) {
        this.close();
        return false;
      }
      if (written < bytes.byteLength) {
        unsent[0] = bytes.subarray(written);
        return false;
      }
      unsent.shift();
    }
    this.unsent = null;
    return true;
  }

  /** Drops what waits; nothing more is written. */
  close(): void {
    this.isClosed = true;
    this.unsent = null;
  }
}

/** Bytes `from` to `to`: a copy when the caller reuses them (the Uint8Array constructor copies; a Buffer's slice would share). */
function rest(bytes: Uint8Array, from: number, to: number, reused: boolean): Uint8Array {
  return reused ? new Uint8Array(bytes.subarray(from, to)) : bytes.subarray(from, to);
}
