-- rdlock release of many locks in one call (a mass release): per lock exactly what
-- release.lua does for one, in order.
-- KEYS[3i-2] lock key, KEYS[3i-1] fence counter, KEYS[3i] wait queue of the i-th lock
-- ARGV[1] fence counter ttl ms, ARGV[2] claim ms; ARGV[2i+1] the i-th owner token, ARGV[2i+2]
-- its queue entry ("token:ttl:inbox"); optionally a last ARGV, the callers' queue ttl ms,
-- asking for release.lua's ARGV[5] for every lock
-- Reply: an array with release.lua's reply per lock: 0, 1, 2, or the text of that lock's
-- error (an error nested in an array does not reach every client as one). A lock that fails
-- writes nothing of its own, and the others go on.
local n = #KEYS / 3
if n < 1 or n ~= math.floor(n) or (#ARGV ~= 2 + 2 * n and #ARGV ~= 3 + 2 * n) then
  return fail('release takes 3 keys and 2 arguments per lock')
end
local qttl = ARGV[3 + 2 * n]
if not (ms_arg(1) and ms_arg(2) and (not qttl or ms_arg(3 + 2 * n))) then return fail('invalid ttl') end
local out = {}
for i = 1, n do
  local r = release_one(3 * (i - 1), ARGV[2 * i + 1], ARGV[2 * i + 2], ARGV[1], ARGV[2], qttl)
  if type(r) == 'table' then r = r.err end
  out[i] = r
end
return out
