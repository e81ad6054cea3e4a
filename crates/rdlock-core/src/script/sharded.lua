-- rdlock cluster prelude: in the cluster variant of every script that announces, it takes
-- the place of announce.lua (the variant is otherwise its base script).
-- Sharded pub/sub: the message stays in the key's shard, and the count is of the
-- connections subscribed on this node, the slot's primary, where waiters subscribe (see
-- docs/protocol.md, Cluster). A channel of a slot this node does not serve (a queue entry
-- whose inbox glue was forged) is refused by the server: it counts as heard by nobody
-- (a short claim), so the script never stops half-way through its writes.
local function publish(channel, message)
  local n = redis.pcall('SPUBLISH', channel, message)
  if type(n) == 'number' then
    return n
  end
  return 0
end

