-- rdlock fence prelude, prepended to the scripts that grant a lock.
-- The counter only moves forward; a missing one (new lock, or a server restarted without
-- persistence) is seeded from the server clock in microseconds, so it never goes backwards.
local function bump(key, ttl)
  local f = redis.call('INCR', key)
  if f == 1 then
    local t = redis.call('TIME')
    f = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', key, string.format('%d', f), 'PX', ttl)
  end
  return f
end

