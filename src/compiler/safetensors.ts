/**
 * The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header `{ "__metadata__"?: {..}, name: { dtype, shape,
 * data_offsets: [begin, end] } }` (offsets relative to the end of the header), then the raw data.
 * Only F32, F16 and BF16 are read; every tensor comes back as float32.
 *
 * Files are read tensor by tensor through a file descriptor, never as one buffer: GPT-2 large in
 * F32 is over 2 GiB, more than `readFileSync` takes.
 */
import * as fs from 'node:fs';
import { ModelFormatError } from '../shared/errors.js';

export type FloatDtype = 'F32' | 'F16' | 'BF16';

export interface FloatTensor {
  dtype: FloatDtype;
  shape: number[];
  data: Float32Array;
}

export interface ReadSafetensorsOptions {
  /** Tensors to load; others are still checked but their data is not read. Default: all. */
  include?: (name: string) => boolean;
}

const BYTES: Record<FloatDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Every dtype the format defines, so that a refusal can tell "unsupported" from "garbage". */
const KNOWN_DTYPES = new Set([
  'BOOL',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'F64',
  'I64',
  'U64',
]);
/** Same bound as the reference implementation: a bigger header is a corrupt or hostile file. */
const MAX_HEADER_BYTES = 100_000_000;

interface Entry {
  name: string;
  dtype: FloatDtype;
  shape: number[];
  begin: number;
  end: number;
}

