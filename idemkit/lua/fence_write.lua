-- Apply a write to a Redis-held resource only if its fencing token is not stale.
--
-- KEYS[1]  resource hash; its field '_fence' holds the newest token seen for the resource
-- ARGV[1]  fencing token of the writer: a decimal integer >= 0 without leading zeros
-- ARGV[2..] field, value, field, value ... to set in the same step
--
-- Returns {1, token} when applied (token >= newest; equal tokens are the same holder writing
-- again), {0, newest} when refused: a newer holder has been seen and nothing was written.
-- Tokens travel and are stored as decimal strings.
--!include _fence_tokens

local token = ARGV[1]
local newest, refusal = fence_tokens(KEYS[1], token)
if refusal then
  return refusal
end
if older(token, newest) then
  return {0, newest}
end
redis.call('HSET', KEYS[1], '_fence', token)
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
return {1, token}
