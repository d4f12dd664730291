#!lua
-- Driftline label joiner: a commit that writes pending predictions together with the
-- partition's state, outbox and offset (lookups are plain pipelined HMGETs).
--
-- Loaded by driftline.runtime.store (StateStore.commit_records; EVALSHA,
-- falling back to EVAL on NOSCRIPT). Every key shares the partition's hash tag, so a
-- call touches one Redis Cluster slot. The meta/state/outbox layout and the fencing
-- rules are those of store_commit.lua (acquire, load and the outbox use that script).
--
-- KEYS[1] meta   hash  offset, epoch, token, format, updated_ms, nstate
-- KEYS[2] state  hash  field -> signed envelope (sealed by the caller)
-- KEYS[3] outbox list  alert payloads waiting to be published
-- KEYS[4..] record hashes: digest -> pending prediction (or the 1-byte tombstone)
--
-- commit: ARGV[1]="commit", ARGV[2] format, ARGV[3] epoch, ARGV[4] token,
--         ARGV[5] last_offset, ARGV[6] expected stored offset ("" = none),
--         ARGV[7] n_states, then field, envelope pairs,
--         then n_outbox, payloads,
--         then n_put_keys, per key: KEYS index, expire-at ms, m, m digest/value pairs,
--         then n_tomb_keys, per key: KEYS index, m, m digests, tombstone value
--   -> {"ok", epoch, offset} | {"duplicate", epoch, stored_offset}
--    | {"fenced", stored_epoch, stored_offset} | {"rewound", epoch, stored_offset}
--    | {"wrongtype", key}
--
-- A Redis script is atomic but NOT rolled back on error: every check that can fail
-- (types, fencing, offsets) runs before the first write.

local meta, state, outbox = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local CHUNK = 500

local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

local function offset_gt(a, b)
  if b == '-1' then return true end
  if #a ~= #b then return #a > #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return false
end

if op ~= 'commit' then
  return redis.error_reply('driftline join script: unknown op ' .. tostring(op))
end

-- (0) types: refuse before any write.
local want = {{meta, 'hash'}, {state, 'hash'}, {outbox, 'list'}}
for i = 4, #KEYS do want[#want + 1] = {KEYS[i], 'hash'} end
for _, kw in ipairs(want) do
  local t = redis.call('TYPE', kw[1])['ok']
  if t ~= 'none' and t ~= kw[2] then return {'wrongtype', kw[1]} end
end

local epoch, token, last, expected = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
-- (1) fencing
local cur = redis.call('HMGET', meta, 'epoch', 'token', 'offset')
if cur[1] == false or cur[1] ~= epoch or cur[2] ~= token then
  return {'fenced', cur[1] or '', cur[3] or ''}
end
-- (2) continuity, then idempotence
if expected ~= '' and cur[3] ~= expected then return {'rewound', epoch, cur[3]} end
if not offset_gt(last, cur[3]) then return {'duplicate', epoch, cur[3]} end

local a = 7
local n = tonumber(ARGV[a]); a = a + 1
-- (3) states
local i = 0
while i < n do
  local j = math.min(i + CHUNK, n)
  local args = {}
  for x = i, j - 1 do
    args[#args + 1] = ARGV[a + 2 * x]
    args[#args + 1] = ARGV[a + 2 * x + 1]
  end
  redis.call('HSET', state, unpack(args))
  i = j
end
a = a + 2 * n
-- (4) outbox
n = tonumber(ARGV[a]); a = a + 1
i = 0
while i < n do
  local j = math.min(i + CHUNK, n)
  redis.call('RPUSH', outbox, unpack(ARGV, a + i, a + j - 1))
  i = j
end
a = a + n
-- (5) pending predictions, and the expiry of their generation bucket
n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local key, at, m = KEYS[tonumber(ARGV[a])], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  i = 0
  while i < m do
    local j = math.min(i + CHUNK, m)
    redis.call('HSET', key, unpack(ARGV, a + 2 * i, a + 2 * j - 1))
    i = j
  end
  a = a + 2 * m
  redis.call('PEXPIREAT', key, at)
end
-- (6) tombstones of joined predictions (only where the bucket still exists: a
-- vanished bucket must not come back without its expiry)
n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local key, m = KEYS[tonumber(ARGV[a])], tonumber(ARGV[a + 1])
  local tomb = ARGV[a + 2 + m]
  if redis.call('EXISTS', key) == 1 then
    for x = 0, m - 1 do
      redis.call('HSET', key, ARGV[a + 2 + x], tomb)
    end
  end
  a = a + 3 + m
end
-- (7) the offset these writes reflect
redis.call('HSET', meta, 'offset', last, 'updated_ms', now_ms(),
  'nstate', tostring(redis.call('HLEN', state)))
return {'ok', epoch, last}
