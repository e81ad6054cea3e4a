-- rdlock permit release: owner-checked release of a share, which hands the freed room to the
-- queue's head (and the waiters after it, while they fit).
-- KEYS as in permit.lua. ARGV[1] owner token, ARGV[2] the caller's queue entry
-- ("token:ttl:inbox:weight"), ARGV[3] fence counter ttl ms, ARGV[4] claim ms, ARGV[5] the
-- capacity (used when none is stored)
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- served; 2 released, and waiters were handed shares, each announced on its inbox.
if #ARGV ~= 5 then return fail('permit release takes 5 arguments') end
if not (ms_arg(3) and ms_arg(4)) then return fail('invalid ttl') end
local cap = count_arg(5)
if not cap then return fail('invalid capacity') end
local now = now_ms()
local err, st = read_keys(now)
if err then return err end
if st.stored then cap = tonumber(st.stored) or cap end

local used = prune(st)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('LREM', KEYS[3], 0, ARGV[2])
  settle(now, cap)
  return 0
end
used = used - drop(ARGV[1])
local _, _at_head, served = serve(used, cap, nil, ARGV[4], now, ARGV[3])
settle(now, cap)
if served > 0 then return 2 end
return 1
