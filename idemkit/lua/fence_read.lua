-- Read a Redis-held resource through its fence, registering the reader's token.
--
-- A read-modify-write is only safe if the read is fenced too: once a newer holder has read,
-- an older holder's write based on its own (older) read is refused.
--
-- KEYS[1]  resource hash; its field '_fence' holds the newest token seen for the resource
-- ARGV[1]  fencing token of the reader: a decimal integer >= 0 without leading zeros
--
-- Returns {1, token, field, value, ...} (without '_fence') when the token is not stale,
-- {0, newest} when a newer holder has been seen. Tokens are decimal strings, compared
-- exactly (see _fence_tokens.lua: never through Lua's doubles).
--!include _fence_tokens

local token = ARGV[1]
local newest, refusal = fence_tokens(KEYS[1], token)
if refusal then
  return refusal
end
if older(token, newest) then
  return {0, newest}
end
if older(newest, token) then
  redis.call('HSET', KEYS[1], '_fence', token)
end
local out = {1, token}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= '_fence' then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
