-- rdlock shared-mode release: owner-checked delete of a key shared with clients of other
-- libraries (redis-py's Lock and the like), announced so that waiting rdlock clients try
-- again at once instead of at their next poll. Nothing is handed on: nobody queues.
-- KEYS[1] lock key, KEYS[2] wait queue (only read: a shared key has none)
-- ARGV[1] owner token, ARGV[2] channel
-- Reply: 0 not held by the caller; 1 released; 2 released, but queue-mode waiters are
-- queued on the key (some client of it does not use shared mode).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
publish(ARGV[2], 'free')
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 2
end
return 1
