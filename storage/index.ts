/** Picks the blob store the configuration names (BLOB_STORE; local is the default, also with DATABASE_URL). */
import { join } from 'node:path';
import type { Config } from '../server/config.ts';
import type { BlobStore } from './blob-store.ts';
import { LocalBlobStore } from './local.ts';
import { S3BlobStore } from './s3.ts';

export function createBlobStore(config: Config): BlobStore {
  if (config.BLOB_STORE === 's3') {
    return new S3BlobStore({
      bucket: config.S3_BUCKET!,
      region: config.S3_REGION,
      endpoint: config.S3_ENDPOINT,
      accessKeyId: config.S3_ACCESS_KEY_ID,
      secretAccessKey: config.S3_SECRET_ACCESS_KEY,
      forcePathStyle: config.S3_FORCE_PATH_STYLE,
    });
  }
  return new LocalBlobStore(join(config.DATA_DIR, 'blobs'));
}

export * from './blob-store.ts';
export { LocalBlobStore } from './local.ts';
export { S3BlobStore } from './s3.ts';
