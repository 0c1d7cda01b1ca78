// Swift auth modes behind one interface, so SwiftStore only knows
// "authenticate()": v1/tempauth and Keystone v3 password auth. Both go through
// SwiftHttp, so auth requests get the same timeouts and retry budget as data
// requests and never hang.

import { StoreError } from './object-store.js';
import { drain, header, isRetryableStatus, readBody, statusLine, transientStatus, type SwiftHttp } from './swift-http.js';

export interface SwiftCredentials {
  /** Account URL, e.g. http://127.0.0.1:8080/v1/AUTH_test (no trailing '/'). */
  storageUrl: string;
  token: string;
}

export interface SwiftAuth {
  /** For messages. */
  readonly authUrl: string;
  readonly user: string;
  /** Obtains a fresh token; throws StoreError('auth') on rejected credentials. */
  authenticate(http: SwiftHttp): Promise<SwiftCredentials>;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

function checkUrl(what: string, url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${what} ${JSON.stringify(url)} is not a valid URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`${what} ${JSON.stringify(url)} is not an http(s) URL`);
  }
}

export interface TempAuthOptions {
  /** e.g. http://127.0.0.1:8080/auth/v1.0 */
  authUrl: string;
  /** "account:user", as tempauth spells it. */
  user: string;
  key: string;
}

/** Auth v1 (tempauth, swauth, and most v1-compatible gateways). */
export class TempAuth implements SwiftAuth {
  readonly authUrl: string;
  readonly user: string;
  private readonly key: string;

  constructor(options: TempAuthOptions) {
    checkUrl('auth URL', options.authUrl);
    this.authUrl = options.authUrl;
    this.user = options.user;
    this.key = options.key;
  }

  authenticate(http: SwiftHttp): Promise<SwiftCredentials> {
    return http.withRetries(`Swift auth at ${this.authUrl}`, async () => {
      const res = await http.send({
        method: 'GET',
        url: this.authUrl,
        headers: { 'x-auth-user': this.user, 'x-auth-key': this.key },
      });
      const status = res.statusCode;
      if (status >= 200 && status < 300) {
        await drain(res.body);
        const storageUrl = header(res, 'x-storage-url');
        const token = header(res, 'x-auth-token') ?? header(res, 'x-storage-token');
        if (!storageUrl || !token) {
          throw new StoreError('auth', `auth at ${this.authUrl} answered ${status} without X-Storage-Url and X-Auth-Token`);
        }
        return { storageUrl: trimSlash(storageUrl), token };
      }
      if (isRetryableStatus(status)) throw await transientStatus(res);
      const line = await statusLine(res);
      if (status === 401 || status === 403) {
        throw new StoreError('auth', `authentication failed for user ${this.user} at ${this.authUrl}: ${line}`);
      }
      throw new StoreError('auth', `unexpected answer from auth at ${this.authUrl} for user ${this.user}: ${line}`);
    });
  }
}

export interface KeystoneAuthOptions {
  /** OS_AUTH_URL, with or without the trailing /v3. */
  authUrl: string;
  username: string;
  password: string;
  /** Project scope: by name (with its domain) or by id. */
  projectName?: string;
  projectId?: string;
  /** Default "Default". */
  userDomainName?: string;
  userDomainId?: string;
  /** Default "Default". */
  projectDomainName?: string;
  projectDomainId?: string;
  /** Restricts the object-store endpoint to this region. */
  region?: string;
  /** Endpoint interface: public (default), internal or admin. */
  interface?: string;
}

interface CatalogEndpoint {
  interface?: unknown;
  region?: unknown;
  region_id?: unknown;
  url?: unknown;
}

interface CatalogEntry {
  type?: unknown;
  endpoints?: unknown;
}

/** Keystone v3 password auth, project-scoped; the object-store endpoint comes from the catalog. */
export class KeystoneAuth implements SwiftAuth {
  readonly authUrl: string;
  readonly user: string;
  private readonly options: KeystoneAuthOptions;
  private readonly tokensUrl: string;

