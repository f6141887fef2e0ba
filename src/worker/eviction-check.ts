/**
 * The worker's check of Redis's `maxmemory-policy` at start: an evicting policy can drop queue keys
 * and lose jobs, so it is refused unless allowed; a Redis that refuses CONFIG GET is only warned about.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { BatchgenError } from '../shared/errors.js';

/** @throws BatchgenError `invalid_config` when the policy evicts and `allowEviction` is off */
export async function checkEvictionPolicy(redis: Redis, allowEviction: boolean | undefined, log: Logger): Promise<void> {
  try {
    const r = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const policy = r[1];
    if (policy !== 'noeviction') {
      const why = `Redis maxmemory-policy is "${policy}", not "noeviction": under memory pressure Redis may evict queue keys and lose jobs`;
      if (!allowEviction)
        throw new BatchgenError('invalid_config', `${why} (set maxmemory-policy noeviction, or pass --allow-eviction to run anyway)`);
      log.warn({ policy }, `${why} (allowed by --allow-eviction)`);
    }
  } catch (e) {
    if (e instanceof BatchgenError) throw e;
    log.warn({ err: (e as Error).message }, 'could not read Redis maxmemory-policy (CONFIG GET refused?): make sure it is noeviction');
  }
}
