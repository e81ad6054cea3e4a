-- rdlock confirm: the confirmation of heard hand-offs, for one or many locks in one call.
-- KEYS[2i-1] lock key, KEYS[2i] its fence counter; ARGV[i] owner token, ARGV[n+i] ttl ms.
-- Reply: an array with, per lock, its fence when the key holds its token (the key then
-- extended to the ttl: the same owner-checked expiry as acquire's retry that finds the key
-- its own, and the same fence, the counter, which no grant moves while the key is the
-- caller's); 0 when the key is not the caller's, or its counter holds no fence above 0: the
-- caller then attempts as usual, which tells.
local n = #KEYS / 2
if n < 1 or n ~= math.floor(n) or #ARGV ~= 2 * n then
  return redis.error_reply('RDLOCK confirm takes 2 keys and a token and a ttl per lock')
end
for i = n + 1, 2 * n do
  if not ms_arg(i) then return redis.error_reply('RDLOCK invalid ttl') end
end
local out = {}
for i = 1, n do
  local got = redis.pcall('MGET', KEYS[2 * i - 1], KEYS[2 * i])
  local f = not got.err and got[1] == ARGV[i] and got[2] and fence_of(got[2])
  if f and f > 0 then
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[n + i])
    out[i] = f
  else
    out[i] = 0
  end
end
return out
