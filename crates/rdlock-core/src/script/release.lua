-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl:inbox"),
-- ARGV[3] fence counter ttl ms, ARGV[4] claim ms
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter, announced on its inbox as "token:fence".
if #ARGV ~= 4 then return fail('release takes 4 arguments') end
if not (ms_arg(3) and ms_arg(4)) then return fail('invalid ttl') end
return release_one(0, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
