/**
 * A real S3-compatible server for tests and benches: s3rver (npm) on a free loopback port, its
 * files in a temporary directory, one bucket. docs/STACK-NOTES.md: put, get, range, head, multipart, list,
 * presigned URLs and delete all work against it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import S3rver from 's3rver';

export interface S3Server {
  readonly endpoint: string;
  readonly bucket: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly directory: string;
  /** The server's environment for BLOB_STORE=s3. */
  env(): Record<string, string>;
  stop(): Promise<void>;
}

export async function startS3(register: (teardown: () => Promise<void>) => void, bucket = 'imageflow-test'): Promise<S3Server> {
  const directory = mkdtempSync(join(tmpdir(), 's3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: bucket }] });
  const address = (await server.run()) as AddressInfo;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.close();
    rmSync(directory, { recursive: true, force: true });
  };
  register(stop);
  const endpoint = `http://127.0.0.1:${address.port}`;
  // s3rver's one account (S3RVER/S3RVER); it checks signatures against it.
  const s3 = { endpoint, bucket, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', directory };
  return {
    ...s3,
    env: () => ({
      BLOB_STORE: 's3',
      S3_ENDPOINT: endpoint,
      S3_BUCKET: bucket,
      S3_REGION: s3.region,
      S3_ACCESS_KEY_ID: s3.accessKeyId,
      S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      S3_FORCE_PATH_STYLE: 'true',
    }),
    stop,
  };
}
