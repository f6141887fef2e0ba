/**
 * The results file of a batch: one output line per settled request (results, and OpenAI error lines
 * for failed OpenAI-form requests), in completion order or in input order.
 *
 * `ResultsFileAppender` follows a running batch and appends lines as requests settle, so that a crash
 * while waiting loses nothing already written. Opened on an existing file, it keeps the file when
 * every complete line in it is a line of this batch, exactly as it would be written now (a partial
 * last line is cut off), and then appends only what is not in it yet: a restarted wait never writes
 * a line twice. Any other file is started afresh.
 *
 * `writeResultsInOrder` writes a whole file (completion or input order) to a temporary file beside it,
 * then renames it over the target: readers see the old file or the new one, never half of one.
 */
import { open, readFile, rename, rm, truncate, type FileHandle } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BatchItem, BatchStore, Settled } from '../shared/batch-store.js';
import { formatSettledLine } from '../shared/output.js';

export type ResultsOrder = 'completion' | 'input';

/** The output line of a settled request as text (no newline), or null when it has none. */
function lineText(s: Settled, item: BatchItem | null, batchId: string): string | null {
  const line = formatSettledLine(s, item?.form, batchId);
  return line === null ? null : JSON.stringify(line);
}

/** Settled requests with their items (only error entries need theirs: for their form). */
async function withItems(store: BatchStore, batchId: string, entries: Settled[]): Promise<(BatchItem | null)[]> {
  const needs = entries.map((e, i) => (e.error ? i : -1)).filter((i) => i >= 0);
  const items = await store.itemsOf(
    batchId,
    needs.map((i) => entries[i].custom_id),
  );
  const out: (BatchItem | null)[] = entries.map(() => null);
  needs.forEach((i, j) => (out[i] = items[j]));
  return out;
}

/** The complete lines of a file (a partial last line is cut off the file). */
async function completeLines(file: string): Promise<string[] | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const end = text.lastIndexOf('\n') + 1;
  if (end < text.length) await truncate(file, Buffer.byteLength(text.slice(0, end)));
  return text
    .slice(0, end)
    .split('\n')
    .filter((l) => l.length > 0);
}

export class ResultsFileAppender {
  /** custom_ids whose lines are in the file */
  private readonly present = new Set<string>();
  private cursor = 0;
  /** the custom_id at position cursor - 1 of the order list when it was last read */
  private atCursor: string | null = null;
  /** lines kept from an earlier run of the same batch */
  kept = 0;
  /** lines appended by this writer */
  written = 0;

  private constructor(
    private readonly fh: FileHandle,
    private readonly store: BatchStore,
    private readonly batchId: string,
  ) {}

  static async open(file: string, batchId: string, store: BatchStore): Promise<ResultsFileAppender> {
    await mkdir(dirname(file), { recursive: true });
    const existing = await completeLines(file);
    const ids = existing === null ? null : await ResultsFileAppender.idsIfOurs(existing, batchId, store);
    const fh = await open(file, ids === null ? 'w' : 'a');
    const w = new ResultsFileAppender(fh, store, batchId);
    for (const id of ids ?? []) w.present.add(id);
    w.kept = w.present.size;
    return w;
  }

  /** The custom_ids of the lines, when every line is this batch's line for its custom_id; else null. */
  private static async idsIfOurs(lines: string[], batchId: string, store: BatchStore): Promise<string[] | null> {
    const ids: string[] = [];
    for (let i = 0; i < lines.length; i += 500) {
      const part = lines.slice(i, i + 500);
      const cids: string[] = [];
      for (const l of part) {
        let cid: unknown;
        try {
          cid = (JSON.parse(l) as { custom_id?: unknown }).custom_id;
        } catch {
          return null;
        }
        if (typeof cid !== 'string') return null;
        cids.push(cid);
      }
      const [settled, items] = await Promise.all([
        Promise.all(cids.map((c) => store.settlement(batchId, c))),
        store.itemsOf(batchId, cids),
      ]);
      for (let j = 0; j < part.length; j++) {
        const s = settled[j];
        if (!s) return null;
        const entry: Settled = 'result' in s ? { custom_id: cids[j], result: s.result } : { custom_id: cids[j], error: s.error };
        if (lineText(entry, items[j], batchId) !== part[j]) return null;
        ids.push(cids[j]);
      }
    }
    return new Set(ids).size === ids.length ? ids : null;
  }

  /** Appends the lines of every request settled since the last call; returns how many. */
  async catchUp(): Promise<number> {
    let n = 0;
    const order = this.store.keys.batch(this.batchId).order;
    // a Redis restart can lose the order list's last writes, which are then written again elsewhere in
    // it: when the position before the cursor changed, the list is read again from the start (the
    // lines already written are skipped)
    if (this.cursor > 0 && (await this.store.redis.lindex(order, this.cursor - 1)) !== this.atCursor) this.cursor = 0;
    for await (const { next, entries } of this.store.settledFrom(this.batchId, this.cursor)) {
      const todo = entries.filter((e) => !this.present.has(e.custom_id));
      const items = await withItems(this.store, this.batchId, todo);
      let text = '';
      todo.forEach((e, i) => {
        this.present.add(e.custom_id);
        const t = lineText(e, items[i], this.batchId);
        if (t !== null) {
          text += `${t}\n`;
          n += 1;
        }
      });
      if (text) await this.fh.write(text);
      this.cursor = next;
    }
    if (this.cursor > 0) this.atCursor = await this.store.redis.lindex(order, this.cursor - 1);
    this.written += n;
    return n;
  }

  /** Lines in the file: kept plus written. */
  get lines(): number {
    return this.kept + this.written;
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** Writes a batch's whole results file atomically, in completion or input order; returns how many lines. */
export async function writeResultsInOrder(file: string, batchId: string, store: BatchStore, order: ResultsOrder): Promise<number> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w');
  let n = 0;
  const put = async (entries: Settled[]) => {
    const items = await withItems(store, batchId, entries);
    let text = '';
    entries.forEach((e, i) => {
      const t = lineText(e, items[i], batchId);
      if (t !== null) {
        text += `${t}\n`;
        n += 1;
      }
    });
    if (text) await fh.write(text);
  };
  try {
    if (order === 'completion') {
      for await (const { entries } of store.settledFrom(batchId)) await put(entries);
    } else {
      const byLine: [string, number][] = [];
      for await (const chunk of store.items(batchId)) for (const [cid, item] of chunk) byLine.push([cid, item.line]);
      byLine.sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
      for (let i = 0; i < byLine.length; i += 500) {
        const cids = byLine.slice(i, i + 500).map(([c]) => c);
        const settled = await Promise.all(cids.map((c) => store.settlement(batchId, c)));
        const entries: Settled[] = [];
        settled.forEach((s, j) => {
          if (s && 'result' in s) entries.push({ custom_id: cids[j], result: s.result });
          else if (s) entries.push({ custom_id: cids[j], error: s.error });
        });
        await put(entries);
      }
    }
    await fh.close();
    await rename(tmp, file);
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
  return n;
}
