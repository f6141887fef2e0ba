/** JSONL in and out: numbered request lines from a file, and result and error files written line by line. */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { formatErrorLine, formatResultLine } from '../shared/output.js';
import { BatchgenError } from '../shared/errors.js';
import type { ErrorRecord, ResultRecord } from '../shared/schemas.js';

export interface NumberedLine {
  /** 1-based line number in the file */
  line: number;
  text: string;
}

/** The non-blank lines of a JSONL file, numbered from 1, streamed (large files never sit in memory). */
export async function* readJsonlFile(file: string): AsyncGenerator<NumberedLine> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf-8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const raw of rl) {
    line += 1;
    const text = raw.trim();
    if (text.length > 0) yield { line, text };
  }
}

/**
 * Opens a JSONL input before anything else is done with it: a missing file is `file_not_found`, a
 * folder or an unreadable file `invalid_request`, a file without any request line `empty_input`.
 * Returns its numbered lines (the first one already read).
 */
export async function openJsonlInput(file: string): Promise<AsyncGenerator<NumberedLine>> {
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
  const lines = numberedLines(fh.createReadStream({ encoding: 'utf-8' }));
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

async function* numberedLines(input: NodeJS.ReadableStream): AsyncGenerator<NumberedLine> {
  const rl = createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  for await (const raw of rl) {
    line += 1;
    const text = raw.trim();
    if (text.length > 0) yield { line, text };
  }
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
