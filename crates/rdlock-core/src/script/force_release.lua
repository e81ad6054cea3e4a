-- rdlock force release: an operator's delete of a lock, whoever holds it, that hands it on as
-- a release does: a lock to its queue's head, a counted resource's room to the waiters that
-- fit, each announced on its inbox, so that waiters are woken rather than left to poll. It
-- breaks the holders' exclusion: each learns at its next renewal that its lease is lost. A
-- mutex's value is left as it is.
-- KEYS as in permit.lua (the lock key or holder set, fence counter, queue, share table,
-- capacity). ARGV[1] fence counter ttl ms, ARGV[2] claim ms.
-- Reply: 0 nothing was held and nobody was served; 1 deleted, nobody waiting; 2 handed on.
if #ARGV ~= 2 then return fail('force release takes 2 arguments') end
if not (ms_arg(1) and ms_arg(2)) then return fail('invalid ttl') end

local kind = redis.call('TYPE', KEYS[1]).ok
local stored = redis.pcall('GET', KEYS[5])
if type(stored) == 'table' then return fail(CAP_TYPE) end

if kind == 'zset' or (kind == 'none' and stored) then
  local now = now_ms()
  local err, st = read_keys(now)
  if err then return err end
  local held = redis.call('ZCARD', KEYS[1]) > 0
  local cap = tonumber(st.stored)
  local share_kind = redis.call('TYPE', KEYS[4]).ok
  if share_kind ~= 'none' and share_kind ~= 'hash' then return fail(SHARES_TYPE) end
  redis.call('DEL', KEYS[1], KEYS[4])
  local served = 0
  if cap then
    local _, _at_head, n = serve(0, cap, nil, ARGV[2], now, ARGV[1])
    served = n
    settle(now, cap)
  end
  if served > 0 then return 2 end
  if held then return 1 end
  return 0
end

if kind ~= 'string' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value')
end
local head = redis.pcall('LINDEX', KEYS[3], 0)
if type(head) == 'table' then return fail(QUEUE_TYPE) end
local tok, ttl, inbox, err = next_waiter(head, nil)
if err then return fail(err) end
if tok then
  local f
  f, err = hand_off(tok, ttl, inbox, ARGV[2], ARGV[1])
  if not f then return fail(err) end
  return 2
end
if kind == 'none' then return 0 end
redis.call('DEL', KEYS[1])
return 1
