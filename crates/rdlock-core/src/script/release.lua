-- rdlock release: owner-checked release that hands the lock to the next queued waiter.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] wait queue
-- ARGV[1] owner token, ARGV[2] the caller's own queue entry ("token:ttl:inbox"),
-- ARGV[3] fence counter ttl ms, ARGV[4] claim ms, and optionally ARGV[5] the caller's queue
-- ttl ms: the caller held the lock and the server's SET takes IFEQ (`release_folded`)
-- Reply: 0 not held by the caller (its queue entry, if any, is removed); 1 released, nobody
-- waiting; 2 handed to the next waiter, announced on its inbox as "token:fence"; {2, channel,
-- "token:fence"} the same, when a connection heard the announcement: the releaser's client
-- may be the waiter's, and reads it here without waiting for the message.
if #ARGV ~= 4 and #ARGV ~= 5 then return fail('release takes 4 or 5 arguments') end
if not (ms_arg(3) and ms_arg(4) and (#ARGV == 4 or ms_arg(5))) then return fail('invalid ttl') end
local r, ch, msg = release_one(0, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], fast_got, fast_head, fast_incr)
if ch then return {r, ch, msg} end
return r
