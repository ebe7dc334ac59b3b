-- Apply a write to a Redis-held resource only if its fencing token is not stale.
--
-- KEYS[1]  resource hash; its field '_fence' holds the newest token seen for the resource
-- ARGV[1]  fencing token of the writer: a decimal integer >= 0 without leading zeros
-- ARGV[2..] field, value, field, value ... to set in the same step
--
-- Returns {1, token} when applied (token >= newest; equal tokens are the same holder writing
-- again), {0, newest} when refused: a newer holder has been seen and nothing was written.
-- Tokens travel and are stored as decimal strings.
--
-- Tokens are compared exactly, at any size: Redis Lua numbers are doubles, which cannot tell
-- 2^53 from 2^53 + 1 and overflow at 2^63, so tokens never go through tonumber(). Canonical
-- decimals (no sign, no leading zeros) order by length first, then byte by byte.
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
redis.call('HSET', KEYS[1], '_fence', token)
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
return {1, token}
