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
-- Round r asks every probe still unresolved for its r-th candidate: one HMGET per hash
-- with all its fields (in slices: unpack() has a stack limit); most resolve in round 1.

local blob = ARGV[1]
local fields, cands = {}, {}
local pos, count, size = 1, 0, #blob
while pos <= size do
  local flen = string.byte(blob, pos)
  count = count + 1
  fields[count] = string.sub(blob, pos + 1, pos + flen)
  pos = pos + 1 + flen
  local n = string.byte(blob, pos)
  pos = pos + 1
  local ks = {}
  for j = 1, n do
    local a, b, c, d = string.byte(blob, pos, pos + 3)
    ks[j] = a + b * 256 + c * 65536 + d * 16777216
    pos = pos + 4
  end
  cands[count] = ks
end

local function u32(x)
  return string.char(x % 256, math.floor(x / 256) % 256, math.floor(x / 65536) % 256,
    math.floor(x / 16777216) % 256)
end

local SLICE = 4000
local out = {}
local pending = {}
for p = 1, count do
  if #cands[p] > 0 then pending[#pending + 1] = p end
end
local level = 1
while #pending > 0 do
  local groups, order = {}, {}
  for _, p in ipairs(pending) do
    local k = cands[p][level]
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
    for s = 1, #members, SLICE do
      local e = math.min(s + SLICE - 1, #members)
      local ask = {}
      for m = s, e do ask[#ask + 1] = fields[members[m]] end
      local values = redis.call('HMGET', KEYS[k + 1], unpack(ask))
      for m = s, e do
        local v = values[m - s + 1]
        local p = members[m]
        if v then
          out[#out + 1] = u32(p - 1) .. u32(k) .. u32(#v) .. v
        elseif #cands[p] > level then
          nxt[#nxt + 1] = p
        end
      end
    end
  end
  pending = nxt
  level = level + 1
end
return {'ok', table.concat(out)}
