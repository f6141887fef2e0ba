/** JSONL in and out: numbered request lines from a file, and result and error files written line by line. */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { formatErrorLine, formatResultLine } from '../shared/output.js';
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
    if (!this.out.write(JSON.stringify(value) + '\n')) {
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
export async function writeResultsFile(file: string, batchId: string, results: AsyncIterable<ResultRecord> | Iterable<ResultRecord>): Promise<number> {
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
