/**
 * The signed URLs a version's JSON and the thumbnailReady message carry (README "Signed URLs"):
 * built here so the routes that serve them and the places that hand them out agree.
 */
import type { VersionJson } from '../shared/versions.ts';
import { thumbnailParams, type RenderParams } from './renders.ts';
import type { UrlSigner } from './signed-urls.ts';

export const versionRenderPath = (versionId: string) => `/api/versions/${versionId}/render`;
export const sessionRenderPath = (sessionId: string) => `/api/sessions/${sessionId}/render`;

const asQuery = (params: RenderParams): Record<string, string | number | undefined> => ({ ...params });

export function thumbnailUrl(signer: UrlSigner, versionId: string, userId: string, size: number): string {
  return signer.sign('GET', versionRenderPath(versionId), userId, asQuery(thumbnailParams(size)));
}

export function renderUrl(signer: UrlSigner, versionId: string, userId: string, params: Partial<RenderParams> = {}): string {
  return signer.sign('GET', versionRenderPath(versionId), userId, asQuery({ format: 'webp', ...params }));
}

/** A version's JSON with its signed URLs for `userId` (the thumbnail's only once it exists). */
export function withUrls<T extends VersionJson>(json: T, signer: UrlSigner, userId: string, thumbnailSize: number): T {
  return {
    ...json,
    thumbnailUrl: json.thumbnailPath ? thumbnailUrl(signer, json.versionId, userId, thumbnailSize) : null,
    renderUrl: renderUrl(signer, json.versionId, userId),
  };
}
