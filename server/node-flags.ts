/**
 * The Node.js flags the server runs with. `npm start` passes them (package.json's `start`
 * script), and so do the launchers of the tests and the bench (test/support/server-process.ts,
 * bench/lib/targets.ts), so what is tested and measured is what runs; test/node-flags.test.ts
 * checks package.json against this list. V8 reads them when it sets its heap up, so they cannot be
 * set from inside the process (`v8.setFlagsFromString('--max-semi-space-size=…')` after start-up
 * doubled the young generation instead).
 *
 * `--max-semi-space-size=16` (MB): half of V8's default on this kind of machine (32 MB per
 * semi-space, a 64 MB young generation, scaled from the 4 GB heap limit). A burst of connections
 * (a reconnect storm, the bench's 5,000) allocates fast enough to grow the young generation to
 * its maximum, and the process keeps those pages: with the default, about half of the RSS an idle
 * connection seemed to cost was that growth (the JavaScript heap an idle connection retains is
 * ~11 kB on uWebSockets.js, by heap-snapshot difference). Measured with `BENCH_TARGETS=ours-uws,
 * ours-node BENCH_SERVER_NODE_OPTIONS=… npm run bench -- --only connections --rounds 1`,
 * alternating, 5,000 connections: RSS per connection, default → 16 MB, 25.5 / 28.0 → 10.9 / 9.5 kB
 * on uWS and 25.5 / 25.3 → 14.4 / 14.1 kB on node, with the same accept rate and CPU per
 * connection; 8 MB was no smaller, and 1 MB cost 7-20 % more CPU per connection. The fan-out's
 * CPU per delivery did not move beyond its spread: against stock in the same runs (`--only fanout
 * --rounds 2`, two runs each, alternating) 1.46 / 1.44× → 1.48 / 1.52× on node and 1.31 / 1.25× →
 * 1.24 / 1.34× on uWS. Stock with the same flag shrinks too (34.5 → 18.1 kB): README, "Memory per
 * idle connection".
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
