-- rdlock attempt check, before attempt.lua in the scripts that take an attempt's arguments
-- (acquire, permit_acquire): whether ARGV[1] is an owner token (not empty, no ':', the queue
-- entries' separator), ARGV[3] a mode, ARGV[2], [4], [5], [6] numbers of ms (`ms_arg`) and
-- ARGV[7] an inbox (`inbox_arg`). A value, not a function, so that acquire_fast.lua reads it
-- before any helper is made. Every attempt runs this, so it is one pattern over the six joined
-- by ':' (one call of ~0.4 µs where the six checks cost 1.4 µs): no field's class holds ':', so
-- each field is exactly one argument; the lengths are checked apart, and the inbox's picks the
-- pattern, as in `inbox_arg`.
local attempt_valid
do
  local token, a, mode, b, c, d, inbox = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local n = inbox and #inbox
  attempt_valid = (n == 17 or n == 21) and (mode == 'try' or mode == 'first' or mode == 'retry')
    and #a <= 15 and #b <= 15 and #c <= 15 and #d <= 15
    and string.find(token .. ':' .. a .. ':' .. b .. ':' .. c .. ':' .. d .. ':' .. inbox, n == 17
      and '^[^:]+:[1-9]%d*:[1-9]%d*:[1-9]%d*:[1-9]%d*:i%x+$'
      or '^[^:]+:[1-9]%d*:[1-9]%d*:[1-9]%d*:[1-9]%d*:i%x+#%w%w%w$') ~= nil
end
