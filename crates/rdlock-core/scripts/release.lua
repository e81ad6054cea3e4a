-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl"), ARGV[3] channel,
-- ARGV[4] fence counter ttl ms, ARGV[5] claim ms
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter as a claim, announced on the channel as "token:fence".
local token = ARGV[1]
if #ARGV ~= 5 then return fail('release takes 5 arguments') end
if not (ms_arg(4) and ms_arg(5)) then return fail('invalid ttl') end

local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
if cur ~= token then
  local r = redis.pcall('LREM', KEYS[3], 0, ARGV[2])
  if type(r) == 'table' then return fail(QUEUE_TYPE) end
  return 0
end
local f, err = counter(KEYS[2])
if f == nil then return fail(err) end
-- The first write: on a queue of another type it fails without writing.
local nxt = redis.pcall('LPOP', KEYS[3])
if type(nxt) == 'table' then return fail(QUEUE_TYPE) end
while nxt do
  local tok, ttl = owner(nxt)
  -- Skips malformed entries and the caller's own stale one.
  if tok and tok ~= token then
    -- The lock never becomes free while someone waits: the releaser cannot barge back in.
    hand_off(tok, ttl, ARGV[5], f, ARGV[4], ARGV[3])
    return 2
  end
  nxt = redis.call('LPOP', KEYS[3])
end
redis.call('DEL', KEYS[1])
return 1
