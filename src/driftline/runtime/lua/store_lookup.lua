-- Driftline label joiner: the batch's pending-prediction lookups in one script call.
--
-- Loaded by driftline.runtime.store (StateStore.lookup_records); a script on its own
-- (no commit prelude): read-only, so it needs no lease. Every key shares the
-- partition's hash tag, so a call touches one Redis Cluster slot.
--
-- KEYS[1..]  record hashes: digest -> pending prediction (or the 1-byte tombstone)
-- ARGV[1]    the probes, packed: per probe u8 field length, field, u8 n, then n u32
--            (little-endian) 0-based KEYS indexes, tried in order until one holds it
--   -> {'ok', hits}: per probe found, u32 probe index (0-based), u32 KEYS index
--      (0-based), u32 value length, value
--
-- Round r asks every probe still unresolved for its r-th candidate: per hash, one HMGET
-- with all its fields (in slices: unpack() has a stack limit), or, when the hash is a
-- listpack (HLEN <= LISTPACK) asked for a third of its fields or more, one HGETALL read
-- into a table kept for later rounds. A listpack finds a field by a scan of its
-- entries, so many fields asked of one cost a scan each (a miss the whole listpack);
-- HGETALL reads it once. Either way a probe gets the same value. Most probes resolve in
-- round 1.

local blob = ARGV[1]
-- per probe: field, candidate count, first candidate, all candidates (when several)
local fields, ncand, first, cands = {}, {}, {}, {}
local pos, count, size = 1, 0, #blob
while pos <= size do
  local f, n
  f, n, pos = struct.unpack('<Bc0B', blob, pos)
  count = count + 1
  fields[count] = f
  ncand[count] = n
  if n == 1 then
    first[count], pos = struct.unpack('<I4', blob, pos)
  elseif n > 1 then
    local ks = {struct.unpack('<' .. string.rep('I4', n), blob, pos)}
    pos = ks[n + 1]
    first[count] = ks[1]
    cands[count] = ks
  end
end

local SLICE = 4000
-- hash-max-listpack-entries' default: above it a hash is a hash table, where HMGET
-- finds a field without a scan.
local LISTPACK = 512
local out, nout = {}, 0
local pending = {}
for p = 1, count do
  if ncand[p] > 0 then pending[#pending + 1] = p end
end
-- KEYS index -> its whole hash as a table (read by HGETALL)
local whole = {}
local level = 1
while #pending > 0 do
  local groups, order = {}, {}
  for _, p in ipairs(pending) do
    local k = level == 1 and first[p] or cands[p][level]
    local g = groups[k]
    if not g then
      g = {}
      groups[k] = g
      order[#order + 1] = k
    end
    g[#g + 1] = p
  end
  local nxt = {}
  for _, k in ipairs(order) do
    local members = groups[k]
    local key = KEYS[k + 1]
    local map = whole[k]
    if not map then
      local n = redis.call('HLEN', key)
      if n <= LISTPACK and 3 * #members >= n then
        local all = redis.call('HGETALL', key)
        map = {}
        for i = 1, #all, 2 do map[all[i]] = all[i + 1] end
        whole[k] = map
      end
    end
    for s = 1, #members, SLICE do
      local e = math.min(s + SLICE - 1, #members)
      local values
      if map then
        values = {}
        for m = s, e do values[m - s + 1] = map[fields[members[m]]] or false end
      else
        local ask = {}
        for m = s, e do ask[#ask + 1] = fields[members[m]] end
        values = redis.call('HMGET', key, unpack(ask))
      end
      for m = s, e do
        local v = values[m - s + 1]
        local p = members[m]
        if v then
          out[nout + 1] = struct.pack('<I4I4I4', p - 1, k, #v)
          out[nout + 2] = v
          nout = nout + 2
        elseif ncand[p] > level then
          nxt[#nxt + 1] = p
        end
      end
    end
  end
  pending = nxt
  level = level + 1
end
return {'ok', table.concat(out)}
