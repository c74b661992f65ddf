import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, redisTarget } from '../server/config.ts';

describe('configuration', () => {
  it('has the contract defaults', () => {
    expect(loadConfig({})).toMatchObject({ PORT: 8080, HOST: '127.0.0.1', DATA_DIR: './data', TRANSPORT: 'auto' });
  });

  it.each([
    [{ PORT: 'eighty' }, /^invalid configuration: PORT /],
    [{ PORT: '70000' }, /^invalid configuration: PORT /],
    [{ TRANSPORT: 'quic' }, /^invalid configuration: TRANSPORT /],
    [{ DATABASE_URL: 'mysql://x' }, /^invalid configuration: DATABASE_URL must be a postgres:\/\/ URL$/],
    [{ DATABASE_URL: 'postgres://x/y' }, /^invalid configuration: AUTH_JWT_SECRET is required when DATABASE_URL is set$/],
    [{ AUTH_JWT_SECRET: 'short' }, /^invalid configuration: AUTH_JWT_SECRET must be at least 32 characters$/],
    [{ NODE_ID: 'has space' }, /^invalid configuration: NODE_ID /],
    [{ REDIS_URL: 'http://x' }, /^invalid configuration: REDIS_URL /],
    [{ REDIS_URL: 'redis+cluster://a:1,b' }, /^invalid configuration: REDIS_URL must be redis\+cluster:\/\/\[user:password@\]host:port/],
    [{ REDIS_CLUSTER_NODES: 'a:1,,b:2' }, /^invalid configuration: REDIS_CLUSTER_NODES must be comma-separated host:port$/],
    [{ REDIS_CLUSTER_NODES: 'a' }, /^invalid configuration: REDIS_CLUSTER_NODES must be comma-separated host:port$/],
    [{ REDIS_URL: 'redis://x', REDIS_CLUSTER_NODES: 'a:1' }, /^invalid configuration: REDIS_CLUSTER_NODES and REDIS_URL are both set/],
    [{ AUTOSAVE_QUIET_MS: '-1' }, /^invalid configuration: AUTOSAVE_QUIET_MS /],
    [{ AUTOSAVE_QUIET_MS: 'soon' }, /^invalid configuration: AUTOSAVE_QUIET_MS /],
    [{ ACCESS_RECHECK_MS: '10' }, /^invalid configuration: ACCESS_RECHECK_MS /],
  ])('refuses %o with a one-line reason', (env, message) => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
  });

  it('names one Redis, a Redis Cluster (REDIS_CLUSTER_NODES or a redis+cluster:// URL), or none', () => {
    expect(redisTarget(loadConfig({}))).toBeUndefined();
    expect(redisTarget(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379/2' }))).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379/2' });
    const nodes = [{ host: '10.0.0.1', port: 7000 }, { host: 'redis-b', port: 7001 }];
    expect(redisTarget(loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,redis-b:7001' }))).toEqual({ kind: 'cluster', nodes });
    expect(redisTarget(loadConfig({ REDIS_URL: 'redis+cluster://10.0.0.1:7000,redis-b:7001' }))).toEqual({ kind: 'cluster', nodes });
    expect(redisTarget(loadConfig({ REDIS_URL: 'redis+cluster://me:p%40ss@10.0.0.1:7000,redis-b:7001/' }))).toEqual({ kind: 'cluster', nodes, username: 'me', password: 'p@ss' });
  });

  it('autosaves after 30 s of quiet by default; 0 turns the timer off', () => {
    expect(loadConfig({}).AUTOSAVE_QUIET_MS).toBe(30_000);
    expect(loadConfig({ AUTOSAVE_QUIET_MS: '0' }).AUTOSAVE_QUIET_MS).toBe(0);
  });

  it('re-checks open connections\' access at least every 60 s by default', () => {
    expect(loadConfig({}).ACCESS_RECHECK_MS).toBe(60_000);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ PORT: '', DATABASE_URL: '' })).toMatchObject({ PORT: 8080 });
  });
});
