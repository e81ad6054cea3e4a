-- rdlock permit acquire: take a share of a counted resource (a Semaphore permit; an RwLock
-- read share of weight 1 or its write share of the whole capacity), confirm one we hold (a
-- hand-off's claim, or an attempt whose reply was lost), or join the wait queue. Never ahead
-- of a queued waiter: a free share goes to the queue's head first, as long as the head fits.
-- KEYS as in permit.lua: holder set, fence counter, queue, share table, capacity.
-- ARGV[1] owner token (no ':'), ARGV[2] ttl ms, ARGV[3] mode: "try" | "first" | "retry",
-- ARGV[4] queue ttl ms, ARGV[5] fence counter ttl ms, ARGV[6] claim ms, ARGV[7] the caller's
-- inbox, ARGV[8] capacity, ARGV[9] weight (1 to the capacity)
-- Reply: {1, fence} when the caller holds its share; {0, ms} otherwise, ms until the earliest
-- holder's deadline (-3 when nobody holds, or the caller waits behind others); a retry also
-- reports the current fence, {0, ms, fence}.
local token, ttl, mode = ARGV[1], ARGV[2], ARGV[3]
if #ARGV ~= 9 then return fail('permit acquire takes 9 arguments') end
local bad = attempt_args()
if bad then return fail(bad) end
local cap, weight = count_arg(8), count_arg(9)
if not cap then return fail('invalid capacity') end
if not weight or weight > cap then return fail('invalid weight') end
local now = now_ms()
local err, st = read_keys(now)
if err then return err end
err = check_cap(cap, st.stored)
if err then return err end
local entry = token .. ':' .. ttl .. ':' .. ARGV[7] .. ':' .. weight

local used = prune(st)
if redis.call('ZSCORE', KEYS[1], token) then
  redis.call('ZADD', KEYS[1], now + tonumber(ttl), token)
  local _, f = share(token)
  settle(now, cap)
  return {1, f}
end
local at_head
used, at_head = serve(used, cap, token, ARGV[6], now, ARGV[5])
if (at_head or redis.call('LLEN', KEYS[3]) == 0) and used + weight <= cap then
  local f = admit(token, tonumber(ttl), weight, now, ARGV[5])
  if at_head then redis.call('LPOP', KEYS[3]) end
  settle(now, cap)
  return {1, f}
end
local wait = first_deadline(now)
if mode == 'try' then
  settle(now, cap)
  return {0, wait}
end
if mode == 'first' then
  local n = redis.call('RPUSH', KEYS[3], entry)
  if n == 1 then
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
  settle(now, cap)
  if n == 1 then return {0, wait} end
  return {0, -3}
end
local at = redis.call('LPOS', KEYS[3], entry)
if not at then redis.call('RPUSH', KEYS[3], entry) end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local f = counter(KEYS[2])
settle(now, cap)
return {0, wait, f or 0}