export function readSafetensors(path: string, options: ReadSafetensorsOptions = {}): Map<string, FloatTensor> {
  const fail = (problem: string): never => {
    throw new ModelFormatError(path, problem);
  };
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    return fail(`cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) fail(`truncated: ${fileSize} bytes, too short for the 8-byte header length`);
    const lenBuf = readExactly(fd, 0, 8, fail);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES))
      fail(`header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
    const n = Number(headerLen);
    if (8 + n > fileSize) fail(`truncated: header says ${n} header bytes but the file has only ${fileSize - 8} after the length`);
    const entries = parseHeader(readExactly(fd, 8, n, fail), fail);
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    for (const e of entries) checkEntry(e, dataSize, fail);
    checkNoOverlap(entries, fail);

    const out = new Map<string, FloatTensor>();
    for (const e of entries) {
      if (options.include && !options.include(e.name)) continue;
      const count = e.shape.reduce((a, b) => a * b, 1);
      let data: Float32Array;
      if (e.dtype === 'F32') {
        data = new Float32Array(count);
        readInto(fd, dataStart + e.begin, new Uint8Array(data.buffer), fail);
        if (!LITTLE_ENDIAN) swapBytes(new Uint8Array(data.buffer), 4);
      } else {
        const raw = new Uint16Array(count);
        readInto(fd, dataStart + e.begin, new Uint8Array(raw.buffer), fail);
        if (!LITTLE_ENDIAN) swapBytes(new Uint8Array(raw.buffer), 2);
        data = e.dtype === 'F16' ? f16ToF32(raw) : bf16ToF32(raw);
      }
      out.set(e.name, { dtype: e.dtype, shape: e.shape, data });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(bytes: Buffer, fail: (p: string) => never): Entry[] {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const entries: Entry[] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') continue;
    const info = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== 'object' || info === null) fail(`tensor ${name}: header entry is not an object`);
    const { dtype, shape, data_offsets: offs } = info;
    if (typeof dtype !== 'string') fail(`tensor ${name}: missing dtype`);
    if (!(dtype === 'F32' || dtype === 'F16' || dtype === 'BF16')) {
      fail(
        KNOWN_DTYPES.has(dtype as string)
          ? `tensor ${name} has dtype ${dtype}; only F32, F16 and BF16 are supported`
          : `tensor ${name} has unknown dtype ${JSON.stringify(dtype)}`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isCount))
      fail(`tensor ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isCount)) {
      fail(`tensor ${name}: data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offs as number[];
    entries.push({ name, dtype: dtype as FloatDtype, shape: shape as number[], begin, end });
  }
  return entries;
}

function checkEntry(e: Entry, dataSize: number, fail: (p: string) => never): void {
  const expected = e.shape.reduce((a, b) => a * b, 1) * BYTES[e.dtype];
  if (e.end < e.begin) fail(`tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] end before they begin`);
  if (e.end - e.begin !== expected) {
    fail(
      `tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] hold ${e.end - e.begin} bytes, but ${e.dtype} [${e.shape.join(', ')}] needs ${expected}`,
    );
  }
  if (e.end > dataSize) fail(`truncated: tensor ${e.name} ends at data byte ${e.end} but the file has only ${dataSize} data bytes`);
}

function checkNoOverlap(entries: Entry[], fail: (p: string) => never): void {
  const byBegin = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byBegin.length; i++) {
    if (byBegin[i].begin < byBegin[i - 1].end) fail(`tensors ${byBegin[i - 1].name} and ${byBegin[i].name} overlap`);
  }
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function readExactly(fd: number, position: number, length: number, fail: (p: string) => never): Buffer {
  const buf = Buffer.alloc(length);
  readInto(fd, position, buf, fail);
  return buf;
}

/** readSync may return fewer bytes than asked (and caps one call near 2 GiB): loop until full. */
function readInto(fd: number, position: number, target: Uint8Array, fail: (p: string) => never): void {
  let done = 0;
  while (done < target.length) {
    const chunk = Math.min(target.length - done, 1 << 30);
    const got = fs.readSync(fd, target, done, chunk, position + done);
    if (got === 0) fail(`truncated: unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

/**
 * Writes `tensors` in the layout the reference implementation produces: entries sorted by dtype
 * width (widest first) then name, the JSON header padded with spaces to a multiple of 8 bytes.
 */
export function writeSafetensors(path: string, tensors: Record<string, FloatTensor>, metadata?: Record<string, string>): void {
  const specs = Object.entries(tensors).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  writeSafetensorsLazy(path, specs, (name) => tensors[name].data, metadata);
}

export interface TensorSpec {
  name: string;
  dtype: FloatDtype;
  shape: number[];
}

/**
 * Like writeSafetensors, but asks `produce` for each tensor's float32 data only when it is written,
 * so that a big model is never held in memory all at once. The array `produce` returns is not kept:
 * it may be a view of a buffer that the next call reuses.
 */
export function writeSafetensorsLazy(
  path: string,
  specs: TensorSpec[],
  produce: (name: string) => Float32Array,
  metadata?: Record<string, string>,
): void {
  const sorted = [...specs].sort((a, b) => BYTES[b.dtype] - BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const s of sorted) {
    if (s.name === '__metadata__') throw new ModelFormatError(path, 'a tensor cannot be named __metadata__');
    if (s.name in header) throw new ModelFormatError(path, `tensor ${s.name} given twice`);
    if (!(s.dtype in BYTES))
      throw new ModelFormatError(path, `tensor ${s.name} has dtype ${s.dtype}; only F32, F16 and BF16 can be written`);
    const size = s.shape.reduce((a, b) => a * b, 1) * BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf-8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const halfCount = Math.max(0, ...sorted.filter((s) => s.dtype !== 'F32').map((s) => s.shape.reduce((a, b) => a * b, 1)));
  const halfScratch = new Uint16Array(halfCount); // one buffer for every conversion: no page faults per tensor
  const fd = fs.openSync(path, 'w');
  try {
    writeAll(fd, len);
    writeAll(fd, json);
    for (const s of sorted) {
      const data = produce(s.name);
      const count = s.shape.reduce((a, b) => a * b, 1);
      if (data.length !== count) {
        throw new ModelFormatError(path, `tensor ${s.name}: ${data.length} values given for shape [${s.shape.join(', ')}] (${count})`);
      }
      let bytes: Uint8Array;
      if (s.dtype === 'F32') bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else {
        const out = halfScratch.subarray(0, count);
        const half = s.dtype === 'F16' ? f32ToF16(data, out) : f32ToBf16(data, out);
        bytes = new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
      }
      if (!LITTLE_ENDIAN) {
        bytes = Uint8Array.from(bytes);
        swapBytes(bytes, BYTES[s.dtype]);
      }
      writeAll(fd, bytes);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
}

// ---- float conversions (bit-exact, round-to-nearest-even) ----

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

let f16Table: Float32Array | null = null;

/** All 65536 half values, built once: a table lookup is the fastest conversion in JS. */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24;
    else if (exp === 0x1f) v = mant ? NaN : Infinity;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    t[h] = h & 0x8000 ? -v : v;
  }
  return (f16Table = t);
}

export function f16ToF32(raw: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = table[raw[i]];
  return out;
}

export function bf16ToF32(raw: Uint16Array): Float32Array {
  const out = new Float32Array(raw.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < raw.length; i++) bits[i] = raw[i] << 16;
  return out;
}

export function f32ToF16(data: Float32Array, out = new Uint16Array(data.length)): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < data.length; i++) out[i] = halfBits(bits[i]);
  return out;
}

export function f32ToBf16(data: Float32Array, out = new Uint16Array(data.length)): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < data.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff)
      out[i] = (x >>> 16) | 0x40; // NaN stays a (quiet) NaN
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // carry into the exponent is correct rounding
  }
  return out;
}

/** One float32 (as bits) to half bits, round-to-nearest-even, overflow to ±Inf, underflow via subnormals. */
function halfBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent, up to Inf: correct
  return sign | h;
}
