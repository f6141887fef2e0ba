/**
 * A plain BullMQ worker for the system benchmark's baseline: a processor that returns at once.
 * Usage: node dist/bench/plain-bullmq-worker.js REDIS_URL QUEUE_NAME CONCURRENCY
 */
import { Worker } from 'bullmq';

const [url, name, concurrency] = process.argv.slice(2);
const worker = new Worker(name, async () => null, {
  connection: { url, maxRetriesPerRequest: null },
  concurrency: Number(concurrency ?? 8),
  prefix: 'plain',
});
await worker.waitUntilReady();
process.stderr.write('ready\n');
const stop = async () => {
  await worker.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
