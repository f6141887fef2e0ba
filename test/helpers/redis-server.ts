/** The tests start their own redis-server through the same module as the demo and the benchmarks. */
export { freePort, hasRedisServer, startRedisServer, type LocalRedis as RedisServer } from '../../src/local/redis-server.js';
