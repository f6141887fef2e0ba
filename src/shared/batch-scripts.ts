/**
 * The Lua scripts of the batch records (src/shared/batch-store.ts): every write that changes counts
 * is one script, so counts stay exact however many times a job is delivered. Each script takes the
 * same seven keys; `finalize` moves a batch to its next status from its counts and sets expiries.
 */
// KEYS, always: 1 record, 2 items, 3 results, 4 errors, 5 rejects, 6 cancelled, 7 order

const FINALIZE = `
local function num(f) return tonumber(redis.call('HGET', KEYS[1], f) or '0') or 0 end
-- sets (or pushes back) the expiry of every key of the batch
local function expireAll(now)
  local ret = num('retention_s')
  if ret > 0 then
    for i = 1, 7 do redis.call('EXPIRE', KEYS[i], ret) end
    redis.call('HSET', KEYS[1], 'expires_at', now + ret * 1000)
  end
end
local function finalize(now)
  local st = redis.call('HGET', KEYS[1], 'status')
  local total, done = num('total'), num('completed') + num('failed')
  if st == 'in_progress' and done >= total then
    if total == 0 then
      redis.call('HSET', KEYS[1], 'status', 'failed', 'failed_at', now)
    else
      redis.call('HSET', KEYS[1], 'status', 'completed')
      if not redis.call('HGET', KEYS[1], 'completed_at') then redis.call('HSET', KEYS[1], 'completed_at', now) end
    end
    expireAll(now)
  elseif st == 'cancelling' and done + num('cancelled') >= total then
    redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', now)
    expireAll(now)
  end
  return redis.call('HGET', KEYS[1], 'status')
end
`;

/**
 * ARGV: id, now, retention_s, input. Creates the record or readies it for a resubmission; a finished
 * or cancelling batch is left as it is (its status is returned). A validating record expires after
 * its retention unless a write of the submission pushes the expiry back.
 */
const BEGIN = `${FINALIZE}
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'cancelling' or st == 'cancelled' or st == 'completed' or st == 'failed' then return st end
if not st then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_at', ARGV[2], 'retention_s', ARGV[3], 'input', ARGV[4],
    'total', 0, 'completed', 0, 'failed', 0, 'cancelled', 0, 'rejected', 0)
end
redis.call('HSET', KEYS[1], 'status', 'validating')
expireAll(tonumber(ARGV[2]))
return 'validating'
`;

/**
 * ARGV: now, endpoints (comma-separated), then per entry: custom_id, item JSON, kind ('q' | 'e'),
 * error JSON (or ''), fingerprint. Returns per entry: 1 new (enqueue), 2 present and unsettled
 * (enqueue again), 0 present and settled, 4 new and failed validation, -1 stored with another
 * fingerprint, -2 new but the batch is finished. A finished batch is only read, never written.
 */
const REGISTER = `${FINALIZE}
local now = tonumber(ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
local finished = st == 'completed' or st == 'cancelled' or st == 'failed'
if st ~= 'validating' and not finished then return redis.error_reply('BATCH_NOT_VALIDATING ' .. tostring(st)) end
local out = {}
local added = 0
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local b = 3 + i * 5
  local cid, item, kind, err, fp = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local old = redis.call('HGET', KEYS[2], cid)
  if old then
    local ok, dec = pcall(cjson.decode, old)
    local ofp = nil
    if ok and type(dec) == 'table' and type(dec.fp) == 'string' then ofp = dec.fp end
    if ofp and ofp ~= fp then
      out[i + 1] = -1
    elseif finished or kind == 'e' or redis.call('HEXISTS', KEYS[3], cid) == 1 or redis.call('HEXISTS', KEYS[4], cid) == 1
        or redis.call('SISMEMBER', KEYS[6], cid) == 1 then
      out[i + 1] = 0
    else
      out[i + 1] = 2
    end
  elseif finished then
    out[i + 1] = -2
  else
    redis.call('HSET', KEYS[2], cid, item)
    added = added + 1
    if kind == 'e' then
      redis.call('HSET', KEYS[4], cid, err)
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
      redis.call('RPUSH', KEYS[7], cid)
      out[i + 1] = 4
    else
      out[i + 1] = 1
    end
  end
end
if not finished then
  if added > 0 then
    redis.call('HINCRBY', KEYS[1], 'total', added)
    redis.call('HDEL', KEYS[1], 'completed_at')
  end
  for ep in string.gmatch(ARGV[2], '[^,]+') do redis.call('HSET', KEYS[1], 'ep:' .. ep, 1) end
  expireAll(now)
end
return out
`;

