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
-- exactly (see fence_write.lua: never through Lua's doubles).
local function canonical(s)
  return s == '0' or string.find(s, '^[1-9]%d*$') ~= nil
end

local function older(a, b)  -- a < b, both canonical
  if #a ~= #b then return #a < #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

local token = ARGV[1]
if not canonical(token) then
  return redis.error_reply('ERR fencing token must be a decimal integer >= 0 without leading zeros')
end
local newest = redis.call('HGET', KEYS[1], '_fence') or '0'
if not canonical(newest) then
  return redis.error_reply('ERR ' .. KEYS[1] .. ' holds a _fence that is not a decimal integer')
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
