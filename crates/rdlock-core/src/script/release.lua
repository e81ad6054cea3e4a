-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl:inbox"),
-- ARGV[3] fence counter ttl ms, ARGV[4] claim ms
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter, announced on its inbox as "token:fence".
local token = ARGV[1]
if #ARGV ~= 4 then return fail('release takes 4 arguments') end
if not (ms_arg(3) and ms_arg(4)) then return fail('invalid ttl') end

local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
if cur ~= token then
  local r = redis.pcall('LREM', KEYS[3], 0, ARGV[2])
  if type(r) == 'table' then return fail(QUEUE_TYPE) end
  return 0
end
local head = redis.pcall('LINDEX', KEYS[3], 0)
if type(head) == 'table' then return fail(QUEUE_TYPE) end
local tok, ttl, inbox, err = next_waiter(head, token)
if err then return fail(err) end
if tok then
  -- The lock never becomes free while someone waits: the releaser cannot barge back in.
  local f
  f, err = hand_off(tok, ttl, inbox, ARGV[4], ARGV[3])
  if not f then return fail(err) end
  return 2
end
redis.call('DEL', KEYS[1])
return 1