/** ARGV: now, then pairs line, error JSON. Lines that are not requests: kept, not counted. */
const REJECT = `${FINALIZE}
local n = (#ARGV - 1) / 2
for i = 0, n - 1 do redis.call('HSET', KEYS[5], ARGV[2 + i * 2], ARGV[3 + i * 2]) end
redis.call('HSET', KEYS[1], 'rejected', redis.call('HLEN', KEYS[5]))
if redis.call('HGET', KEYS[1], 'status') == 'validating' then expireAll(tonumber(ARGV[1])) end
return n
`;

/** ARGV: now. Submission done: in_progress (kept until finished; unless cancelled meanwhile), then finalize. */
const END_SUBMIT = `${FINALIZE}
local now = tonumber(ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'validating' then
  redis.call('HSET', KEYS[1], 'status', 'in_progress')
  for i = 1, 7 do redis.call('PERSIST', KEYS[i]) end
  redis.call('HDEL', KEYS[1], 'expires_at')
  if not redis.call('HGET', KEYS[1], 'in_progress_at') then redis.call('HSET', KEYS[1], 'in_progress_at', now) end
end
return finalize(now)
`;

/**
 * ARGV: now, which ('r' result | 'e' error), then pairs custom_id, record JSON.
 * Returns per pair: 1 written, 0 the custom_id already had a result or an error, -1 unknown batch,
 * -2 a custom_id that is not a request of the batch (nothing is written then).
 */
const SETTLE = `${FINALIZE}
local now, which = tonumber(ARGV[1]), ARGV[2]
local out = {}
local n = (#ARGV - 2) / 2
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, n do out[i] = -1 end
  return out
end
local completed, failed, uncancelled = 0, 0, 0
for i = 0, n - 1 do
  local cid, rec = ARGV[3 + i * 2], ARGV[4 + i * 2]
  if redis.call('HEXISTS', KEYS[2], cid) == 0 then
    out[i + 1] = -2
  elseif redis.call('HEXISTS', KEYS[3], cid) == 1 or redis.call('HEXISTS', KEYS[4], cid) == 1 then
    out[i + 1] = 0
  else
    if which == 'r' then
      redis.call('HSET', KEYS[3], cid, rec)
      redis.call('RPUSH', KEYS[7], cid)
      completed = completed + 1
    else
      redis.call('HSET', KEYS[4], cid, rec)
      redis.call('RPUSH', KEYS[7], cid)
      failed = failed + 1
    end
    uncancelled = uncancelled + redis.call('SREM', KEYS[6], cid)
    out[i + 1] = 1
  end
end
if completed > 0 then redis.call('HINCRBY', KEYS[1], 'completed', completed) end
if failed > 0 then redis.call('HINCRBY', KEYS[1], 'failed', failed) end
if uncancelled > 0 then redis.call('HINCRBY', KEYS[1], 'cancelled', -uncancelled) end
if redis.call('HGET', KEYS[1], 'status') == 'validating' then expireAll(now) end
finalize(now)
return out
`;

/** ARGV: now. validating / in_progress → cancelling. Returns the status. */
const CANCEL = `${FINALIZE}
local now = tonumber(ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return nil end
if st == 'validating' or st == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', now)
  for i = 1, 7 do redis.call('PERSIST', KEYS[i]) end
end
return redis.call('HGET', KEYS[1], 'status')
`;

/** ARGV: now, custom_ids... whose jobs a cancel removed. Returns how many were newly counted. */
const CANCEL_ITEMS = `${FINALIZE}
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local cid = ARGV[i]
  if redis.call('HEXISTS', KEYS[3], cid) == 0 and redis.call('HEXISTS', KEYS[4], cid) == 0 then
    if redis.call('SADD', KEYS[6], cid) == 1 then n = n + 1 end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'cancelled', n) end
finalize(now)
return n
`;

/** ARGV: output file, errors file ('' to leave as is). Only an existing record is written. */
const SET_FILES = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'output_file', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'error_file', ARGV[2]) end
return 1
`;

/** ARGV: now. */
const FINALIZE_NOW = `${FINALIZE}
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
return finalize(tonumber(ARGV[1]))
`;

export const BATCH_SCRIPTS = {
  bgBegin: BEGIN,
  bgRegister: REGISTER,
  bgReject: REJECT,
  bgEndSubmit: END_SUBMIT,
  bgSettle: SETTLE,
  bgCancel: CANCEL,
  bgCancelItems: CANCEL_ITEMS,
  bgFinalize: FINALIZE_NOW,
  bgSetFiles: SET_FILES,
} as const;
