-- rdlock store: the owner-checked write of a mutex's value.
-- KEYS[1] lock key, KEYS[2] the value (a hash {f = the writer's fence, v = the value})
-- ARGV[1] owner token, ARGV[2] the owner's fence, ARGV[3] the largest value accepted (bytes),
-- ARGV[4] the value's ttl in ms, or 0 for none (it outlives the lock), ARGV[5] the value
-- Reply: 1 written; 0 not written: the key is not the caller's (its lease is lost); -1 not
-- written: a holder with a later fence wrote the value (the caller's lease is lost, and the
-- value is a later holder's). Errors write nothing.
if #ARGV ~= 5 then return fail('store takes 5 arguments') end
local fence = ARGV[2]
if not (string.match(fence, '^[1-9]%d*$') and #fence <= 16) then return fail('invalid fence') end
if not ms_arg(3) then return fail('invalid size limit') end
if ARGV[4] ~= '0' and not ms_arg(4) then return fail('invalid ttl') end
if #ARGV[5] > tonumber(ARGV[3]) then return fail('value too large') end

local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value') end
if cur ~= ARGV[1] then return 0 end
local written = redis.pcall('HGET', KEYS[2], 'f')
if type(written) == 'table' then return fail(DATA_TYPE) end
-- Fences only grow: a value written under a later fence is a later holder's, never overwritten.
if written and tonumber(written) and tonumber(written) > tonumber(fence) then return -1 end
redis.call('HSET', KEYS[2], 'f', fence, 'v', ARGV[5])
if ARGV[4] == '0' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
