-- rdlock acquire: take the lock, confirm that we hold it (a hand-off's claim, or an earlier
-- attempt whose reply was lost), or join the wait queue. Never ahead of a queued waiter:
-- finding the key free with others queued first, it hands the lock to the queue's head.
-- KEYS[1] lock key (the user's key; value = owner token)
-- KEYS[2] fence counter, KEYS[3] wait queue (list of "token:ttl:inbox" entries),
-- KEYS[4] (a mutex only) its value: a hash {f = the writer's fence, v = the value}
-- ARGV[1] owner token (no ':'), ARGV[2] ttl ms, ARGV[3] mode: "try" | "first" | "retry",
-- ARGV[4] queue ttl ms, ARGV[5] fence counter ttl ms (set when the counter is seeded),
-- ARGV[6] claim ms (how long a hand-off waits for a waiter that did not hear it),
-- ARGV[7] the caller's inbox (see `inbox_arg`)
-- Reply: {1, fence} when the caller holds the lock, {1, fence, f, v} when it holds a mutex
-- that has a value (f is the fence of the holder that stored it); {0, pttl} otherwise, where pttl is the
-- holder's remaining time in ms, or -3 when the caller waits behind other queued waiters.
-- A retry also reports the current fence, {0, pttl, fence}: a hand-off to the caller with a
-- fence not above it happened before this retry and has been lost since.
local token, ttl, mode = ARGV[1], ARGV[2], ARGV[3]
if #ARGV ~= 7 then return fail('acquire takes 7 arguments') end
local bad = attempt_args()
if bad then return fail(bad) end
-- A mutex's value goes out with the grant, read before any write so that a key of another
-- type fails the call with nothing written.
local data
if KEYS[4] then
  data = redis.pcall('HMGET', KEYS[4], 'f', 'v')
  if data.err then return fail(DATA_TYPE) end
end
-- The grant's reply (a function of no upvalues: each one a call captures costs it time).
local function granted(f, data)
  if data and data[2] then return {1, f, data[1] or '', data[2]} end
  return {1, f}
end

-- Take the key if it is free, reading it otherwise, in one command (`SET NX GET`, Redis
-- 7.0+): an uncontended acquire is then this, the queue's head and the fence. A key of
-- another type fails it without writing. Once it has set the key, every failure below
-- deletes it again first (`undo`): the key was absent, so the call writes nothing.
local old = fast_old
if not fast then old = redis.pcall('SET', KEYS[1], token, 'NX', 'PX', ttl, 'GET') end
if type(old) == 'table' and refused(old) then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
local function undo(err)
  redis.call('DEL', KEYS[1])
  return redis.error_reply('RDLOCK ' .. err)
end
local f, err
if old == token then
  -- Ours already: a hand-off's claim to confirm, or an attempt whose reply was lost.
  f, err = counter(KEYS[2])
  if f == nil then return fail(err) end
  if not f or f == 0 then
    f, err = bump(KEYS[2], ARGV[5])
    if not f then return fail(err) end
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  return granted(f, data)
end
if not old then
  -- The index as text: a number would be formatted by the server on every call.
  local head = fast_head
  if not fast then head = redis.pcall('LINDEX', KEYS[3], '0') end
  if type(head) == 'table' then return undo(QUEUE_TYPE) end
  local who, wttl, winbox
  if head then
    who, wttl, winbox, err = next_waiter(head, nil)
    if err then return undo(err) end
  end
  if not who or who == token then
    if fast_incr ~= nil then f, err = bumped(KEYS[2], ARGV[5], fast_incr) else f, err = bump(KEYS[2], ARGV[5]) end
    if not f then return undo(err) end
    if who then redis.call('LPOP', KEYS[3]) end
    return granted(f, data)
  end
  -- Free, but someone queued first: handed to it, never a barge (a lapsed claim passes on
  -- here); the hand-off sets the key to the head's token in place of ours.
  f, err = hand_off(who, wttl, winbox, ARGV[6], ARGV[5])
  if not f then return undo(err) end
end
local entry = token .. ':' .. ttl .. ':' .. ARGV[7]
if mode == 'try' then
  return {0, redis.call('PTTL', KEYS[1])}
end
if mode == 'first' then
  local n = redis.pcall('RPUSH', KEYS[3], entry)
  if type(n) == 'table' and refused(n) then return fail(QUEUE_TYPE) end
  if n == 1 then
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
    return {0, redis.call('PTTL', KEYS[1])}
  end
  return {0, -3}
end
if f == nil then
  f, err = counter(KEYS[2])
  if f == nil then return fail(err) end
end
-- A retry keeps its place while its entry lives; an entry handed a claim that lapsed is gone.
local at = redis.pcall('LPOS', KEYS[3], entry)
if type(at) == 'table' then return fail(QUEUE_TYPE) end
if not at then redis.call('RPUSH', KEYS[3], entry) end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {0, redis.call('PTTL', KEYS[1]), f or 0}
