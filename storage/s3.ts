/**
 * The S3-compatible blob store (@aws-sdk/client-s3). Content-addressed writes stream to a
 * temporary key with a multipart upload (lib-storage: one part in memory at a time) while
 * hashing, then are copied server-side to `<prefix><sha256>` and the temporary object deleted.
 *
 * Client settings from docs/STACK-NOTES.md: `forcePathStyle` (s3rver, MinIO and most self-hosted stores
 * have no virtual-host buckets) and checksums only `WHEN_REQUIRED` — with the SDK's default, a
 * streamed PutObject is sent aws-chunked and s3rver stored the framing as content (300,054 bytes
 * for 300,000): silent corruption.
 */
import { randomBytes } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import {
  BlobNotFound,
  BlobRangeInvalid,
  Hashing,
  blobKey,
  checkPrefix,
  sha256Hex,
  type BlobInfo,
  type BlobKey,
  type BlobStore,
  type ByteRange,
  type PresignedPut,
} from './blob-store.ts';

export interface S3Options {
  bucket: string;
  region: string;
  endpoint?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  forcePathStyle: boolean;
  /** Part size of streamed uploads (≥ 5 MiB, S3's minimum); at most `queueSize` parts are in memory. */
  partSize?: number;
}

const status = (error: unknown) => (error instanceof S3ServiceException ? error.$metadata.httpStatusCode : undefined);

export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  readonly client: S3Client;
  readonly bucket: string;
  readonly #partSize: number;

  constructor(options: S3Options) {
    this.bucket = options.bucket;
    this.#partSize = Math.max(options.partSize ?? 8 * 1024 * 1024, 5 * 1024 * 1024);
    this.client = new S3Client({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(options.accessKeyId && options.secretAccessKey
        ? { credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } }
        : {}),
    });
  }

  /** Streams `body` to `key` (multipart above one part); returns size and digest of what was sent. */
  async #upload(key: BlobKey, body: Uint8Array | Readable, contentType: string): Promise<{ size: number; sha256: string }> {
    if (body instanceof Uint8Array) {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType, ContentLength: body.byteLength }),
      );
      return { size: body.byteLength, sha256: sha256Hex(body) };
    }
    const hashing = new Hashing();
    // An error of the source must fail the upload: forward it into the stream lib-storage reads,
    // and report it rather than what aborting the upload said afterwards.
    let sourceError: unknown;
    body.once('error', (error) => {
      sourceError = error;
      hashing.destroy(error);
    });
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body.pipe(hashing), ContentType: contentType },
      partSize: this.#partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (error) {
      throw sourceError ?? error;
    }
    return { size: hashing.byteCount, sha256: hashing.sha256 };
  }

  async putStream(prefix: string, body: Readable, contentType: string): Promise<BlobInfo> {
    checkPrefix(prefix);
    const tmp = blobKey(`tmp/${randomBytes(12).toString('hex')}`);
    try {
      const { size, sha256 } = await this.#upload(tmp, body, contentType);
      const key = blobKey(`${prefix}${sha256}`);
      // Same bytes, same key: an existing object is already these bytes.
      if (!(await this.head(key))) {
        await this.client.send(
          new CopyObjectCommand({ Bucket: this.bucket, Key: key, CopySource: `${this.bucket}/${tmp}`, ContentType: contentType, MetadataDirective: 'REPLACE' }),
        );
      }
      return { key, size, sha256, contentType };
    } finally {
      await this.delete(tmp).catch(() => {});
    }
  }

  async put(key: BlobKey, body: Uint8Array | Readable, contentType: string): Promise<BlobInfo> {
    blobKey(key);
    const { size, sha256 } = await this.#upload(key, body, contentType);
    return { key, size, sha256, contentType };
  }

  async get(key: BlobKey, range?: ByteRange): Promise<Readable> {
    blobKey(key);
    if (range && (!Number.isSafeInteger(range.start) || range.start < 0 || (range.end !== undefined && range.end < range.start))) {
      throw new BlobRangeInvalid(`invalid range ${range.start}-${range.end ?? ''}`);
    }
    try {
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          ...(range ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}),
        }),
      );
      // In Node the SDK's body is an http.IncomingMessage (a Readable) with the SDK's mixins.
      const body = response.Body as Readable;
      // s3rver answers `bytes=0-0` with the whole object (it reads end 0 as "absent"); S3 itself
      // does not, but never hand out more than the range asked for.
      if (range?.end !== undefined && (response.ContentLength ?? 0) > range.end - range.start + 1) {
        return take(body, range.end - range.start + 1);
      }
      return body;
    } catch (error) {
      if (status(error) === 404) throw new BlobNotFound(`no blob ${key}`);
      if (status(error) === 416) throw new BlobRangeInvalid(`range ${range?.start}-${range?.end ?? ''} is outside ${key}`);
      throw error;
    }
  }

  async head(key: BlobKey): Promise<{ size: number; contentType: string } | undefined> {
    blobKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: response.ContentLength ?? 0, contentType: response.ContentType ?? 'application/octet-stream' };
    } catch (error) {
      if (status(error) === 404) return undefined;
      throw error;
    }
  }

  async delete(key: BlobKey): Promise<void> {
    blobKey(key);
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async presignPut(
    key: BlobKey,
    options: { contentType: string; contentLength: number; expiresInSeconds: number },
  ): Promise<PresignedPut> {
    blobKey(key);
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentType: options.contentType, ContentLength: options.contentLength });
    // content-type and content-length are signed: the client cannot PUT more bytes than announced.
    const url = await getSignedUrl(this.client, command, {
      expiresIn: options.expiresInSeconds,
      signableHeaders: new Set(['content-type', 'content-length']),
    });
    return { url, method: 'PUT', headers: { 'content-type': options.contentType, 'content-length': String(options.contentLength) } };
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** The first `limit` bytes of `source`; the rest is not read. */
function take(source: Readable, limit: number): Readable {
  let left = limit;
  const out = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (left <= 0) return callback();
      const part = chunk.subarray(0, left);
      left -= part.length;
      callback(null, part);
      if (left <= 0) {
        this.push(null);
        source.unpipe(this);
        source.destroy();
      }
    },
  });
  source.once('error', (error) => out.destroy(error));
  return source.pipe(out);
}
