/** Typed errors: every error a user can see carries a stable `code` and a message naming the culprit. */
export type ErrorCode =
  | 'invalid_request'
  | 'unsupported_parameter'
  | 'context_length_exceeded'
  | 'unknown_model'
  | 'duplicate_custom_id'
  | 'model_format'
  | 'shape_mismatch'
  | 'redis_unavailable'
  | 'invalid_payload'
  | 'generation_failed'
  | 'cancelled'
  | 'idempotency_conflict'
  | 'batch_finished'
  | 'file_not_found'
  | 'empty_input'
  | 'not_found'
  | 'already_exists'
  | 'batch_active'
  | 'permission_denied'
  | 'port_in_use'
  | 'invalid_config'
  | 'redis_out_of_memory'
  | 'redis_auth_failed'
  | 'redis_tls_failed'
  | 'redis_permission_denied'
  | 'redis_error'
  | 'internal_error';

export class BatchgenError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'BatchgenError';
    this.code = code;
  }
}

/** A model folder that cannot be loaded; the message always names the file. */
export class ModelFormatError extends BatchgenError {
  readonly file: string;
  constructor(file: string, problem: string) {
    super('model_format', `${file}: ${problem}`);
    this.name = 'ModelFormatError';
    this.file = file;
  }
}

/** A compiled variant was called with inputs of another shape: a retrace refused, never done silently. */
export class ShapeMismatchError extends BatchgenError {
  constructor(message: string) {
    super('shape_mismatch', message);
    this.name = 'ShapeMismatchError';
  }
}
