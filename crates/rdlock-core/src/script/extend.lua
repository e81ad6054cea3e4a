-- rdlock extend: owner-checked renewal of one or many locks in one call.
-- KEYS[1..n] lock keys; ARGV[1..n] owner tokens; ARGV[n+1..2n] ttls in ms.
-- Reply: an array of n integers, 1 extended, 0 not held by that token (or not a string key).
-- Every ttl is checked before the first write: a bad one fails the call, extending nothing.
local n = #KEYS
if #ARGV ~= 2 * n then
  return redis.error_reply('RDLOCK extend takes a token and a ttl per key')
end
for i = n + 1, 2 * n do
  local s = ARGV[i]
  if not (string.match(s, '^[1-9]%d*$') and #s <= 15) then
    return redis.error_reply('RDLOCK invalid ttl')
  end
end
local out = {}
for i = 1, n do
  local cur = redis.pcall('GET', KEYS[i])
  if cur == ARGV[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[n + i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
