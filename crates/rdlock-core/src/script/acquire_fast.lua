-- rdlock acquire's uncontended grant, before fence.lua and attempt.lua in acquire's script:
-- every `local function` of those preludes is a closure made again on each call, most of what
-- a grant's script cost beyond its commands. A plain lock (no KEYS[4]) whose arguments are an
-- attempt's (`attempt_valid`) runs here the commands the checked acquire below runs first, in
-- its order: SET NX GET; on a key it set, the queue's head; on an empty queue, the counter's
-- INCR. A fence INCR made without seeding or range trouble is the grant. Anything else goes on
-- to the checked acquire with what was read and written here (`fast`, `fast_old`,
-- `fast_head`, `fast_incr`), which it uses in place of sending those commands again.
local fast, fast_old, fast_head, fast_incr = false, nil, nil, nil
if attempt_valid and not KEYS[4] and #ARGV == 7 then
  fast = true
  fast_old = redis.pcall('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
  if fast_old == false then
    fast_head = redis.pcall('LINDEX', KEYS[3], '0')
    if fast_head == false then
      fast_incr = redis.pcall('INCR', KEYS[2])
      if type(fast_incr) == 'number' and fast_incr > 1 and fast_incr <= 9007199254740990 then
        return {1, fast_incr}
      end
    end
  end
end
