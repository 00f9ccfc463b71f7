/**
 * A client of the original pb.GCache definition (three RPCs, three fields),
 * built the way its users build it: @grpc/proto-loader with its usual
 * options and @grpc/grpc-js.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const ORIGINAL_PROTO = fileURLToPath(new URL("../fixtures/original-gcache.proto", import.meta.url));

/** The messages as the original's users see them (proto-loader's usual options). */
export interface OriginalRequest {
  group: string;
  key: string;
  value?: Buffer;
}
export interface OriginalResponseForGet {
  value: Buffer;
}
export interface OriginalResponseForDelete {
  value: boolean;
}

export type Unary<Req, Res> = (
  request: Req,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: Res) => void,
) => grpc.ClientUnaryCall;

export interface OriginalClient extends grpc.Client {
  Get: Unary<OriginalRequest, OriginalResponseForGet>;
  Set: Unary<OriginalRequest, OriginalResponseForGet>;
  Delete: Unary<OriginalRequest, OriginalResponseForDelete>;
}

const packageDefinition = protoLoader.loadSync(ORIGINAL_PROTO, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  pb: { GCache: new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => OriginalClient };
};

export function originalClient(address: string, options?: grpc.ChannelOptions): OriginalClient {
  return new loaded.pb.GCache(address, grpc.credentials.createInsecure(), options);
}

/** Promisified unary call with a deadline; rejects with the grpc ServiceError. */
export function call<Req, Res>(method: Unary<Req, Res>, client: OriginalClient, request: Req, timeoutMs = 5_000): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method.call(client, request, { deadline: Date.now() + timeoutMs }, (error, response) => {
      if (error) reject(error);
      else resolve(response as Res);
    });
  });
}
