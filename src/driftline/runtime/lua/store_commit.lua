-- Driftline partition state: acquire, commit and outbox-ack.
--
-- Loaded by driftline.runtime.store after commit_prelude.lua (the shared commit
-- protocol: types, fencing, idempotence, continuity, the writes of states, outbox
-- and offset, and the helpers used below); not a script on its own.
--
-- ARGV[1] op      "acquire" | "commit" | "ack"
-- ARGV[2] format  meta layout version the caller understands
--
-- KEYS[4] side   hash  sealed records beside the state, not counted in nstate
--
-- acquire: ARGV[3] token
--   -> {"fresh", epoch, offset, nstate} | {"ok", epoch, offset, nstate}
--    | {"orphan", nstate_found, outbox_len} | {"lost", nstate_found, nstate_expected}
--    | {"format", stored_format} | {"garbage", field, value} | {"wrongtype", key}
-- commit:  the prelude's arguments, then n_side_puts, field/envelope pairs,
--          n_side_deletes, fields (written to KEYS[4])
--   -> the prelude's replies
-- ack:     ARGV[3] epoch, ARGV[4] token, ARGV[5] count
--   -> {"ok", epoch, outbox_len} | {"fenced", stored_epoch, ""} | {"wrongtype", key}

local op, format = ARGV[1], ARGV[2]

local side = KEYS[4]

if op == 'commit' then
  local refused = commit_refusal({{side, 'hash'}})
  if refused then return refused end
  local a = write_states_and_outbox()
  -- (4b) side records: puts, then deletes (a finished warm-up buffer)
  local n = tonumber(ARGV[a])
  call_slices('HSET', side, a + 1, a + 2 * n)
  a = a + 1 + 2 * n
  n = tonumber(ARGV[a])
  call_slices('HDEL', side, a + 1, a + n)
  return write_offset()
end

local bad = wrong_type({{meta, 'hash'}, {state, 'hash'}, {outbox, 'list'}, {side, 'hash'}})
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
    return {'fresh', '1', '-1', '0'}
  end
  local cur = redis.call('HMGET', meta, 'format', 'offset', 'nstate', 'epoch')
  if cur[1] ~= format then
    return {'format', cur[1] or ''}
  end
  -- Numbers written by hand (or by nobody) must not reach HINCRBY or the caller.
  local numeric = {{'offset', cur[2], '^%-?%d+$'}, {'nstate', cur[3], '^%d+$'},
    {'epoch', cur[4], '^%d+$'}}
  for _, f in ipairs(numeric) do
    if not f[2] or #f[2] > 19 or not string.match(f[2], f[3]) then
      return {'garbage', f[1], f[2] or ''}
    end
  end
  local nstate = redis.call('HLEN', state)
  if nstate ~= tonumber(cur[3]) then
    -- Fields vanished (eviction, manual DEL): resuming would skip their history.
    return {'lost', nstate, cur[3]}
  end
  local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
  redis.call('HSET', meta, 'token', token)
  return {'ok', tostring(epoch), cur[2], cur[3]}

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
