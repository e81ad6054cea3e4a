-- rdlock attempt prelude, after fence.lua and attempt_valid.lua in the scripts that take an
-- attempt's arguments (acquire.lua, permit_acquire.lua).

-- Nil when the arguments are an attempt's (`attempt_valid`); else the first that is not, as
-- an error text: only then are the checks made one by one, to name it.
local function attempt_args()
  if attempt_valid then
    return nil
  end
  local token, mode = ARGV[1], ARGV[3]
  if token == '' or string.find(token, ':', 1, true) then return 'invalid token' end
  if mode ~= 'try' and mode ~= 'first' and mode ~= 'retry' then return 'invalid mode' end
  if not (ms_arg(2) and ms_arg(4) and ms_arg(5) and ms_arg(6)) then return 'invalid ttl' end
  return 'invalid inbox'
end
