/**
 * TLS for Redis connections: `rediss://` URLs, with the CA and a client certificate given as files.
 *
 * - The server's certificate is verified, always: against Node's roots plus NODE_EXTRA_CA_CERTS
 *   (read by Node at start), or, when BATCHGEN_REDIS_CA names a PEM file, against that CA alone.
 * - BATCHGEN_REDIS_CERT and BATCHGEN_REDIS_KEY name a client certificate and its key (PEM), for a
 *   Redis started with `--tls-auth-clients yes`.
 * A file that cannot be read is an `invalid_config` error naming the variable and the file.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { BatchgenError } from './errors.js';

/** Where the CA and the client certificate come from (each a PEM file path). */
export interface RedisTlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

export const TLS_ENV = { ca: 'BATCHGEN_REDIS_CA', cert: 'BATCHGEN_REDIS_CERT', key: 'BATCHGEN_REDIS_KEY' } as const;

/** The TLS files named by the environment. */
export function tlsFilesFromEnv(env: NodeJS.ProcessEnv = process.env): RedisTlsFiles {
  return { ca: env[TLS_ENV.ca] || undefined, cert: env[TLS_ENV.cert] || undefined, key: env[TLS_ENV.key] || undefined };
}

export function isTlsUrl(url: string): boolean {
  return /^rediss:\/\//i.test(url);
}

function readPem(what: keyof RedisTlsFiles, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new BatchgenError('invalid_config', `${TLS_ENV[what]}=${file}: cannot read the ${what} file (${code})`);
  }
}

/**
 * ioredis's `tls` option for a URL: undefined for `redis://` (a CA or certificate set for a plain
 * URL is an error: it would silently go unused), the files' contents for `rediss://`.
 */
export function tlsOptionsFor(url: string, files: RedisTlsFiles = tlsFilesFromEnv()): ConnectionOptions | undefined {
  const given = (Object.keys(files) as (keyof RedisTlsFiles)[]).filter((k) => files[k]);
  if (!isTlsUrl(url)) {
    if (given.length > 0) {
      throw new BatchgenError(
        'invalid_config',
        `${given.map((k) => TLS_ENV[k]).join(', ')} set, but the Redis URL is not rediss://: use rediss://host:port for TLS`,
      );
    }
    return undefined;
  }
  if (Boolean(files.cert) !== Boolean(files.key)) {
    throw new BatchgenError('invalid_config', `${TLS_ENV.cert} and ${TLS_ENV.key} go together: a client certificate needs its key`);
  }
  const opts: ConnectionOptions = { rejectUnauthorized: true };
  if (files.ca) opts.ca = readPem('ca', files.ca);
  if (files.cert) opts.cert = readPem('cert', files.cert);
  if (files.key) opts.key = readPem('key', files.key);
  return opts;
}

const VERIFY_CODES =
  /SELF_SIGNED_CERT|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED|CERT_REJECTED|self[- ]signed certificate|unable to verify|unable to get (local )?issuer|Hostname\/IP does not match|certificate has expired/i;
const CLIENT_CERT = /certificate required|alert handshake failure|alert bad certificate|unknown ca|ERR_SSL_TLSV1?3?_ALERT/i;
const HANDSHAKE_CLOSED = /ECONNRESET|socket hang up|before secure TLS connection was established/i;
const NOT_TLS = /wrong version number|packet length too long|ERR_SSL_WRONG_VERSION_NUMBER|http request/i;

/**
 * The reason a TLS connection failed, told so that it can be fixed, or null when the error is not a
 * TLS one. `err` is what the socket reported (message and code).
 */
export function describeTlsFailure(err: { message: string; code?: string }, files: RedisTlsFiles = tlsFilesFromEnv()): string | null {
  const text = `${err.code ?? ''} ${err.message}`;
  // OpenSSL's alerts come with their source location: keep the words
  const alert = /(tlsv1\d? alert [a-z ]+|sslv3 alert [a-z ]+)/i.exec(err.message);
  err = { code: err.code, message: alert ? alert[1] : err.message.split('\n')[0] };
  if (VERIFY_CODES.test(text)) {
    const ca = files.ca ? `the CA in ${TLS_ENV.ca}=${files.ca}` : 'the CAs Node trusts (its roots and NODE_EXTRA_CA_CERTS)';
    return `the server's certificate does not verify against ${ca}: ${err.message} (give the CA that signed it with ${TLS_ENV.ca}=FILE or NODE_EXTRA_CA_CERTS=FILE; the certificate must name the host of the URL)`;
  }
  if (CLIENT_CERT.test(text)) {
    const cert = files.cert ? `the client certificate in ${TLS_ENV.cert}=${files.cert} was refused` : 'no client certificate was given';
    return `the server refused the TLS handshake (${err.message}): ${cert}; a Redis with tls-auth-clients needs ${TLS_ENV.cert}=FILE and ${TLS_ENV.key}=FILE signed by a CA it trusts`;
  }
  if (NOT_TLS.test(text)) return `the server does not speak TLS on this port (${err.message}): use redis:// for a plain port`;
  if (HANDSHAKE_CLOSED.test(text)) {
    // with TLS 1.3 a server that wants a client certificate just closes the connection
    return files.cert
      ? `the server closed the connection during the TLS handshake (${err.message}): it may not trust the client certificate in ${TLS_ENV.cert}=${files.cert}`
      : `the server closed the connection during the TLS handshake (${err.message}): if it asks for client certificates (tls-auth-clients), set ${TLS_ENV.cert}=FILE and ${TLS_ENV.key}=FILE`;
  }
  return null;
}

/** Whether a TLS error will not go away by connecting again (a certificate that does not verify, a refused handshake). */
export function isPermanentTlsError(err: { message: string; code?: string }): boolean {
  const text = `${err.code ?? ''} ${err.message}`;
  return VERIFY_CODES.test(text) || CLIENT_CERT.test(text) || NOT_TLS.test(text);
}
