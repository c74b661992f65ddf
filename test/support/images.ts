/**
 * Test images made with sharp itself (no binary fixtures), and hostile files built byte by byte:
 * a PNG whose header claims a huge size (a pixel bomb), a truncated JPEG, an SVG with an external
 * reference, text named .png, a zip.
 */
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { HEVC_HEIC_SAMPLE } from '../../media/sharp.ts';

/** A two-colour photo-like JPEG (left half `left`, right half `right`), noise so it does not compress away. */
export async function photoJpeg(width: number, height: number, options: { orientation?: number; gps?: boolean; quality?: number } = {}): Promise<Buffer> {
  const half = Math.floor(width / 2);
  const left = await sharp({ create: { width: half, height, channels: 3, background: '#d01010' } }).png().toBuffer();
  const right = await sharp({ create: { width: width - half, height, channels: 3, background: '#1030d0' } }).png().toBuffer();
  // Grey noise laid over the halves (soft-light keeps their hue): photo-like entropy for the encoder.
  const grain = await sharp({ create: { width, height, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 30 } } }).png().toBuffer();
  const base = await sharp({ create: { width, height, channels: 3, background: '#000' } })
    .composite([{ input: left, left: 0, top: 0 }, { input: right, left: half, top: 0 }])
    .png()
    .toBuffer();
  let p = sharp(base).composite([{ input: grain, blend: 'soft-light' }]).jpeg({ quality: options.quality ?? 85 });
  p = p.withExif({
    IFD0: { Make: 'TestCam', Model: 'T1' },
    ...(options.gps ? { IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '52/1 31/1 12/1', GPSLongitudeRef: 'E', GPSLongitude: '13/1 24/1 0/1' } } : {}),
  });
  if (options.orientation) p = p.withMetadata({ orientation: options.orientation });
  return p.toBuffer();
}

/** A PNG with a transparent left half and an opaque green right half. */
export async function alphaPng(width = 120, height = 80): Promise<Buffer> {
  const green = await sharp({ create: { width: width / 2, height, channels: 4, background: { r: 0, g: 200, b: 0, alpha: 1 } } }).png().toBuffer();
  return sharp({ create: { width, height, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .composite([{ input: green, left: width / 2, top: 0 }])
    .png()
    .toBuffer();
}

export const solid = (width: number, height: number, colour: string) =>
  sharp({ create: { width, height, channels: 3, background: colour } });

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A valid PNG header claiming width × height with only a few bytes of data: a pixel bomb. */
export function pngBomb(width = 30_000, height = 30_000): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(width + 1))), // one row of a billion-pixel image
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

export const svgWithExternalHref = Buffer.from(
  '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">' +
    '<image xlink:href="http://169.254.169.254/latest/meta-data/" width="10" height="10"/></svg>',
);

/** A real zip archive with one stored file. */
export function zipFile(name = 'hello.txt', content = Buffer.from('hello zip\n')): Buffer {
  const nameBytes = Buffer.from(name);
  const crc = crc32(content);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(content.length, 18);
  local.writeUInt32LE(content.length, 22);
  local.writeUInt16LE(nameBytes.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(content.length, 20);
  central.writeUInt32LE(content.length, 24);
  central.writeUInt16LE(nameBytes.length, 28);
  const localPart = Buffer.concat([local, nameBytes, content]);
  const centralPart = Buffer.concat([central, nameBytes]);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(centralPart.length, 12);
  end.writeUInt32LE(localPart.length, 16);
  return Buffer.concat([localPart, centralPart, end]);
}

/** A 64×48 HEIC coded with HEVC, as phones write it: media/sharp.ts's probe (made with libheif's heif-enc, x265). */
export const hevcHeic = (): Buffer => Buffer.from(HEVC_HEIC_SAMPLE, 'base64');
