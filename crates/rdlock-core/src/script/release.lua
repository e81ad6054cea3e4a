-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl:inbox"),
-- ARGV[3] fence counter ttl ms, ARGV[4] claim ms
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter, announced on its inbox as "token:fence".
local token = ARGV[1]
if #ARGV ~= 4 then return fail('release takes 4 arguments') end
if not (ms_arg(3) and ms_arg(4)) then return fail('invalid ttl') end

-- The owner and the fence counter in one read. MGET answers nil for a key of another type
-- too, so a nil owner is read again with GET, which tells (a lock already gone: rare). A
-- user whose ACL rule predates MGET is refused it: then both read nil, which is the checked
-- path below, as before.
local got = redis.pcall('MGET', KEYS[1], KEYS[2])
if got.err then got = {false, false} end
local cur = got[1]
if not cur then
  cur = redis.pcall('GET', KEYS[1])
  if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
end
if cur ~= token then
  local r = redis.pcall('LREM', KEYS[3], 0, ARGV[2])
  if type(r) == 'table' and refused(r) then return fail(QUEUE_TYPE) end
  return 0
end
-- A counter that INCR can raise once more within range makes the hand-off's one write that
-- can fail safe before it is made, so the head is popped at once (LPOP is also the queue's
-- check: another type fails it without writing) rather than read first and popped after:
-- one command fewer per hand-off. Malformed entries and the caller's own stale one go too.
local f = got[2] and fence_of(got[2])
if f and f < 9007199254740990 then
  local head = redis.pcall('LPOP', KEYS[3])
  if type(head) == 'table' and refused(head) then return fail(QUEUE_TYPE) end
  local tok, ttl, inbox = owner(head)
  while head and (not tok or tok == token) do
    head = redis.call('LPOP', KEYS[3])
    tok, ttl, inbox = owner(head)
  end
  if not head then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local err
  f, err = hand_off(tok, ttl, inbox, ARGV[4], ARGV[3], true)
  if not f then return fail(err) end
  return 2
end
-- Any other counter (absent, another type, not a fence, at the top): read the head first, so
-- that a hand-off whose fence cannot be issued fails with nothing written.
local head = redis.pcall('LINDEX', KEYS[3], 0)
if type(head) == 'table' then return fail(QUEUE_TYPE) end
local tok, ttl, inbox, err = next_waiter(head, token)
if err then return fail(err) end
if tok then
  -- The lock never becomes free while someone waits: the releaser cannot barge back in.
  f, err = hand_off(tok, ttl, inbox, ARGV[4], ARGV[3])
  if not f then return fail(err) end
  return 2
end
redis.call('DEL', KEYS[1])
return 1
