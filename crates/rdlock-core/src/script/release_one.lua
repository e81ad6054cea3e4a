-- rdlock release of one lock, shared by release.lua (one lock) and release_batch.lua (many):
-- the lock's keys are KEYS[o + 1] lock key, KEYS[o + 2] fence counter, KEYS[o + 3] wait queue.
-- `token` the owner token, `entry` the caller's own queue entry, `fence_ttl` and `claim` in ms
-- (checked by the caller). Returns 0 not held by the caller (its queue entry, if any, is
-- removed); 1 released, nobody waiting; 2 handed to the next waiter, announced on its inbox
-- as "token:fence"; or an error reply, with nothing of this lock written.
local function release_one(o, token, entry, fence_ttl, claim)
  local k, fk, q = KEYS[o + 1], KEYS[o + 2], KEYS[o + 3]
  -- The owner and the fence counter in one read. MGET answers nil for a key of another type
  -- too, so a nil owner is read again with GET, which tells (a lock already gone: rare). A
  -- user whose ACL rule predates MGET is refused it: then both read nil, which is the checked
  -- path below, as before.
  local got = redis.pcall('MGET', k, fk)
  if got.err then got = {false, false} end
  local cur = got[1]
  if not cur then
    cur = redis.pcall('GET', k)
    if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
  end
  if cur ~= token then
    local r = redis.pcall('LREM', q, 0, entry)
    if type(r) == 'table' and refused(r) then return fail(QUEUE_TYPE) end
    return 0
  end
  -- A counter that INCR can raise once more within range makes the hand-off's one write that
  -- can fail safe before it is made, so the head is popped at once (LPOP is also the queue's
  -- check: another type fails it without writing) rather than read first and popped after:
  -- one command fewer per hand-off. Malformed entries and the caller's own stale one go too.
  local f = got[2] and fence_of(got[2])
  if f and f < 9007199254740990 then
    local head = redis.pcall('LPOP', q)
    if type(head) == 'table' and refused(head) then return fail(QUEUE_TYPE) end
    local tok, ttl, inbox = owner(head)
    while head and (not tok or tok == token) do
      head = redis.call('LPOP', q)
      tok, ttl, inbox = owner(head)
    end
    if not head then
      redis.call('DEL', k)
      return 1
    end
    local err
    f, err = hand_off(tok, ttl, inbox, claim, fence_ttl, true, o)
    if not f then return fail(err) end
    return 2
  end
  -- Any other counter (absent, another type, not a fence, at the top): read the head first, so
  -- that a hand-off whose fence cannot be issued fails with nothing written.
  local head = redis.pcall('LINDEX', q, 0)
  if type(head) == 'table' then return fail(QUEUE_TYPE) end
  local tok, ttl, inbox, err = next_waiter(head, token, o)
  if err then return fail(err) end
  if tok then
    -- The lock never becomes free while someone waits: the releaser cannot barge back in.
    f, err = hand_off(tok, ttl, inbox, claim, fence_ttl, false, o)
    if not f then return fail(err) end
    return 2
  end
  redis.call('DEL', k)
  return 1
end
