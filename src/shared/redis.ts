/**
 * Redis connections. Two roles:
 * - `client` (SDK and CLI): no offline queue and one retry per command, so that a Redis that is down
 *   fails a call at once with a typed error (`redis_unavailable`) instead of hanging;
 * - `worker` (BullMQ workers): commands wait through reconnections (`maxRetriesPerRequest: null`,
 *   which BullMQ requires for its blocking commands).
 * Either way the first connection is awaited with a timeout and fails with `redis_unavailable`.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { BatchgenError } from './errors.js';
import { describeTlsFailure, isPermanentTlsError, isTlsUrl, tlsFilesFromEnv, tlsOptionsFor, type RedisTlsFiles } from './redis-tls.js';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** The URL from a flag, else REDIS_URL, else the default. */
export function redisUrlFrom(flag?: string): string {
  return flag ?? process.env.REDIS_URL ?? DEFAULT_REDIS_URL;
}

export type RedisRole = 'client' | 'worker';

export interface RedisConnectionOptions {
  /** Default: REDIS_URL, else redis://127.0.0.1:6379. */
  url?: string;
  /** Default `client`. */
  role?: RedisRole;
  /** How long the first connection may take. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Connection name shown by CLIENT LIST. */
  name?: string;
  /** CA and client certificate files for a rediss:// URL. Default: BATCHGEN_REDIS_CA, BATCHGEN_REDIS_CERT, BATCHGEN_REDIS_KEY. */
  tls?: RedisTlsFiles;
}

/** Redacts the password of a URL for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

function optionsFor(role: RedisRole, name: string | undefined, timeoutMs: number): RedisOptions {
  const common: RedisOptions = { lazyConnect: true, connectTimeout: timeoutMs, connectionName: name };
  if (role === 'worker') {
    return { ...common, maxRetriesPerRequest: null, enableReadyCheck: true, retryStrategy: (times) => Math.min(100 * times, 2000) };
  }
  return { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: (times) => Math.min(100 * times, 2000) };
}

/** A connection that is ready, or a BatchgenError('redis_unavailable') within the timeout. */
export async function connectRedis(opts: RedisConnectionOptions = {}): Promise<Redis> {
  const url = redisUrlFrom(opts.url);
  const timeoutMs = opts.connectTimeoutMs ?? 5000;
  const tlsFiles = opts.tls ?? tlsFilesFromEnv();
  const tls = tlsOptionsFor(url, tlsFiles);
  const redis = new Redis(url, { ...optionsFor(opts.role ?? 'client', opts.name, timeoutMs), ...(tls ? { tls } : {}) });
  let lastError: Error | null = null;
  let failFast: ((e: Error) => void) | null = null;
  const onError = (e: Error) => {
    lastError = e;
    // a certificate that does not verify, or a refused handshake, will not change by retrying
    if (isTlsUrl(url) && isPermanentTlsError(e as NodeJS.ErrnoException)) failFast?.(e);
  };
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      failFast = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      const timer = setTimeout(() => reject(new Error(lastError ? lastError.message : `no answer within ${timeoutMs} ms`)), timeoutMs);
      redis.connect().then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  } catch (e) {
    redis.disconnect();
    const tlsWhy = isTlsUrl(url) && lastError ? describeTlsFailure(lastError as NodeJS.ErrnoException, tlsFiles) : null;
    if (tlsWhy) throw new BatchgenError('redis_tls_failed', `TLS to Redis at ${redactUrl(url)} failed: ${tlsWhy}`);
    // a refused login surfaces as an 'error' event, the connect itself only as "Connection is closed"
    const refused = (lastError as Error | null)?.message;
    if (refused && /^(NOAUTH|WRONGPASS|NOPERM)\b/.test(refused)) {
      throw new BatchgenError(
        'redis_auth_failed',
        `Redis at ${redactUrl(url)} refused the login: ${refused.split('\n')[0]} (give the user and password in the URL: redis://user:password@host:port)`,
      );
    }
    const plainToTls =
      !isTlsUrl(url) && /Connection is closed|ECONNRESET/.test((e as Error).message) ? ' (if this Redis takes TLS, use rediss://)' : '';
    throw new BatchgenError('redis_unavailable', `cannot reach Redis at ${redactUrl(url)}: ${(e as Error).message}${plainToTls}`);
  }
  return redis;
}

/** Wraps a Redis failure of a client call into a typed error; other errors pass through. */
export function asRedisError(e: unknown, url: string): unknown {
  if (e instanceof BatchgenError) return e;
  const msg = (e as Error)?.message ?? String(e);
  if (
    /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|Stream isn't writeable|enableOfflineQueue|MaxRetriesPerRequest|EPIPE|ENOTFOUND|EHOSTUNREACH/i.test(
      msg,
    )
  ) {
    return new BatchgenError('redis_unavailable', `Redis at ${redactUrl(url)} is unavailable: ${msg}`);
  }
  return e;
}
