-- Apply a write to a Redis-held resource only if its fencing token is not stale.
--
-- KEYS[1]  resource hash; its field '_fence' holds the newest token seen for the resource
-- ARGV[1]  fencing token of the writer (integer)
-- ARGV[2..] field, value, field, value ... to set in the same step
--
-- Returns {1, token} when applied (token >= newest; equal tokens are the same holder writing
-- again), {0, newest} when refused: a newer holder has been seen and nothing was written.
local token = tonumber(ARGV[1])
local newest = tonumber(redis.call('HGET', KEYS[1], '_fence')) or 0
if token < newest then
  return {0, newest}
end
-- %d, not tostring: Lua's default number format would round microsecond tokens.
redis.call('HSET', KEYS[1], '_fence', string.format('%d', token))
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
return {1, token}
