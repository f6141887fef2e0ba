/** batchgen's library entry: the producer SDK, the worker, and the shared contracts. */
export { GenerationClient } from './producer/client.js';
export type { GenerationClientOptions, GenerateResult } from './producer/client.js';
export { BatchHandle, isTerminal } from './producer/batch-handle.js';
export type { WaitOptions } from './producer/batch-handle.js';
export { newBatchId } from './producer/submission.js';
export type { SubmitOptions, SubmitReport } from './producer/submission.js';
export { planBuckets, policyPadding, listPadding } from './producer/bucket-plan.js';
export { BatchWorker } from './worker/worker.js';
export type { BatchWorkerOptions } from './worker/options.js';
export type { WorkerStats } from './worker/heartbeat.js';
export { BatchStore, DEFAULT_RETENTION_S } from './shared/batch-store.js';
export type { BatchRecord } from './shared/batch-store.js';
export { Keyspace, jobIdOf, parseJobId } from './shared/keys.js';
export { parseRequestLine, fromOpenAI } from './shared/requests.js';
export { formatResultLine, toOpenAIBatch } from './shared/output.js';
export * from './shared/schemas.js';
export { BatchgenError } from './shared/errors.js';
export type { ErrorCode } from './shared/errors.js';
