-- rdlock prelude, prepended to the scripts that grant a lock (acquire.lua, release.lua).
-- A script that fails must write nothing (Redis keeps the writes made before an error), so
-- every key and argument a script uses is checked before its first write, and the writes
-- that follow cannot fail. Errors start with RDLOCK (WRONGTYPE for the lock key itself).

local function fail(what)
  return redis.error_reply('RDLOCK ' .. what)
end

-- A write that a check makes (pcall) and the server refuses for another reason than the data
-- (READONLY on a primary demoted by a failover, OOM, NOPERM, MASTERDOWN) is passed on as it
-- is, so that the client follows the failover or reports the refusal instead of blaming the
-- key. Such a refusal comes only at a script's first write, so nothing is half done.
local function refused(e)
  local code = string.match(e.err, '^%u+')
  if code == 'READONLY' or code == 'OOM' or code == 'NOPERM' or code == 'MASTERDOWN' then
    error(e)
  end
  return e
end

local QUEUE_TYPE = 'wait queue holds another type of value'
local FENCE_TYPE = 'fence counter holds another type of value'
local DATA_TYPE = 'value key holds another type of value'
local FENCE_VALUE = 'fence counter holds no valid fence (an integer from 0 to 2^53 - 2)'

-- ARGV[i] as a number of ms every command accepts (1 to 15 digits, no sign, no leading 0);
-- nil when it is not one. The checks run on every call, where each library call costs
-- (~0.05 µs, a pattern ~0.2 µs): `find` (no substring made), no `type` (ARGV holds strings).
local function ms_arg(i)
  local s = ARGV[i]
  if s and #s <= 15 and string.find(s, '^[1-9]%d*$') then
    return s
  end
  return nil
end

-- A fence counter's stored text as a number, when it is a fence: an integer that INCR accepts
-- and Lua holds exactly (0 to 2^53 - 2); nil for anything else.
local function fence_of(v)
  if #v <= 16 and (v == '0' or string.find(v, '^[1-9]%d*$')) then
    local f = tonumber(v)
    if f <= 9007199254740990 then
      return f
    end
  end
  return nil
end

-- The fence counter: false when absent, else its value (`fence_of`); nil and the reason for
-- anything else.
local function counter(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then
    return nil, FENCE_TYPE
  end
  if not v then
    return false
  end
  local f = fence_of(v)
  if f then
    return f
  end
  return nil, FENCE_VALUE
end

-- Seeds a counter that INCR has just made 1 (it was missing) from the server clock in
-- microseconds, with its ttl; returns that fence.
local function seed(key, ttl)
  local t = redis.call('TIME')
  local f = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', key, string.format('%d', f), 'PX', ttl)
  return f
end

-- Issues the next fence; nil and the reason when the counter cannot be raised. The counter
-- only moves forward; a missing one (new lock, or a server restarted without persistence) is
-- seeded from the server clock in microseconds, so it never goes backwards. Made as its
-- script's first write, it is also the counter's check: INCR refuses anything but an integer
-- without writing, and a result out of range (negative, or past what Lua holds exactly) is
-- taken back at once.
-- `bumped` takes INCR's answer `f` when the caller has sent it already (acquire_fast.lua).
local function bumped(key, ttl, f)
  if type(f) == 'table' then
    refused(f)
    if string.find(f.err, 'WRONGTYPE', 1, true) then
      return nil, FENCE_TYPE
    end
    return nil, FENCE_VALUE
  end
  if f < 1 or f > 9007199254740990 then
    redis.call('DECR', key)
    return nil, FENCE_VALUE
  end
  if f == 1 then
    f = seed(key, ttl)
  end
  return f
end

local function bump(key, ttl)
  return bumped(key, ttl, redis.pcall('INCR', key))
end

-- A waiter's inbox, as queue entries and acquire's ARGV carry it: the role `i` and the
-- client's id in 16 hex digits, then the glue `#` and three characters when the key has no
-- hash tag. The channel is KEYS[1] .. '#rdl:' .. inbox: it starts with the lock key and
-- shares its slot. Nil when `s` is not one (a string or nil). The length picks the one
-- pattern to try and fixes the number of hex digits (`%x+` is cheaper than 16 `%x`).
local function inbox_arg(s)
  local n = s and #s
  if (n == 17 and string.find(s, '^i%x+$')) or (n == 21 and string.find(s, '^i%x+#%w%w%w$')) then
    return s
  end
  return nil
end

-- A queue entry "token:ttl:inbox": its token, its ttl when that is a valid number of ms, and
-- its inbox when valid; nil for an entry that is not one (it is dropped).
local function owner(entry)
  if not entry then
    return nil
  end
  local tok, ttl, inbox = string.match(entry, '^([^:]+):([^:]*):(.*)$')
  if ttl and not (string.match(ttl, '^[1-9]%d*$') and #ttl <= 15) then
    ttl = nil
  end
  return tok, ttl, inbox_arg(inbox)
end

-- Hands the lock to the queued waiter `tok` (the queue's head, popped here unless the caller
-- `popped` it already) and publishes `tok:fence` on its inbox. PUBLISH answers how many connections received the message: one
-- or more means the waiter's client is connected and subscribed, and will hold the lock as
-- soon as the message arrives, so the key holds its token for its whole ttl. None means the
-- waiter's client is gone (crashed, killed, dropped, its connection closed) or not yet
-- subscribed: the key then holds its token for a claim of `claim` ms only (its ttl when
-- shorter), which the waiter, if it lives, confirms at its next attempt (acquire finds its
-- token and extends the key to its ttl); a dead waiter so holds up the others for one claim,
-- not for a lease. The fence goes first: it is the only step that can fail, and then nothing
-- is written. The lock's three keys are KEYS[o + 1] to KEYS[o + 3] (`o` 0 unless a batch).
-- `incr`, when given, is the INCR of the counter sent already (release_fast.lua). Returns
-- the fence, then (heard) the channel and the message, which a release answers.
local function hand_off(tok, ttl, inbox, claim, fence_ttl, popped, o, incr)
  o = o or 0
  local f, err
  if incr == nil then
    f, err = bump(KEYS[o + 2], fence_ttl)
  else
    f, err = bumped(KEYS[o + 2], fence_ttl, incr)
  end
  if not f then
    return nil, err
  end
  local heard, ch, msg = 0, nil, nil
  if inbox then
    ch, msg = KEYS[o + 1] .. '#rdl:' .. inbox, tok .. ':' .. string.format('%d', f)
    heard = publish(ch, msg)
  end
  local px = claim
  if ttl and (heard > 0 or tonumber(ttl) < tonumber(claim)) then
    px = ttl
  end
  redis.call('SET', KEYS[o + 1], tok, 'PX', px)
  if not popped then
    redis.call('LPOP', KEYS[o + 3])
  end
  if heard > 0 then
    return f, nil, ch, msg
  end
  return f
end

-- Drops malformed entries and (when `mine` is given) the caller's own stale one from the
-- queue's head; returns the head's token, ttl and inbox, or nil when the queue is empty. Popping
-- is a write, so the counter is checked first when there is anything to drop. Keys as for
-- `hand_off`.
local function next_waiter(head, mine, o)
  o = o or 0
  local tok, ttl, inbox = owner(head)
  if head and (not tok or tok == mine) then
    local _, err = counter(KEYS[o + 2])
    if err then
      return nil, nil, nil, err
    end
  end
  while head and (not tok or tok == mine) do
    redis.call('LPOP', KEYS[o + 3])
    head = redis.call('LINDEX', KEYS[o + 3], 0)
    tok, ttl, inbox = owner(head)
  end
  return tok, ttl, inbox
end
