-- rdlock cluster prelude, prepended to the cluster variant of every script that announces:
-- the variant is its base script with each PUBLISH call made a call of `spublish`.
-- Sharded pub/sub: the message stays in the key's shard, and the count is of the
-- connections subscribed on this node, the slot's primary, where waiters subscribe (see
-- docs/protocol.md, Cluster). A channel of a slot this node does not serve (a queue entry
-- whose inbox glue was forged) is refused by the server: it counts as heard by nobody
-- (a short claim), so the script never stops half-way through its writes.
local function spublish(channel, message)
  local n = redis.pcall('SPUBLISH', channel, message)
  if type(n) == 'number' then
    return n
  end
  return 0
end

