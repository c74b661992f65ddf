/** The integration matrix: both transports × both databases; uws cases skip with the reason. */
import { uwsLauncher } from './uws-runtime.ts';

export interface Case {
  name: string;
  transport: 'node' | 'uws';
  database: 'postgres' | 'pglite';
  skip: string | false;
}

export function matrix(): Case[] {
  const uws = uwsLauncher();
  const cases: Case[] = [];
  for (const transport of ['node', 'uws'] as const) {
    for (const database of ['postgres', 'pglite'] as const) {
      const skip = transport === 'uws' && !uws.ok ? uws.reason : false;
      cases.push({ name: `${transport} transport, ${database}`, transport, database, skip });
    }
  }
  return cases;
}
