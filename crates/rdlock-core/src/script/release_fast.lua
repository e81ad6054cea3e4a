-- rdlock release's common cases, before fence.lua and release_one.lua in release's script
-- (their helpers are closures made again on each call), with valid arguments:
-- - no queue TTL to fold: the owner and the counter are read (MGET) as `release_one` reads them
--   first; held by the caller, with a counter that can issue one more fence, the queue's head
--   is popped as `release_one` pops it; nobody queued, the key is deleted: released. A head
--   that is another waiter's well-formed entry (a token, a ttl and an inbox that `owner` would
--   all accept), with a counter already past 0 (so INCR raises it within range, with no seed to
--   make), is handed the lock as `hand_off` hands it: INCR, PUBLISH, SET: handed over, with
--   the announcement when a connection heard it (release.lua's reply).
-- - a queue TTL to fold (the server's SET takes IFEQ): the queue's head is popped as
--   `release_folded` pops it first; nobody queued, the key is read and deleted if the caller
--   holds it, as `release_folded` does: released, or not held.
-- Anything else goes on to `release_one` with what was read (`fast_got`), popped
-- (`fast_head`) and, for a hand-off whose INCR was refused, its answer (`fast_incr`), which it
-- uses in place of sending those commands again.
local fast_got, fast_head, fast_incr
if (#ARGV == 4 or #ARGV == 5) and #ARGV[3] <= 15 and #ARGV[4] <= 15 and #(ARGV[5] or '1') <= 15
  and string.find(ARGV[3] .. ':' .. ARGV[4] .. ':' .. (ARGV[5] or '1'), '^[1-9]%d*:[1-9]%d*:[1-9]%d*$')
then
  if ARGV[5] then
    fast_head = redis.pcall('LPOP', KEYS[3])
    if fast_head == false then
      local cur = redis.pcall('GET', KEYS[1])
      if type(cur) == 'table' then
        return redis.error_reply('WRONGTYPE RDLOCK lock key holds another type of value')
      end
      if cur ~= ARGV[1] then return 0 end
      redis.call('DEL', KEYS[1])
      return 1
    end
  else
    fast_got = redis.pcall('MGET', KEYS[1], KEYS[2])
    local v = not fast_got.err and fast_got[1] == ARGV[1] and fast_got[2]
    if v and #v <= 16 and (v == '0' or string.find(v, '^[1-9]%d*$')) and tonumber(v) < 9007199254740990 then
      fast_head = redis.pcall('LPOP', KEYS[3])
      if fast_head == false then
        redis.call('DEL', KEYS[1])
        return 1
      end
      if type(fast_head) == 'string' and v ~= '0' then
        local tok, ttl, inbox = string.match(fast_head, '^([^:]+):([^:]*):(.*)$')
        local n = inbox and #inbox
        if tok and tok ~= ARGV[1] and #ttl <= 15 and string.find(ttl, '^[1-9]%d*$')
          and ((n == 17 and string.find(inbox, '^i%x+$')) or (n == 21 and string.find(inbox, '^i%x+#%w%w%w$')))
        then
          -- Cannot fail on the data (an integer read above, below the range's end), only be
          -- refused (an ACL rule without INCR): `bumped` then answers as for any refusal.
          local f = redis.pcall('INCR', KEYS[2])
          if type(f) == 'number' then
            local ch, msg = KEYS[1] .. '#rdl:' .. inbox, tok .. ':' .. string.format('%d', f)
            local heard = publish(ch, msg)
            local px = ARGV[4]
            if heard > 0 or tonumber(ttl) < tonumber(ARGV[4]) then px = ttl end
            redis.call('SET', KEYS[1], tok, 'PX', px)
            if heard > 0 then return {2, ch, msg} end
            return 2
          end
          fast_incr = f
        end
      end
    end
  end
end
