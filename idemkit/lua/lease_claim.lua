-- Claim a fenced lease on a record, or report what holds it.
--
-- KEYS[1]  record hash (fields: s state p|d|r, t token, f fingerprint, e lease expiry ms, r result)
-- ARGV[1]  request fingerprint ('' matches anything: used by locks)
-- ARGV[2]  lease length in ms (> 0)
-- ARGV[3]  record retention in ms (>= lease)
-- ARGV[4]  '1' to floor new tokens at the server clock in microseconds, so tokens keep rising
--          even if the record was lost (eviction, failover); '0' for plain +1 increments.
--          Microseconds since 1970 stay below 2^53 until the year 2255, so Lua doubles are exact.
--
-- Returns one of
--   {0, token}                 claimed: the caller holds the lease with this fencing token
--   {1, token, result}         completed earlier: replay result
--   {2, token, remaining_ms}   another holder's lease is live
--   {3}                        same key, different fingerprint
local rec = KEYS[1]
local fp = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])

local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)

local h = redis.call('HMGET', rec, 's', 't', 'f', 'e', 'r')
local state, token = h[1], tonumber(h[2]) or 0
if state == 'd' or state == 'p' then
  if fp ~= '' and h[3] ~= fp then
    return {3}
  end
  if state == 'd' then
    return {1, token, h[5]}
  end
  local remaining = (tonumber(h[4]) or 0) - now_ms
  if remaining > 0 then
    return {2, token, remaining}
  end
end

token = token + 1
if ARGV[4] == '1' and token < now_us then
  token = now_us
end
-- %d, not tostring: Lua's default number format (%.14g) would round large tokens.
redis.call('HSET', rec, 's', 'p', 't', string.format('%d', token), 'f', fp,
           'e', string.format('%d', now_ms + lease_ms))
redis.call('HDEL', rec, 'r')
redis.call('PEXPIRE', rec, ttl_ms)
return {0, token}
