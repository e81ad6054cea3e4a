-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl"), ARGV[3] channel,
-- ARGV[4] fence counter ttl ms
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter, announced on the channel as "token:fence".
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('LREM', KEYS[3], 0, ARGV[2])
  return 0
end
while true do
  local nxt = redis.call('LPOP', KEYS[3])
  if not nxt then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local sep = string.find(nxt, ':', 1, true)
  if sep then
    local tok, ttl = string.sub(nxt, 1, sep - 1), string.sub(nxt, sep + 1)
    if tok ~= ARGV[1] then
      -- The hand-off: the waiter owns the lock before anyone else can try for it.
      redis.call('SET', KEYS[1], tok, 'PX', ttl)
      redis.call('PUBLISH', ARGV[3], tok .. ':' .. string.format('%d', bump(KEYS[2], ARGV[4])))
      return 2
    end
  end
end
