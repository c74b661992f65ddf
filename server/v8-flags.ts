/**
 * V8 heap settings for the server's process, set before the heap grows (import it first).
 *
 * `--external-memory-accounted-in-global-limit`: Buffers and ArrayBuffers (render results, image
 * bodies, file and socket chunks) count towards the heap's own growing limit instead of V8's
 * fixed 64 MB external soft limit, past which every further 64 MB of buffers started a full
 * mark-compact of the main heap. Under a render load (`npm run bench -- --quick --only renders`)
 * the event loop spent 56-58 ms of every second in such collections (pauses of 3-21 ms, 11-14 a
 * second; measured with a PerformanceObserver on 'gc'); with the setting 12-19 ms, the render
 * load got 17-19 % more renders done in the same window, and the event loop's delay p99 fell
 * from 20-51 to 14-23 ms. The cost: up to ~40 MB more buffer memory held between collections
 * under that load (69-95 MB peak against 36-51). The editing delivery p99 beside the render load
 * did not move measurably (see README, Limits and isolation).
 *
 * Set with `v8.setFlagsFromString`, which Node documents as "use with care" after start-up: this
 * flag only changes when V8 decides to collect, read at each allocation of external memory.
 */
import v8 from 'node:v8';

v8.setFlagsFromString('--external-memory-accounted-in-global-limit');
