-- rdlock prelude, prepended to the scripts that grant a lock (acquire.lua, release.lua).
-- A script that fails must write nothing (Redis keeps the writes made before an error), so
-- every key and argument a script uses is checked before its first write, and the writes
-- that follow cannot fail. Errors start with RDLOCK (WRONGTYPE for the lock key itself).

local function fail(what)
  return redis.error_reply('RDLOCK ' .. what)
end

local QUEUE_TYPE = 'wait queue holds another type of value'

-- ARGV[i] as a number of ms every command accepts (1 to 15 digits, no sign, no leading 0);
-- nil when it is not one.
local function ms_arg(i)
  local s = ARGV[i]
  if type(s) == 'string' and string.match(s, '^[1-9]%d*$') and #s <= 15 then
    return s
  end
  return nil
end

-- The fence counter: false when absent, else its value, which must be an integer that INCR
-- accepts and Lua holds exactly (0 to 2^53 - 2); nil and the reason for anything else.
local function counter(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then
    return nil, 'fence counter holds another type of value'
  end
  if not v then
    return false
  end
  if (v == '0' or string.match(v, '^[1-9]%d*$')) and #v <= 16 and tonumber(v) <= 9007199254740990 then
    return tonumber(v)
  end
  return nil, 'fence counter holds no integer'
end

-- Issues the next fence. The counter only moves forward; a missing one (new lock, or a
-- server restarted without persistence) is seeded from the server clock in microseconds, so
-- it never goes backwards. `cur` is what `counter` read.
local function bump(key, cur, ttl)
  if cur and cur > 0 then
    return redis.call('INCR', key)
  end
  local t = redis.call('TIME')
  local f = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', key, string.format('%d', f), 'PX', ttl)
  return f
end

-- A queue entry "token:ttl": its token, and its ttl when that is a valid number of ms;
-- nil for an entry that is not one (it is dropped).
local function owner(entry)
  if not entry then
    return nil
  end
  local tok, ttl = string.match(entry, '^([^:]+):(.*)$')
  if ttl and not (string.match(ttl, '^[1-9]%d*$') and #ttl <= 15) then
    ttl = nil
  end
  return tok, ttl
end

-- Hands the lock to the queued waiter `tok` as a claim: the key holds its token for
-- `claim` ms (its own ttl when shorter), and `tok:fence` is published. The waiter owns the
-- lock only once it confirms (acquire finds its token and extends the key to its ttl), so a
-- waiter that has gone away holds the lock for one claim, not for a lease.
local function hand_off(tok, ttl, claim, cur, fence_ttl, channel)
  local px = claim
  if ttl and tonumber(ttl) < tonumber(claim) then
    px = ttl
  end
  redis.call('SET', KEYS[1], tok, 'PX', px)
  local f = bump(KEYS[2], cur, fence_ttl)
  redis.call('PUBLISH', channel, tok .. ':' .. string.format('%d', f))
  return f
end

