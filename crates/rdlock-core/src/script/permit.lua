-- rdlock permits prelude, prepended (after fence.lua) to the scripts of counted leases:
-- Semaphore permits, and RwLock shares (a reader weighs 1, a writer the whole capacity).
-- KEYS[1] the holder set (sorted set: token -> deadline in server ms), KEYS[2] the fence
-- counter, KEYS[3] the FIFO queue ("token:ttl:inbox:weight"), KEYS[4] the share table (hash:
-- token -> "weight:fence", and "#used" -> the sum of the live holders' weights), KEYS[5] the
-- capacity (a string, stored while the resource is held or waited for).
-- Every script checks the types of its keys and the counter before its first write, as
-- fence.lua asks; a holder whose deadline passed is pruned before anything is decided.

local HOLDERS_TYPE = 'WRONGTYPE RDLOCK holder set holds another type of value'
local SHARES_TYPE = 'share table holds another type of value'
local CAP_TYPE = 'capacity holds another type of value'
local USED = '#used'
-- Capacities and weights: 1 to 2^31 - 1.
local MAX_CAP = 2147483647

-- A count of permits, ARGV[i]: 1 to MAX_CAP, no sign, no leading 0; nil when it is not one.
local function count_arg(i)
  local s = ARGV[i]
  if type(s) == 'string' and string.match(s, '^[1-9]%d*$') and #s <= 10 and tonumber(s) <= MAX_CAP then
    return tonumber(s)
  end
  return nil
end

-- Server time in ms: deadlines are on the server's clock, as a key's PX is.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Reads what every call needs, checking on the way, before any write, that KEYS[1], [3],
-- [4], [5] hold their types (or nothing; each first read is made with pcall, which fails on
-- another type without writing) and that the counter is valid. Returns nil and the readings:
-- the holders whose deadline passed by `now`, the queue's length, the weight in use and the
-- stored capacity; or an error reply to return.
local function read_keys(now)
  local dead = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  if dead.err then return redis.error_reply(HOLDERS_TYPE) end
  local queued = redis.pcall('LLEN', KEYS[3])
  if type(queued) == 'table' then return fail(QUEUE_TYPE) end
  local used = redis.pcall('HGET', KEYS[4], USED)
  if type(used) == 'table' then return fail(SHARES_TYPE) end
  local stored = redis.pcall('GET', KEYS[5])
  if type(stored) == 'table' then return fail(CAP_TYPE) end
  local f, err = counter(KEYS[2])
  if err then return fail(err) end
  -- Room for the fences this call may issue (one per queued entry served, and the caller's).
  if f and f + queued + 1 > 9007199254740990 then return fail(FENCE_VALUE) end
  return nil, { dead = dead, queued = queued, used = tonumber(used) or 0, stored = stored }
end

-- The stored capacity must be `cap` (when one is stored); nil or an error reply.
local function check_cap(cap, stored)
  if stored and stored ~= tostring(cap) then
    return fail('capacity mismatch: stored ' .. stored .. ', asked ' .. tostring(cap))
  end
  return nil
end

-- A holder's "weight:fence"; weight 0 when unknown.
local function share(tok)
  local v = redis.call('HGET', KEYS[4], tok)
  if not v then return 0, 0 end
  local w, f = string.match(v, '^(%d+):(%d+)$')
  return tonumber(w) or 0, tonumber(f) or 0
end

-- Removes holder `tok` and its weight; returns the weight.
local function drop(tok)
  local w = share(tok)
  redis.call('ZREM', KEYS[1], tok)
  redis.call('HDEL', KEYS[4], tok)
  if w > 0 then redis.call('HINCRBY', KEYS[4], USED, -w) end
  return w
end

-- Drops the holders whose deadline passed (`read_keys` found them); returns the live weight
-- in use.
local function prune(st)
  local used = st.used
  for _, tok in ipairs(st.dead) do used = used - drop(tok) end
  return used
end

-- Adds holder `tok` for `px` ms with `weight`, under a fresh fence; returns the fence.
local function admit(tok, px, weight, now, fence_ttl)
  local f = bump(KEYS[2], fence_ttl)
  redis.call('ZADD', KEYS[1], now + px, tok)
  redis.call('HSET', KEYS[4], tok, weight .. ':' .. string.format('%d', f))
  redis.call('HINCRBY', KEYS[4], USED, weight)
  return f
end

-- A queue entry "token:ttl:inbox:weight": token, ttl (ms, or nil), inbox (or nil), weight
-- (or nil); nil for an entry that is not one.
local function permit_owner(entry)
  if not entry then return nil end
  local tok, ttl, inbox, w = string.match(entry, '^([^:]+):([^:]*):([^:]*):([^:]*)$')
  if not tok then return nil end
  if not (string.match(ttl, '^[1-9]%d*$') and #ttl <= 15) then ttl = nil end
  if not (string.match(w, '^[1-9]%d*$') and #w <= 10 and tonumber(w) <= MAX_CAP) then w = nil end
  return tok, ttl, inbox_arg(inbox), w and tonumber(w)
end

-- Serves the queue from its head while the head fits (strict FIFO: never past a head that
-- does not fit), handing each its share as the lock's hand-off does (heard: its ttl; else a
-- claim). Stops at `mine` (the caller, to be served by the caller's script) and drops
-- malformed entries. Returns the weight in use after, whether the caller is at the head, and
-- how many waiters were served.
local function serve(used, cap, mine, claim, now, fence_ttl)
  local served = 0
  while true do
    local head = redis.call('LINDEX', KEYS[3], 0)
    if not head then return used, false, served end
    local tok, ttl, inbox, w = permit_owner(head)
    if not tok or not w then
      redis.call('LPOP', KEYS[3])
    elseif tok == mine then
      return used, true, served
    elseif used + w > cap then
      return used, false, served
    else
      served = served + 1
      local f = bump(KEYS[2], fence_ttl)
      local heard = 0
      if inbox then
        heard = publish(KEYS[1] .. '#rdl:' .. inbox, tok .. ':' .. string.format('%d', f))
      end
      local px = tonumber(claim)
      if ttl and (heard > 0 or tonumber(ttl) < px) then px = tonumber(ttl) end
      redis.call('ZADD', KEYS[1], now + px, tok)
      redis.call('HSET', KEYS[4], tok, w .. ':' .. string.format('%d', f))
      redis.call('HINCRBY', KEYS[4], USED, w)
      redis.call('LPOP', KEYS[3])
      used = used + w
    end
  end
end

-- Sets the expiries after a call: the holder set and share table live until the last
-- deadline, the capacity as long as they or the queue do; empty ones are deleted.
local function settle(now, cap)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local qttl = redis.call('PTTL', KEYS[3])
  local live = 0
  if last[2] then
    live = tonumber(last[2]) - now + 1
    redis.call('PEXPIRE', KEYS[1], live)
    redis.call('PEXPIRE', KEYS[4], live)
  else
    redis.call('DEL', KEYS[4])
  end
  local keep = math.max(live, qttl)
  if keep > 0 then
    redis.call('SET', KEYS[5], tostring(cap), 'PX', keep)
  else
    redis.call('DEL', KEYS[5])
  end
end

-- ms until the earliest holder's deadline (when a permit may come free without a release).
local function first_deadline(now)
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then return math.max(tonumber(first[2]) - now, 0) end
  return -3
end
