/**
 * TRANSPORT=auto says why it did not pick uWebSockets.js: on glibc older than 2.38 (docs/STACK-NOTES.md)
 * the reason names the glibc versions, not uWS's own message about Node versions.
 */
import { describe, expect, it } from 'vitest';
import { compareVersions, glibcVersion, loadUws, UWS_MIN_GLIBC } from '../server/transport/uws.ts';

describe('loading uWebSockets.js', () => {
  it('loads on glibc >= 2.38 and otherwise names the glibc it found', () => {
    expect(compareVersions('2.36', UWS_MIN_GLIBC)).toBeLessThan(0);
    expect(compareVersions('2.41', UWS_MIN_GLIBC)).toBeGreaterThan(0);
    const glibc = glibcVersion();
    const loaded = loadUws();
    if (glibc && compareVersions(glibc, UWS_MIN_GLIBC) < 0) {
      // One breath: the reason and nothing else (not uWS's paragraph about Node versions).
      expect('error' in loaded ? loaded.error : 'loaded').toBe(`it needs glibc >= 2.38, this machine has ${glibc}`);
    } else if (glibc || process.platform !== 'linux') {
      expect('uws' in loaded, 'error' in loaded ? loaded.error : '').toBe(true);
    } else {
      // Linux without glibc (musl): uWebSockets.js has no binary; its own reason is passed on.
      expect('error' in loaded ? loaded.error : '').not.toBe('');
    }
  });
});
