-- rdlock permit change: owner-checked shrink of a held share, atomically (an RwLock's write
-- share becomes a read share); the freed room goes to the queue's head, as a release's does.
-- KEYS as in permit.lua. ARGV[1] owner token, ARGV[2] the new weight (1 to the share's
-- weight), ARGV[3] fence counter ttl ms, ARGV[4] claim ms, ARGV[5] the capacity (used when
-- none is stored)
-- Reply: 0 not held by the caller (nothing changed); 1 changed (the share keeps its fence
-- and deadline). A weight above the share's is refused: growing could deadlock.
if #ARGV ~= 5 then return fail('permit change takes 5 arguments') end
if not (ms_arg(3) and ms_arg(4)) then return fail('invalid ttl') end
local weight, cap = count_arg(2), count_arg(5)
if not weight then return fail('invalid weight') end
if not cap then return fail('invalid capacity') end
local now = now_ms()
local err, st = read_keys(now)
if err then return err end
if st.stored then cap = tonumber(st.stored) or cap end

local used = prune(st)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  settle(now, cap)
  return 0
end
local w, f = share(ARGV[1])
if weight > w then return fail('a share can only shrink') end
redis.call('HSET', KEYS[4], ARGV[1], weight .. ':' .. string.format('%d', f))
redis.call('HINCRBY', KEYS[4], USED, weight - w)
used = used + weight - w
serve(used, cap, nil, ARGV[4], now, ARGV[3])
settle(now, cap)
return 1