  constructor(options: KeystoneAuthOptions) {
    checkUrl('Keystone auth URL', options.authUrl);
    if (!options.projectName && !options.projectId) {
      throw new Error('Keystone auth needs a project name or a project id');
    }
    this.options = options;
    this.authUrl = options.authUrl;
    this.user = options.username;
    // OS_AUTH_URL is given both as http://host:5000 and http://host:5000/v3.
    const base = trimSlash(options.authUrl);
    this.tokensUrl = /\/v3$/.test(base) ? `${base}/auth/tokens` : `${base}/v3/auth/tokens`;
  }

  private requestBody(): string {
    const o = this.options;
    const userDomain = o.userDomainId ? { id: o.userDomainId } : { name: o.userDomainName ?? 'Default' };
    const project = o.projectId
      ? { id: o.projectId }
      : {
          name: o.projectName,
          domain: o.projectDomainId ? { id: o.projectDomainId } : { name: o.projectDomainName ?? 'Default' },
        };
    return JSON.stringify({
      auth: {
        identity: {
          methods: ['password'],
          password: { user: { name: o.username, domain: userDomain, password: o.password } },
        },
        scope: { project },
      },
    });
  }

  private endpoint(body: unknown): string {
    // OS_ENDPOINT_TYPE-style "publicURL" means "public".
    const wantInterface = (this.options.interface ?? 'public').replace(/URL$/, '');
    const region = this.options.region;
    const catalog = (body as { token?: { catalog?: unknown } } | null)?.token?.catalog;
    const where = `interface ${wantInterface}${region ? `, region ${region}` : ''}`;
    if (!Array.isArray(catalog)) {
      throw new StoreError('auth', `Keystone at ${this.authUrl} returned a token without a service catalog for user ${this.user}`);
    }
    for (const entry of catalog as CatalogEntry[]) {
      if (entry?.type !== 'object-store' || !Array.isArray(entry.endpoints)) continue;
      for (const ep of entry.endpoints as CatalogEndpoint[]) {
        // Keystone spells interfaces "public"; v2-style "publicURL" shows up in some tools.
        const iface = typeof ep.interface === 'string' ? ep.interface.replace(/URL$/, '') : undefined;
        if (iface !== wantInterface) continue;
        if (region && ep.region !== region && ep.region_id !== region) continue;
        if (typeof ep.url === 'string' && ep.url) return trimSlash(ep.url);
      }
    }
    throw new StoreError(
      'auth',
      `Keystone at ${this.authUrl} has no object-store endpoint (${where}) in the catalog for user ${this.user}`,
    );
  }

  authenticate(http: SwiftHttp): Promise<SwiftCredentials> {
    const body = Buffer.from(this.requestBody(), 'utf8');
    return http.withRetries(`Keystone at ${this.authUrl}`, async () => {
      const res = await http.send({
        method: 'POST',
        url: this.tokensUrl,
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
      });
      const status = res.statusCode;
      if (status === 201 || status === 200) {
        const token = header(res, 'x-subject-token');
        const text = (await readBody(res)).toString('utf8');
        if (!token) {
          throw new StoreError('auth', `Keystone at ${this.authUrl} answered ${status} without X-Subject-Token`);
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          throw new StoreError('auth', `Keystone at ${this.authUrl} answered ${status} with a body that is not JSON`);
        }
        return { storageUrl: this.endpoint(parsed), token };
      }
      if (isRetryableStatus(status)) throw await transientStatus(res);
      const line = await statusLine(res);
      if (status === 401 || status === 403) {
        throw new StoreError('auth', `authentication failed for user ${this.user} at ${this.authUrl}: ${line}`);
      }
      throw new StoreError('auth', `unexpected answer from Keystone at ${this.authUrl} for user ${this.user}: ${line}`);
    });
  }
}
