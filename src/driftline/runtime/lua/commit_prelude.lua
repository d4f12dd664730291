#!lua
-- Driftline's commit protocol: the ONE fencing and offset check of every store script.
--
-- driftline.runtime.store prepends this file to store_commit.lua and store_join.lua
-- when it loads them; the SHA it sends with EVALSHA is the SHA1 of the combined text.
-- The shebang line (first line of the combined script) makes Redis 7 refuse the whole
-- script up front when it cannot write (out of memory, read-only replica) instead of
-- failing half-way, and, in Redis Cluster, refuse keys of more than one slot.
--
-- A Redis script is atomic but NOT rolled back on error: every check that can fail
-- runs before the first write, so a commit writes everything or nothing.
--
-- KEYS[1] meta   hash  offset, epoch, token, format, updated_ms, nstate
-- KEYS[2] state  hash  field -> signed envelope (sealed by the caller)
-- KEYS[3] outbox list  alert payloads waiting to be published
--
-- Every commit starts with the same arguments (a script's own ones follow them):
--   ARGV[1] "commit", ARGV[2] format, ARGV[3] epoch, ARGV[4] token, ARGV[5] last_offset,
--   ARGV[6] expected stored offset ("" = no expectation), ARGV[7] n_states,
--   then n field/envelope pairs, then n_outbox, then the outbox payloads.
-- and answers {"ok", epoch, offset} | {"duplicate", epoch, stored_offset}
--   | {"fenced", stored_epoch, stored_offset} | {"rewound", epoch, stored_offset}
--   | {"wrongtype", key}

local meta, state, outbox = KEYS[1], KEYS[2], KEYS[3]

-- Lua's unpack() has a small stack limit; write big batches in slices.
local CHUNK = 500

local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

-- The first of the {key, type} pairs whose key holds another Redis type, or nil: a
-- WRONGTYPE error half-way through the writes would leave a partial commit behind.
local function wrong_type(want)
  for _, kw in ipairs(want) do
    local t = redis.call('TYPE', kw[1])['ok']
    if t ~= 'none' and t ~= kw[2] then
      return kw[1]
    end
  end
  return nil
end

local PARTITION_TYPES = {{meta, 'hash'}, {state, 'hash'}, {outbox, 'list'}}

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
-- Returns the refusal, or nil and {epoch, token, offset} as stored.
local function fenced(epoch, token)
  local cur = redis.call('HMGET', meta, 'epoch', 'token', 'offset')
  if cur[1] == false or cur[1] ~= epoch or cur[2] ~= token then
    return {'fenced', cur[1] or '', cur[3] or ''}
  end
  return nil, cur
end

-- redis.call(cmd, key, ARGV[first .. last]) in slices.
local function call_slices(cmd, key, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end

-- Steps 0-2 of a commit, before any write: the refusal to answer, or nil to go on.
-- more_types: {key, type} pairs of the script's own keys, checked with the partition's.
local function commit_refusal(more_types)
  local want = {unpack(PARTITION_TYPES)}
  for _, kw in ipairs(more_types) do want[#want + 1] = kw end
  -- (0) types
  local bad = wrong_type(want)
  if bad then return {'wrongtype', bad} end
  local epoch, token, last, expected = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  -- (1) fencing: a stale lease writes nothing.
  local f, cur = fenced(epoch, token)
  if f then return f end
  -- (2) idempotence: an offset already reflected writes nothing. Checked before
  -- continuity, so a commit retried after its reply was lost answers "duplicate".
  if not offset_gt(last, cur[3]) then
    return {'duplicate', epoch, cur[3]}
  end
  -- (2b) continuity: the stored offset must be the one this lease last wrote. If it is
  -- not, Redis lost commits (a restart from an older AOF, a failover) and the caller's
  -- in-memory state is ahead of the stored one: writing only the touched fields would
  -- leave the others behind under a newer offset.
  if expected ~= '' and cur[3] ~= expected then
    return {'rewound', epoch, cur[3]}
  end
  return nil
end

-- Steps 3-4: the sealed states, then the alerts at the tail of the outbox, in order.
-- Returns the index of the first script-specific argument.
local function write_states_and_outbox()
  local n = tonumber(ARGV[7])
  call_slices('HSET', state, 8, 7 + 2 * n)
  local a = 8 + 2 * n
  local k = tonumber(ARGV[a])
  call_slices('RPUSH', outbox, a + 1, a + k)
  return a + 1 + k
end

-- Step 5: the offset these writes reflect; the reply of a commit that landed.
local function write_offset()
  redis.call('HSET', meta, 'offset', ARGV[5], 'updated_ms', now_ms(),
    'nstate', tostring(redis.call('HLEN', state)))
  return {'ok', ARGV[3], ARGV[5]}
end

-- ------------------------------------------------------------------ the script itself
