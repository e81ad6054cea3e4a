-- rdlock confirm: the confirmation of heard hand-offs, and the re-check of waiters whose
-- subscription became active after their attempt was sent, for one or many locks in one call.
-- KEYS[3i-2] lock key, KEYS[3i-1] its fence counter, KEYS[3i] its wait queue; ARGV[i] owner
-- token, ARGV[n+i] ttl ms, ARGV[2n+i] the caller's queue entry (`token:ttl:inbox`, as its
-- attempts push it).
-- Reply: an array with, per lock:
--   its fence when the key holds its token (the key then extended to the ttl: the same
--   owner-checked expiry as acquire's retry that finds the key its own, and the same fence,
--   the counter, which no grant moves while the key is the caller's);
--   minus the counter when the key holds another token, the counter is a fence above 0 and
--   the caller's entry is queued: what acquire's retry reports there (a hand-off announced
--   later with a higher fence ran after this call), with the caller's place kept;
--   0 for anything else (the key absent, no fence, the entry gone: a claim that lapsed and
--   passed on): the caller then attempts as usual, which tells (and queues it again).
-- Nothing but the owner's PEXPIRE is written.
local n = #KEYS / 3
if n < 1 or n ~= math.floor(n) or #ARGV ~= 3 * n then
  return redis.error_reply('RDLOCK confirm takes 3 keys and a token, a ttl and an entry per lock')
end
for i = n + 1, 2 * n do
  if not ms_arg(i) then return redis.error_reply('RDLOCK invalid ttl') end
end
local out = {}
for i = 1, n do
  local k = 3 * i - 2
  local got = redis.pcall('MGET', KEYS[k], KEYS[k + 1])
  local f = not got.err and got[1] and got[2] and fence_of(got[2])
  if not f or f == 0 then
    out[i] = 0
  elseif got[1] == ARGV[i] then
    redis.call('PEXPIRE', KEYS[k], ARGV[n + i])
    out[i] = f
  elseif type(redis.pcall('LPOS', KEYS[k + 2], ARGV[2 * n + i])) == 'number' then
    out[i] = -f
  else
    out[i] = 0
  end
end
return out
