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
--         n_put_keys, per key: KEYS index, expire-at ms, m, m digest/value pairs,
--         then n_tomb_keys, per key: KEYS index, m, m digests, tombstone value
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
local n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local key, at, m = KEYS[tonumber(ARGV[a])], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  call_slices('HSET', key, a, a + 2 * m - 1)
  a = a + 2 * m
  redis.call('PEXPIREAT', key, at)
end
-- (4c) tombstones of joined predictions (only where the bucket still exists: a
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
-- (5) the offset these writes reflect
return write_offset()
