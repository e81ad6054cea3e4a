-- rdlock announcement prelude, first in every script that announces (a cluster variant has
-- sharded.lua in its place). PUBLISH answers how many connections received the message. A
-- PUBLISH the server refuses (an ACL user without the channel) counts as heard by nobody
-- (a short claim, found by the waiter's poll), so the script never stops half-way through
-- its writes.
local function publish(channel, message)
  local n = redis.pcall('PUBLISH', channel, message)
  if type(n) == 'number' then
    return n
  end
  return 0
end
