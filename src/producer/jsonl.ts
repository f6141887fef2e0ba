/** JSONL in and out: numbered request lines from a file, and result and error files written line by line. */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { formatErrorLine, formatResultLine } from '../shared/output.js';
import { BatchgenError } from '../shared/errors.js';
import { LIMITS } from '../shared/limits.js';
import type { ErrorRecord, ResultRecord } from '../shared/schemas.js';

export interface NumberedLine {
  /** 1-based line number in the file */
  line: number;
  /** the line without surrounding blanks ('' when `rejected`) */
  text: string;
  /**
   * Set when the line was not read: `too_long` (above maxLineBytes: its bytes were skipped, `bytes`
   * says how many), or `too_many` (one past maxLinesPerBatch: the last line yielded).
   */
  rejected?: 'too_long' | 'too_many';
  bytes?: number;
}

export interface LineLimits {
  maxLineBytes: number;
  maxLinesPerBatch: number;
}

/** The non-blank lines of a JSONL file, numbered from 1, streamed (large files never sit in memory). */
export async function* readJsonlFile(file: string, limits: LineLimits = LIMITS): AsyncGenerator<NumberedLine> {
  yield* numberedLines(createReadStream(file), limits);
}

/**
 * Opens a JSONL input before anything else is done with it: a missing file is `file_not_found`, a
 * folder or an unreadable file `invalid_request`, a file without any request line `empty_input`.
 * Returns its numbered lines (the first one already read).
 */
export async function openJsonlInput(file: string, limits: LineLimits = LIMITS): Promise<AsyncGenerator<NumberedLine>> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BatchgenError('file_not_found', `${file}: no such file`);
    throw new BatchgenError('invalid_request', `${file}: cannot be opened (${code ?? (e as Error).message})`);
  }
  if ((await fh.stat()).isDirectory()) {
    await fh.close();
    throw new BatchgenError('invalid_request', `${file} is a folder, not a JSONL file`);
  }
  const lines = numberedLines(fh.createReadStream(), limits);
  const first = await lines.next();
  if (first.done) {
    await fh.close();
    throw new BatchgenError('empty_input', `${file} has no request lines (it is empty or blank): nothing to submit`);
  }
  return (async function* () {
    try {
      yield first.value;
      yield* lines;
    } finally {
      await fh.close().catch(() => {});
    }
  })();
}

const NL = 0x0a;

/**
 * Splits a byte stream into numbered, non-blank lines, holding at most `maxLineBytes` of one line:
 * a longer line is skipped to its newline and comes out as `rejected: 'too_long'`, so memory stays
 * bounded whatever the input. After `maxLinesPerBatch` non-blank lines, the next one comes out as
 * `rejected: 'too_many'` and reading stops.
 */
export async function* numberedLines(input: AsyncIterable<Buffer | string>, limits: LineLimits = LIMITS): AsyncGenerator<NumberedLine> {
  let parts: Buffer[] = [];
  let held = 0; // bytes in parts
  let skipped = -1; // bytes of the current line when it is being skipped (too long), else -1
  let line = 0;
  let count = 0;
  function* end(): Generator<NumberedLine, boolean> {
    line += 1;
    if (skipped >= 0) {
      const bytes = skipped;
      skipped = -1;
      count += 1;
      if (count > limits.maxLinesPerBatch) {
        yield { line, text: '', rejected: 'too_many' };
        return true;
      }
      yield { line, text: '', rejected: 'too_long', bytes };
      return false;
    }
    const text = (parts.length === 1 ? parts[0] : Buffer.concat(parts, held)).toString('utf8').trim();
    parts = [];
    held = 0;
    if (text.length === 0) return false;
    count += 1;
    if (count > limits.maxLinesPerBatch) {
      yield { line, text: '', rejected: 'too_many' };
      return true;
    }
    yield { line, text };
    return false;
  }
  const add = (b: Buffer) => {
    if (b.length === 0) return;
    if (skipped >= 0) {
      skipped += b.length;
      return;
    }
    if (held + b.length > limits.maxLineBytes) {
      skipped = held + b.length;
      parts = [];
      held = 0;
      return;
    }
    parts.push(b);
    held += b.length;
  };
  for await (const chunk of input) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let from = 0;
    for (let nl = buf.indexOf(NL, from); nl >= 0; nl = buf.indexOf(NL, from)) {
      // a line's bytes are copied out of the chunk, so that a kept line never pins a whole chunk
      add(Buffer.from(buf.subarray(from, nl)));
      from = nl + 1;
      if (yield* end()) return;
    }
    if (from < buf.length) add(Buffer.from(buf.subarray(from)));
  }
  if (held > 0 || skipped >= 0) yield* end();
}

/** Writes one JSON value per line; `close()` resolves once everything is on disk. */
export class JsonlWriter {
  private readonly out: WriteStream;
  count = 0;

  private constructor(out: WriteStream) {
    this.out = out;
  }

  static async open(file: string): Promise<JsonlWriter> {
    await mkdir(dirname(file), { recursive: true });
    const out = createWriteStream(file, { encoding: 'utf-8' });
    await new Promise<void>((resolve, reject) => {
      out.once('open', () => resolve());
      out.once('error', reject);
    });
    return new JsonlWriter(out);
  }

  async write(value: unknown): Promise<void> {
    this.count += 1;
    if (!this.out.write(`${JSON.stringify(value)}\n`)) {
      await new Promise<void>((resolve) => this.out.once('drain', () => resolve()));
    }
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(() => resolve());
    });
  }
}

/** Writes results in their request's form; returns how many lines. */
export async function writeResultsFile(
  file: string,
  batchId: string,
  results: AsyncIterable<ResultRecord> | Iterable<ResultRecord>,
): Promise<number> {
  const w = await JsonlWriter.open(file);
  try {
    for await (const r of results) await w.write(formatResultLine(r, batchId));
  } finally {
    await w.close();
  }
  return w.count;
}

/** Writes an errors file: `{line, custom_id, error: {code, message}}` per line. */
export async function writeErrorsFile(file: string, errors: Iterable<ErrorRecord>): Promise<number> {
  const w = await JsonlWriter.open(file);
  try {
    for (const e of errors) await w.write(formatErrorLine(e));
  } finally {
    await w.close();
  }
  return w.count;
}
