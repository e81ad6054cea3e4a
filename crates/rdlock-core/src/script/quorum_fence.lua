-- rdlock quorum fence (phase 2 on one member): raise the fence counter to the fence the
-- client chose, only while the caller holds the key and only forwards. Across any two
-- majorities this makes fences strictly increasing in the order the members were held
-- (docs/protocol.md, "Quorum lock over independent primaries").
-- KEYS[1] lock key, KEYS[2] fence counter
-- ARGV[1] owner token, ARGV[2] fence, ARGV[3] fence counter ttl ms
-- Reply: {1} raised; {0} the key is not the caller's; {2, counter} the counter is at or past
-- the fence already (refused, nothing written).
local fttl = ms_arg(3)
if not fttl then
  return fail('invalid ttl')
end
local f = ARGV[2]
if not (type(f) == 'string' and string.match(f, '^[1-9]%d*$') and #f <= 16 and tonumber(f) <= 9007199254740990) then
  return fail('invalid fence')
end
local c, err = counter(KEYS[2])
if c == nil then
  return fail(err)
end
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
  return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value')
end
if cur ~= ARGV[1] then
  return {0}
end
if c and c >= tonumber(f) then
  return {2, c}
end
redis.call('SET', KEYS[2], f, 'PX', fttl)
return {1}
