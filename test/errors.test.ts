import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AppError, errors } from '../shared/errors.ts';
import { readmeTable, renderErrorTable } from '../scripts/readme-errors.ts';

describe('error registry', () => {
  it('is documented in the README exactly (node scripts/readme-errors.ts --write regenerates it)', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    expect(readmeTable(readme)).toBe(renderErrorTable());
  });

  it('gives every code a 4xx/5xx status, a sentence, and a Hocuspocus-range close code where set', () => {
    for (const [code, entry] of Object.entries(errors)) {
      expect(code).toMatch(/^[a-z_]+$/);
      expect(entry.status).toBeGreaterThanOrEqual(400);
      expect(entry.status).toBeLessThan(600);
      expect(entry.message).toMatch(/^[A-Z].*\.$/);
      if ('closeCode' in entry) expect([1003, 1007, 1008, 1009, 1012, 1013, 4400, 4401, 4403, 4404, 4408, 4410, 4413, 4429]).toContain(entry.closeCode);
    }
  });

  it('renders as the contract JSON', () => {
    expect(new AppError('session_ended').toJSON()).toEqual({
      error: { code: 'session_ended', message: errors.session_ended.message },
    });
  });
});
