-- rdlock quorum take (phase 1 on one member): take the lock key, or confirm our own hold,
-- and read the member's fence counter. The counter is only read here: phase 2 raises it.
-- KEYS[1] lock key, KEYS[2] fence counter
-- ARGV[1] owner token (fresh per attempt), ARGV[2] ttl ms
-- Reply: {1, counter} held by the caller now (a missing counter reads as the server's TIME
-- in microseconds, the seed a counter lost to a restart would restart from); {0, pttl} held
-- by another token.
local ttl = ms_arg(2)
if not ttl then
  return fail('invalid ttl')
end
local c, err = counter(KEYS[2])
if c == nil then
  return fail(err)
end
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
  return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value')
end
if cur and cur ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
if cur then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
end
if not c then
  local t = redis.call('TIME')
  c = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
return {1, c}
