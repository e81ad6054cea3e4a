-- rdlock release of one lock, shared by release.lua (one lock) and release_batch.lua (many):
-- the lock's keys are KEYS[o + 1] lock key, KEYS[o + 2] fence counter, KEYS[o + 3] wait queue.
-- `token` the owner token, `entry` the caller's own queue entry, `fence_ttl` and `claim` in ms,
-- `qttl` nil, or the caller's queue TTL in ms asking for `release_folded` (checked by the
-- caller). Returns 0 not held by the caller (its queue entry, if any, is removed); 1
-- released, nobody waiting; 2 handed to the next waiter, announced on its inbox as
-- "token:fence" (then, when a connection heard it, that channel and message too); or an
-- error reply, with nothing of this lock written.
-- The release on a server whose SET takes IFEQ (Valkey 8.1+, Redis 8.4+), when the caller
-- held the lock: the owner check is the new owner's `SET K head IFEQ token`, so a heard
-- hand-off is LPOP, INCR, SET, PUBLISH (one command fewer than MGET, LPOP, INCR, PUBLISH,
-- SET). The head must be popped before the owner is known, so every other outcome puts back
-- what it wrote: the head (LPUSH; a queue the pop emptied lost its TTL with it, and gets
-- `qttl`, the caller's queue TTL), the fence (DECR; a counter INCR created is deleted). Nil
-- when the checked release below must tell the outcome (nothing is then left written but
-- that TTL): a queue of another type, a malformed or own head, a counter INCR cannot raise
-- within range, a key of another type, a SET without IFEQ.
local function release_folded(o, token, entry, fence_ttl, claim, qttl, popped)
  local k, fk, q = KEYS[o + 1], KEYS[o + 2], KEYS[o + 3]
  local head = popped
  if head == nil then head = redis.pcall('LPOP', q) end
  if type(head) == 'table' then
    refused(head)
    return nil
  end
  if not head then
    local cur = redis.pcall('GET', k)
    if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
    if cur ~= token then return 0 end
    redis.call('DEL', k)
    return 1
  end
  local function back()
    local n = redis.pcall('LPUSH', q, head)
    if type(n) == 'number' then
      if n == 1 then redis.call('PEXPIRE', q, qttl) end
      return
    end
    -- An ACL rule from before LPUSH was needed refuses it: the queue is rebuilt in order with
    -- RPUSH instead, its TTL read first.
    local pttl = redis.call('PTTL', q)
    local rest = redis.call('LRANGE', q, 0, -1)
    redis.call('DEL', q)
    redis.call('RPUSH', q, head)
    for _, e in ipairs(rest) do redis.call('RPUSH', q, e) end
    if pttl > 0 then redis.call('PEXPIRE', q, pttl) elseif pttl == -2 then redis.call('PEXPIRE', q, qttl) end
  end
  local tok, ttl, inbox = owner(head)
  if not tok or tok == token then
    back()
    return nil
  end
  local f = redis.pcall('INCR', fk)
  if type(f) == 'table' or f < 1 or f > 9007199254740990 then
    if type(f) == 'number' then redis.call('DECR', fk) end
    back()
    return nil
  end
  -- The waiter's whole ttl if it has an inbox to hear it, shortened below to the claim if
  -- nobody did (as `hand_off` decides after its PUBLISH).
  local px = claim
  if ttl and (inbox or tonumber(ttl) < tonumber(claim)) then px = ttl end
  local set = redis.pcall('SET', k, tok, 'IFEQ', token, 'PX', px)
  if not set or set.err then
    if f == 1 and redis.call('PTTL', fk) == -1 then redis.call('DEL', fk) else redis.call('DECR', fk) end
    back()
    if set then return nil end
    redis.call('LREM', q, 0, entry)
    return 0
  end
  if f == 1 then f = seed(fk, fence_ttl) end
  if inbox then
    local ch, msg = k .. '#rdl:' .. inbox, tok .. ':' .. string.format('%d', f)
    if publish(ch, msg) > 0 then return 2, ch, msg end
    if ttl and tonumber(ttl) > tonumber(claim) then redis.call('PEXPIRE', k, claim) end
  end
  return 2
end

-- `read` and `popped`, when given, are the MGET and the LPOP below (with `qttl`: the LPOP of
-- `release_folded`), sent already (release_fast.lua); so is `incr`, the hand-off's INCR, when
-- given with them.
local function release_one(o, token, entry, fence_ttl, claim, qttl, read, popped, incr)
  if qttl then
    local r, ch, msg = release_folded(o, token, entry, fence_ttl, claim, qttl, popped)
    if r then return r, ch, msg end
    -- Whatever it popped it has put back: the checked release reads the queue again.
    popped = nil
  end
  local k, fk, q = KEYS[o + 1], KEYS[o + 2], KEYS[o + 3]
  -- The owner and the fence counter in one read. MGET answers nil for a key of another type
  -- too, so a nil owner is read again with GET, which tells (a lock already gone: rare). A
  -- user whose ACL rule predates MGET is refused it: then both read nil, which is the checked
  -- path below, as before.
  local got = read or redis.pcall('MGET', k, fk)
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
    local head = popped
    if head == nil then head = redis.pcall('LPOP', q) end
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
    local err, ch, msg
    f, err, ch, msg = hand_off(tok, ttl, inbox, claim, fence_ttl, true, o, incr)
    if not f then return fail(err) end
    return 2, ch, msg
  end
  -- Any other counter (absent, another type, not a fence, at the top): read the head first, so
  -- that a hand-off whose fence cannot be issued fails with nothing written.
  local head = redis.pcall('LINDEX', q, 0)
  if type(head) == 'table' then return fail(QUEUE_TYPE) end
  local tok, ttl, inbox, err = next_waiter(head, token, o)
  if err then return fail(err) end
  if tok then
    -- The lock never becomes free while someone waits: the releaser cannot barge back in.
    local ch, msg
    f, err, ch, msg = hand_off(tok, ttl, inbox, claim, fence_ttl, false, o)
    if not f then return fail(err) end
    return 2, ch, msg
  end
  redis.call('DEL', k)
  return 1
end
