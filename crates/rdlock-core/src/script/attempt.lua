-- rdlock attempt prelude, after fence.lua in the scripts that take an attempt's arguments
-- (acquire.lua, permit_acquire.lua).

-- Nil when ARGV[1] is an owner token (not empty, no ':', the queue entries' separator),
-- ARGV[3] a mode, ARGV[2], [4], [5], [6] numbers of ms (`ms_arg`) and ARGV[7] an inbox
-- (`inbox_arg`); else the first that is not, as an error text. Every attempt runs this, so
-- the valid case is one pattern over the six joined by ':' (one call of ~0.4 µs where the six
-- checks cost 1.4 µs): no field's class holds ':', so each field is exactly one argument; the
-- lengths are checked apart, and the inbox's picks the pattern, as in `inbox_arg`.
local function attempt_args()
  local token, mode, a, b, c, d, inbox = ARGV[1], ARGV[3], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local n = #inbox
  if (mode == 'try' or mode == 'first' or mode == 'retry')
    and #a <= 15 and #b <= 15 and #c <= 15 and #d <= 15 and (n == 17 or n == 21)
    and string.find(token .. ':' .. a .. ':' .. b .. ':' .. c .. ':' .. d .. ':' .. inbox, n == 17
      and '^[^:]+:[1-9]%d*:[1-9]%d*:[1-9]%d*:[1-9]%d*:i%x+$'
      or '^[^:]+:[1-9]%d*:[1-9]%d*:[1-9]%d*:[1-9]%d*:i%x+#%w%w%w$')
  then
    return nil
  end
  if token == '' or string.find(token, ':', 1, true) then return 'invalid token' end
  if mode ~= 'try' and mode ~= 'first' and mode ~= 'retry' then return 'invalid mode' end
  if not (ms_arg(2) and ms_arg(4) and ms_arg(5) and ms_arg(6)) then return 'invalid ttl' end
  return 'invalid inbox'
end
