/**
 * Authentication and authorization of WebSocket documents. Runs before any document is created,
 * so a name that is not an active, unexpired session the user may join is refused without
 * loading anything. Refusals reach the provider as `onAuthenticationFailed({ reason })`, where
 * `reason` is the stable error code (`session_not_found`, `unauthorized`, …).
 */
import type { Extension, onAuthenticatePayload } from '@hocuspocus/server';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import type { Database } from '../../persistence/db.ts';
import { resolveRole, type Role } from '../auth/access.ts';
import type { TokenService } from '../auth/tokens.ts';

export interface ConnectionContext {
  userId: string;
  role: Role;
  tokenExpiresAt: number;
}

/** What Hocuspocus's `onAuthenticate` rejection needs: `reason` goes to the client. */
function refusal(error: AppError) {
  return { reason: error.code, code: error.closeCode };
}

export class AuthExtension implements Extension {
  extensionName = 'auth';
  priority = 1000;
  readonly #db: Database;
  readonly #tokens: TokenService;

  constructor(db: Database, tokens: TokenService) {
    this.#db = db;
    this.#tokens = tokens;
  }

  async onAuthenticate({ token, documentName, connectionConfig }: onAuthenticatePayload): Promise<ConnectionContext> {
    try {
      const claims = await this.#tokens.verify(token);
      if (!isId(documentName)) throw new AppError('session_not_found');
      const { role } = await resolveRole(this.#db, claims, documentName);
      connectionConfig.readOnly = role === 'viewer';
      return { userId: claims.sub, role, tokenExpiresAt: claims.exp };
    } catch (error) {
      // Thrown as a plain object on purpose: Hocuspocus logs thrown Errors' messages to the console.
      throw refusal(error instanceof AppError ? error : new AppError('internal'));
    }
  }
}
