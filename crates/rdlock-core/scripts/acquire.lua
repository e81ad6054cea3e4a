-- rdlock acquire: take the lock, confirm that we already hold it, or join the wait queue.
-- KEYS[1] lock key (the user's key; value = owner token)
-- KEYS[2] fence counter, KEYS[3] wait queue (list of "token:ttl" entries)
-- ARGV[1] owner token, ARGV[2] ttl ms, ARGV[3] mode: "try" | "first" | "retry", ARGV[4] queue ttl ms
-- ARGV[5] fence counter ttl ms (set when the counter is seeded)
-- Reply: {1, fence} when the caller holds the lock; {0, pttl} otherwise, where pttl is the
-- holder's remaining time in ms, or -3 when the caller waits behind other queued waiters.
-- A retry also reports the current fence, {0, pttl, fence}: a hand-off to the caller with a
-- fence not above it happened before this retry and has been lost since.
local token, ttl, mode = ARGV[1], ARGV[2], ARGV[3]
local entry = token .. ':' .. ttl

local old = redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl, 'GET')
if not old then
  local fence = bump(KEYS[2], ARGV[5])
  if mode == 'retry' then redis.call('LREM', KEYS[3], 1, entry) end
  return {1, fence}
end
if old == token then
  -- Ours already: an earlier attempt whose reply was lost, or a hand-off whose message was.
  redis.call('PEXPIRE', KEYS[1], ttl)
  local fence = tonumber(redis.call('GET', KEYS[2]) or bump(KEYS[2], ARGV[5]))
  return {1, fence}
end
if mode == 'try' then
  return {0, redis.call('PTTL', KEYS[1])}
end
local n
if mode == 'first' then
  n = redis.call('RPUSH', KEYS[3], entry)
  if n == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
else
  n = redis.call('LPOS', KEYS[3], entry)
  if n then n = n + 1 else n = redis.call('RPUSH', KEYS[3], entry) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
if mode == 'retry' then
  return {0, redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if n == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
return {0, -3}
