/**
 * The guard's inline path: a small Yjs V1 update that a linear read proves harmless is applied on
 * the event loop without the worker round trip (server/yjs-guard.ts). Everything else, and
 * anything this reader does not fully understand, still goes to the worker.
 *
 * Why this is safe for small updates. The worker exists for updates whose decode or integration
 * costs far more CPU than their size suggests (yjs#687), and for updates Yjs would keep pending.
 * This reader walks the update exactly as Yjs's `readClientsStructRefs` and `readAndApplyDeleteSet`
 * do (V1: `UpdateDecoderV1`, `DSDecoderV1`), consuming every byte, and answers "inline" only when:
 *   - the update is at most `maxBytes` long (default 1 KiB: at most ~250 items, so even the worst
 *     YATA conflict scan among its own items is ~31,000 steps, well under a millisecond);
 *   - it parses to the last byte (no trailing bytes, no read past the end);
 *   - every struct is an Item whose content is one of the ordinary kinds (deleted, JSON, binary,
 *     string, embed, format, type with a known type ref, any); GC and Skip structs and subdocuments
 *     go to the worker;
 *   - nothing would stay pending: each client block starts at or below what the document has of that
 *     client, every origin, right origin and parent ID is already in the document (or earlier in the
 *     same block), and every deleted range lies within the document's state or the update's own
 *     structs.
 * A "worker" answer says nothing about the update; the worker decides.
 *
 * What this reader does not check: that JSON and embed strings parse. Yjs parses them while it reads
 * the structs, before it integrates anything, so such an update throws in `Y.applyUpdate` and
 * changes nothing; the update path refuses it then.
 */
import * as decoding from 'lib0/decoding';
import * as Y from 'yjs';

/** Default `maxBytes`: see the header. */
export const INLINE_GUARD_MAX_BYTES = 1024;

/** Yjs content refs (`Item.contentRefs`) this reader accepts inline. */
const DELETED = 1;
const JSON_CONTENT = 2;
const BINARY = 3;
const STRING = 4;
const EMBED = 5;
const FORMAT = 6;
const TYPE = 7;
const ANY = 8;
/** Type refs of `ContentType` (`YArrayRefID` … `YXmlTextRefID`); 3 (XmlElement) and 5 (XmlHook) carry a name. */
const MAX_TYPE_REF = 6;

const BIT6 = 32;
const BIT7 = 64;
const BIT8 = 128;
const BITS5 = 31;

/**
 * True when `update` (a Yjs V1 update from a read-write client) may be applied to `doc` on the event
 * loop without the worker: see the header for the rules. Never throws.
 */
export function inlineSafe(update: Uint8Array, doc: Y.Doc, maxBytes = INLINE_GUARD_MAX_BYTES): boolean {
  if (update.byteLength > maxBytes || update.byteLength < 2) return false;
  try {
    return check(update, doc);
  } catch {
    return false; // malformed or past the end: the worker gives the verdict
  }
}

function check(update: Uint8Array, doc: Y.Doc): boolean {
  const d = decoding.createDecoder(update);
  const state = (client: number) => Y.getState(doc.store, client);
  /** Per client of this update: the clock after its block (its own structs end there). */
  const ownEnd = new Map<number, number>();
  const blocks = decoding.readVarUint(d);
  if (blocks > update.byteLength) return false;
  for (let b = 0; b < blocks; b++) {
    const structs = decoding.readVarUint(d);
    const client = decoding.readVarUint(d);
    let clock = decoding.readVarUint(d);
    if (structs === 0 || structs > update.byteLength || ownEnd.has(client)) return false;
    // A gap before the block: Yjs would keep it pending.
    if (clock > state(client)) return false;
    const known = (refClient: number, refClock: number) => (refClient === client ? refClock < clock : refClock < state(refClient));
    for (let s = 0; s < structs; s++) {
      if (d.pos >= update.byteLength) return false;
      const info = decoding.readUint8(d);
      const kind = info & BITS5;
      if (kind < DELETED || kind > ANY) return false; // GC, Skip, subdocuments, unknown: the worker
      if ((info & BIT8) !== 0 && !known(decoding.readVarUint(d), decoding.readVarUint(d))) return false;
      if ((info & BIT7) !== 0 && !known(decoding.readVarUint(d), decoding.readVarUint(d))) return false;
      if ((info & (BIT7 | BIT8)) === 0) {
        if (decoding.readVarUint(d) === 1) decoding.readVarString(d); // a root type's name
        else if (!known(decoding.readVarUint(d), decoding.readVarUint(d))) return false; // parent ID
        if ((info & BIT6) !== 0) decoding.readVarString(d); // parentSub (a map key)
      }
      const length = contentLength(d, kind);
      if (length < 1) return false;
      clock += length;
    }
    ownEnd.set(client, clock);
  }
  // The delete set, as readAndApplyDeleteSet reads it: nothing outside what exists may be deleted.
  const clients = decoding.readVarUint(d);
  if (clients > update.byteLength) return false;
  for (let c = 0; c < clients; c++) {
    const client = decoding.readVarUint(d);
    const deletes = decoding.readVarUint(d);
    if (deletes > update.byteLength) return false;
    const end = Math.max(state(client), ownEnd.get(client) ?? 0);
    for (let i = 0; i < deletes; i++) {
      const clock = decoding.readVarUint(d);
      const len = decoding.readVarUint(d);
      if (clock + len > end) return false;
    }
  }
  return d.pos === update.byteLength;
}

/** Reads one item's content (as `readItemContent` does) and returns its length in clocks, or 0 to refuse. */
function contentLength(d: decoding.Decoder, kind: number): number {
  switch (kind) {
    case DELETED:
      return decoding.readVarUint(d);
    case JSON_CONTENT: {
      const len = decoding.readVarUint(d);
      if (len > d.arr.length) return 0;
      for (let i = 0; i < len; i++) decoding.readVarString(d);
      return len;
    }
    case BINARY:
      decoding.readVarUint8Array(d);
      return 1;
    case STRING:
      // ContentString's length is the string's UTF-16 length.
      return decoding.readVarString(d).length;
    case EMBED:
      decoding.readVarString(d);
      return 1;
    case FORMAT:
      decoding.readVarString(d);
      decoding.readVarString(d);
      return 1;
    case TYPE: {
      const ref = decoding.readVarUint(d);
      if (ref > MAX_TYPE_REF) return 0;
      if (ref === 3 || ref === 5) decoding.readVarString(d);
      return 1;
    }
    case ANY: {
      const len = decoding.readVarUint(d);
      if (len > d.arr.length) return 0;
      for (let i = 0; i < len; i++) decoding.readAny(d);
      return len;
    }
    default:
      return 0;
  }
}
