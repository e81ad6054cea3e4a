-- rdlock inspect: a read-only view of one lock, taken in one step so that its parts agree
-- (for operators and their tools; no lock operation uses it).
-- KEYS[1] the lock key (a string: a lock or a mutex; a sorted set: the holders of a semaphore
-- or read-write lock), KEYS[2] fence counter, KEYS[3] wait queue, KEYS[4] share table,
-- KEYS[5] capacity, KEYS[6] a mutex's value (hash {f = the writer's fence, v = the value}).
-- No ARGV. Tokens leave the server cut to their first 8 characters: a whole token would let
-- its reader renew or release the holder's lease.
-- Reply: {kind, holder, pttl, fence, queue, holders, capacity, value}: kind 'free', 'lock' or
-- 'counted'; holder, a lock's token prefix (or nil); pttl, its ms left (-1 no expiry, -2
-- none); fence, the counter (or nil); queue, per waiter from the head {prefix, ttl, weight}
-- ('' when the entry has none); holders, per holder of a counted resource {prefix, ms left,
-- weight, fence} ('' when unknown); capacity (or nil); value, {1, writer fence} or {0}.
-- Error: WRONGTYPE RDLOCK when any of the keys holds a type no rdlock lock uses.

local want = { { 'string', 'zset' }, { 'string' }, { 'list' }, { 'hash' }, { 'string' }, { 'hash' } }
local kinds = {}
for i = 1, 6 do
  local t = redis.call('TYPE', KEYS[i]).ok
  local fits = t == 'none'
  for _, w in ipairs(want[i]) do
    if t == w then fits = true end
  end
  if not fits then
    return redis.error_reply('WRONGTYPE RDLOCK ' .. KEYS[i] .. ' holds a ' .. t .. ', not an rdlock key')
  end
  kinds[i] = t
end

local function prefix(tok)
  return string.sub(tok or '', 1, 8)
end

local kind, holder, pttl = 'free', false, -2
local holders = {}
if kinds[1] == 'string' then
  kind = 'lock'
  holder = prefix(redis.call('GET', KEYS[1]))
  pttl = redis.call('PTTL', KEYS[1])
elseif kinds[1] == 'zset' then
  kind = 'counted'
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #z, 2 do
    local share = redis.call('HGET', KEYS[4], z[i]) or ''
    local w, f = string.match(share, '^(%d+):(%d+)$')
    local left = math.max(tonumber(z[i + 1]) - now, 0)
    holders[#holders + 1] = { prefix(z[i]), string.format('%d', left), w or '', f or '' }
  end
end

local queue = {}
for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local tok, ttl, _, w = string.match(e, '^([^:]*):([^:]*):([^:]*):?([^:]*)$')
  queue[#queue + 1] = { prefix(tok or e), ttl or '', w or '' }
end

local value = { 0 }
if kinds[6] == 'hash' then
  value = { 1, redis.call('HGET', KEYS[6], 'f') or '' }
end

return { kind, holder, pttl, redis.call('GET', KEYS[2]) or false, queue, holders, redis.call('GET', KEYS[5]) or false, value }
