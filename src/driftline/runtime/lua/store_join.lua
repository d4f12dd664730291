-- Driftline label joiner: a commit that writes pending predictions together with the
-- partition's state, outbox and offset (lookups are plain pipelined HMGETs).
--
-- Loaded by driftline.runtime.store (StateStore.commit with records) after
-- commit_prelude.lua, which holds the checks and the writes of states, outbox and
-- offset; not a script on its own. Acquire, load and the outbox ack use
-- store_commit.lua. Every key shares the partition's hash tag, so a call touches one
-- Redis Cluster slot.
--
-- KEYS[1..3] meta, state, outbox (the prelude's)
-- KEYS[4..]  record hashes: digest -> pending prediction (or the 1-byte tombstone)
--
-- commit: the prelude's arguments, then
--         n_put_keys, per key: KEYS index, expire-at ms, its digest/value pairs packed
--         in one string (each as u8 length + bytes: digest, value, digest, ...),
--         then n_tomb_keys, per key: KEYS index, its digests packed the same way,
--         tombstone value
--   -> the prelude's replies

if ARGV[1] ~= 'commit' then
  return redis.error_reply('driftline join script: unknown op ' .. tostring(ARGV[1]))
end

-- (0-2) types (the record hashes too), fencing, idempotence, continuity.
local records = {}
for i = 4, #KEYS do records[#records + 1] = {KEYS[i], 'hash'} end
local refused = commit_refusal(records)
if refused then return refused end

-- (3-4) states and outbox.
local a = write_states_and_outbox()
-- (4b) pending predictions, and the expiry of their generation bucket
-- Strings packed as u8 length + bytes, one after the other (one argument for many: the
-- client then encodes one argument, not two per record).
local function unpack_strings(blob, out, every, extra)
  local pos, size = 1, #blob
  while pos <= size do
    local n = string.byte(blob, pos)
    out[#out + 1] = string.sub(blob, pos + 1, pos + n)
    pos = pos + 1 + n
    if every then out[#out + 1] = extra end
  end
  return out
end
local function hset_slices(key, pairs)
  local i = 1
  while i <= #pairs do
    local j = math.min(i + CHUNK - 1, #pairs)
    redis.call('HSET', key, unpack(pairs, i, j))
    i = j + 1
  end
end
local n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local key, at = KEYS[tonumber(ARGV[a])], ARGV[a + 1]
  hset_slices(key, unpack_strings(ARGV[a + 2], {}, false))
  redis.call('PEXPIREAT', key, at)
  a = a + 3
end
-- (4c) tombstones of joined predictions (only where the bucket still exists: a
-- vanished bucket must not come back without its expiry)
n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local key, tomb = KEYS[tonumber(ARGV[a])], ARGV[a + 2]
  if redis.call('EXISTS', key) == 1 then
    hset_slices(key, unpack_strings(ARGV[a + 1], {}, true, tomb))
  end
  a = a + 3
end
-- (5) the offset these writes reflect
return write_offset()
