/**
 * The standard grpc.health.v1.Health service: SERVING while the node serves,
 * NOT_SERVING while it drains. Load balancers and `grpc_health_probe` speak it.
 */
import { status, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from "@grpc/grpc-js";
import { ServingStatus, type HealthCheckRequest, type HealthCheckResponse } from "../wire/messages.ts";
import { toStatus } from "../wire/status.ts";
import { InvalidMessage } from "./service.ts";

/** Service names this node answers for: "" (the whole server) and the cache service. */
const KNOWN_SERVICES = new Set(["", "pb.GCache"]);

export class HealthService {
  private current: ServingStatus = ServingStatus.NOT_SERVING;
  private readonly watchers = new Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>();

  get status(): ServingStatus {
    return this.current;
  }

  set(next: ServingStatus): void {
    if (next === this.current) return;
    this.current = next;
    for (const watcher of this.watchers) {
      if (KNOWN_SERVICES.has(watcher.request.service)) watcher.write({ status: next });
    }
  }

  /** Ends every Watch stream (at shutdown, so the server can close). */
  endWatches(): void {
    for (const watcher of this.watchers) watcher.end();
    this.watchers.clear();
  }

  readonly handlers = {
    Check: (
      call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
      callback: sendUnaryData<HealthCheckResponse>,
    ) => {
      const request: HealthCheckRequest | InvalidMessage = call.request;
      if (request instanceof InvalidMessage) {
        callback(toStatus(request.error));
        return;
      }
      if (!KNOWN_SERVICES.has(call.request.service)) {
        callback({ code: status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        return;
      }
      callback(null, { status: this.current });
    },
    Watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
      const request: HealthCheckRequest | InvalidMessage = call.request;
      if (request instanceof InvalidMessage) {
        call.emit("error", toStatus(request.error));
        return;
      }
      const known = KNOWN_SERVICES.has(call.request.service);
      call.write({ status: known ? this.current : ServingStatus.SERVICE_UNKNOWN });
      this.watchers.add(call);
      const forget = () => this.watchers.delete(call);
      call.on("cancelled", forget);
      call.on("close", forget);
    },
  };
}
