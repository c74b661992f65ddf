/**
 * TRANSPORT=auto says why it did not pick uWebSockets.js: on glibc older than 2.38 (STACK-NOTES)
 * the reason names the glibc versions, not uWS's own message about Node versions.
 */
import { describe, expect, it } from 'vitest';
import { loadUws } from '../server/transport/uws.ts';

describe('loading uWebSockets.js', () => {
  it('loads on glibc >= 2.38 and otherwise names the glibc it found', () => {
    const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
    const [major = 0, minor = 0] = (glibc ?? '0.0').split('.').map(Number);
    const loaded = loadUws();
    if (glibc && (major < 2 || (major === 2 && minor < 38))) {
      expect('error' in loaded ? loaded.error : 'loaded').toContain(`needs glibc >= 2.38 and this machine has ${glibc}`);
    } else if (glibc || process.platform !== 'linux') {
      expect('uws' in loaded, 'error' in loaded ? loaded.error : '').toBe(true);
    } else {
      // Linux without glibc (musl): uWebSockets.js has no binary; its own reason is passed on.
      expect('error' in loaded ? loaded.error : '').not.toBe('');
    }
  });
});
