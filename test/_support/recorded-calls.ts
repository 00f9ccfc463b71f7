/** Records the unary calls a GrpcPeer makes, by method name, without changing them. */
import type { GrpcPeer } from "../../src/cluster/peer.ts";
import type { _Connection } from "../../src/wire/connection.ts";

export function recordUnaryCalls(peer: GrpcPeer): string[] {
  const connection = (peer as unknown as { connection: _Connection }).connection;
  const calls: string[] = [];
  const unary = connection.unary.bind(connection);
  connection.unary = ((method: { path: string }, request: unknown, context: unknown) => {
    calls.push(method.path.slice("/pb.GCache/".length));
    return unary(method as never, request as never, context as never);
  }) as typeof connection.unary;
  return calls;
}
