-- rdlock permit extend: owner-checked renewal of many shares in one call.
-- KEYS: per share its holder set, share table and capacity (3 keys each); ARGV[1..n] owner
-- tokens, ARGV[n+1..2n] ttls in ms.
-- Reply: an array of n integers, 1 extended, 0 not held by that token (expired, released, or
-- the key holds another type). A bad ttl fails the call before any write.
if #KEYS % 3 ~= 0 or #ARGV ~= 2 * (#KEYS / 3) then
  return redis.error_reply('RDLOCK permit extend takes three keys, a token and a ttl per share')
end
local n = #KEYS / 3
for i = n + 1, 2 * n do
  local s = ARGV[i]
  if not (string.match(s, '^[1-9]%d*$') and #s <= 15) then
    return redis.error_reply('RDLOCK invalid ttl')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Raises a key's expiry to at least `px` ms (never lowers it; a missing key stays missing).
local function at_least(k, px)
  local left = redis.call('PTTL', k)
  if left == -1 or (left >= 0 and left < px) then redis.call('PEXPIRE', k, px) end
end
local out = {}
for i = 1, n do
  local holders, shares, cap = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local score = redis.pcall('ZSCORE', holders, ARGV[i])
  local ttl = tonumber(ARGV[n + i])
  if type(score) == 'string' and tonumber(score) > now and redis.call('TYPE', shares).ok == 'hash'
    and redis.call('TYPE', cap).ok == 'string' then
    redis.call('ZADD', holders, now + ttl, ARGV[i])
    at_least(holders, ttl + 1)
    at_least(shares, ttl + 1)
    at_least(cap, ttl + 1)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
