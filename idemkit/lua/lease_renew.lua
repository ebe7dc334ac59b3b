-- Extend a live lease held with the given fencing token.
--
-- KEYS[1]  record hash (see lease_claim.lua)
-- ARGV[1]  fencing token of the holder
-- ARGV[2]  new lease length in ms, counted from now
--
-- Returns 1 when renewed, 0 when the lease is no longer held with this token.
local rec = KEYS[1]
local h = redis.call('HMGET', rec, 's', 't')
if h[1] ~= 'p' or h[2] ~= ARGV[1] then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_ms = tonumber(ARGV[2])
redis.call('HSET', rec, 'e', string.format('%d', now_ms + lease_ms))
-- A handler may outlive the record's retention: never let the record expire under a live lease.
if redis.call('PTTL', rec) < lease_ms then
  redis.call('PEXPIRE', rec, lease_ms * 2)
end
return 1
