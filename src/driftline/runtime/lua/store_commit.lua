#!lua
-- Driftline partition state: acquire, commit and outbox-ack in one script.
--
-- Loaded by driftline.runtime.store (EVALSHA, falling back to EVAL on NOSCRIPT). The
-- shebang line makes Redis 7 refuse the whole script up front when it cannot write
-- (out of memory, read-only replica) instead of failing half-way, and, in Redis
-- Cluster, refuse keys of more than one slot. All three KEYS share one hash tag.
--
-- A Redis script is atomic but NOT rolled back on error: every check that can fail
-- runs before the first write, so a call either writes everything or nothing.
--
-- KEYS[1] meta   hash  offset, epoch, token, format, updated_ms, nstate
-- KEYS[2] state  hash  field -> signed envelope (sealed by the caller)
-- KEYS[3] outbox list  alert payloads waiting to be published
--
-- ARGV[1] op      "acquire" | "commit" | "ack"
-- ARGV[2] format  meta layout version the caller understands
--
-- acquire: ARGV[3] token
--   -> {"fresh", epoch, offset} | {"ok", epoch, offset}
--    | {"orphan", nstate_found, outbox_len} | {"lost", nstate_found, nstate_expected}
--    | {"format", stored_format} | {"wrongtype", key}
-- commit:  ARGV[3] epoch, ARGV[4] token, ARGV[5] last_offset, ARGV[6] n_states,
--          ARGV[7] expected stored offset ("" = no expectation),
--          ARGV[8 .. 7+2n] field, envelope pairs, ARGV[8+2n ..] outbox payloads
--   -> {"ok", epoch, offset} | {"duplicate", epoch, stored_offset}
--    | {"fenced", stored_epoch, stored_offset} | {"rewound", epoch, stored_offset}
--    | {"wrongtype", key}
-- ack:     ARGV[3] epoch, ARGV[4] token, ARGV[5] count
--   -> {"ok", epoch, outbox_len} | {"fenced", stored_epoch, ""} | {"wrongtype", key}

local meta, state, outbox = KEYS[1], KEYS[2], KEYS[3]
local op, format = ARGV[1], ARGV[2]

-- Lua's unpack() has a small stack limit; write big batches in slices.
local CHUNK = 1000

local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

-- Refuse to touch keys that hold another type: a WRONGTYPE error half-way
-- through the writes would leave a partial commit behind.
local function wrong_type()
  local want = {{meta, 'hash'}, {state, 'hash'}, {outbox, 'list'}}
  for _, kw in ipairs(want) do
    local t = redis.call('TYPE', kw[1])['ok']
    if t ~= 'none' and t ~= kw[2] then
      return kw[1]
    end
  end
  return nil
end

-- a > b for decimal offsets: a >= 0 without leading zeros, b the stored offset
-- (-1 or such a number). Compared as strings so 64-bit offsets stay exact.
local function offset_gt(a, b)
  if b == '-1' then return true end
  if #a ~= #b then return #a > #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return false
end

-- The caller's lease is current only if both the epoch and the random token match.
-- The token keeps fencing sound when Redis loses data and the epoch counter restarts.
local function fenced(epoch, token)
  local cur = redis.call('HMGET', meta, 'epoch', 'token', 'offset')
  if cur[1] == false or cur[1] ~= epoch or cur[2] ~= token then
    return {'fenced', cur[1] or '', cur[3] or ''}
  end
  return nil, cur
end

local function push_slices(cmd, key, args, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    redis.call(cmd, key, unpack(args, i, j))
    i = j + 1
  end
end

local bad = wrong_type()
if bad then return {'wrongtype', bad} end

if op == 'acquire' then
  local token = ARGV[3]
  if redis.call('EXISTS', meta) == 0 then
    local nstate, nout = redis.call('HLEN', state), redis.call('LLEN', outbox)
    if nstate > 0 or nout > 0 then
      -- State without meta: we cannot know which offset it reflects.
      return {'orphan', nstate, nout}
    end
    redis.call('HSET', meta, 'offset', '-1', 'epoch', '1', 'token', token,
      'format', format, 'updated_ms', now_ms(), 'nstate', '0')
    return {'fresh', '1', '-1'}
  end
  local cur = redis.call('HMGET', meta, 'format', 'offset', 'nstate')
  if cur[1] ~= format then
    return {'format', cur[1] or ''}
  end
  local nstate = redis.call('HLEN', state)
  if nstate ~= tonumber(cur[3]) then
    -- Fields vanished (eviction, manual DEL): resuming would skip their history.
    return {'lost', nstate, cur[3] or ''}
  end
  local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
  redis.call('HSET', meta, 'token', token)
  return {'ok', tostring(epoch), cur[2]}

elseif op == 'commit' then
  local epoch, token, last = ARGV[3], ARGV[4], ARGV[5]
  local n = tonumber(ARGV[6])
  local expected = ARGV[7]
  -- (1) fencing: a stale epoch writes nothing.
  local f, cur = fenced(epoch, token)
  if f then return f end
  -- (2) idempotence: an offset already reflected writes nothing.
  if not offset_gt(last, cur[3]) then
    return {'duplicate', epoch, cur[3]}
  end
  -- (2b) continuity: the stored offset must be the one this lease last wrote. If it
  -- is not, Redis lost commits (a restart from an older AOF, a failover) and the
  -- caller's in-memory state is ahead of the stored one: writing only the touched
  -- fields would leave the others behind under a newer offset. Write nothing.
  if expected ~= '' and cur[3] ~= expected then
    return {'rewound', epoch, cur[3]}
  end
  -- (3) the sealed states.
  push_slices('HSET', state, ARGV, 8, 7 + 2 * n)
  -- (4) the alerts, in order, at the tail of the outbox.
  push_slices('RPUSH', outbox, ARGV, 8 + 2 * n, #ARGV)
  -- (5) the offset these writes reflect.
  redis.call('HSET', meta, 'offset', last, 'updated_ms', now_ms(),
    'nstate', tostring(redis.call('HLEN', state)))
  return {'ok', epoch, last}

elseif op == 'ack' then
  local epoch, token = ARGV[3], ARGV[4]
  local count = tonumber(ARGV[5])
  local f = fenced(epoch, token)
  if f then return {'fenced', f[2], ''} end
  if count > 0 then
    redis.call('LTRIM', outbox, count, -1)
  end
  return {'ok', epoch, redis.call('LLEN', outbox)}
end

return redis.error_reply('driftline store script: unknown op ' .. tostring(op))
