-- Claim a fenced lease on a record, or report what holds it.
--
-- KEYS[1]  record hash (fields: s state p|d|r, t token, f fingerprint, e lease expiry ms, r result)
-- KEYS[2..n] optional, owner mode only: more records under the same hash tag (the slots of a
--          semaphore); the first one that is free or whose lease lapsed is claimed.
-- ARGV[1]  request fingerprint ('' matches anything); in owner mode the id of one acquisition
-- ARGV[2]  lease length in ms (> 0)
-- ARGV[3]  record retention in ms (>= lease)
-- ARGV[4]  '1' to floor new tokens at the server clock in microseconds, so tokens keep rising
--          even if the record was lost (eviction, failover); '0' for plain +1 increments.
--          Microseconds since 1970 stay below 2^53 until the year 2255, so Lua doubles are exact.
-- ARGV[5]  optional 'o' for owner mode (locks, semaphores): a record held by the same owner id
--          returns its token again with a fresh lease, so an acquire retried after a client
--          timeout is idempotent; a live lease of another owner is busy; a lapsed, released or
--          completed record is claimed whatever its owner was. Never returns {3}.
--
-- Returns one of
--   {0, token, slot}           claimed: the caller holds the lease on KEYS[slot + 1]
--   {1, token, result}         completed earlier: replay result
--   {2, token, remaining_ms}   another holder's lease is live (owner mode: the one ending first)
--   {3}                        same key, different fingerprint
local fp = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])

local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)

local function grant(rec, token, slot)
  token = token + 1
  if ARGV[4] == '1' and token < now_us then
    token = now_us
  end
  -- %d, not tostring: Lua's default number format (%.14g) would round large tokens.
  redis.call('HSET', rec, 's', 'p', 't', string.format('%d', token), 'f', fp,
             'e', string.format('%d', now_ms + lease_ms))
  redis.call('HDEL', rec, 'r')
  redis.call('PEXPIRE', rec, ttl_ms)
  return {0, token, slot}
end

if ARGV[5] == 'o' then
  local free, free_token, busy_token, wait = nil, 0, 0, nil
  for i = 1, #KEYS do
    local h = redis.call('HMGET', KEYS[i], 's', 't', 'f', 'e')
    local token = tonumber(h[2]) or 0
    if h[1] == 'p' and h[3] == fp then
      redis.call('HSET', KEYS[i], 'e', string.format('%d', now_ms + lease_ms))
      redis.call('PEXPIRE', KEYS[i], ttl_ms)
      return {0, token, i - 1}
    end
    local remaining = (tonumber(h[4]) or 0) - now_ms
    if h[1] == 'p' and remaining > 0 then
      if wait == nil or remaining < wait then
        wait, busy_token = remaining, token
      end
    elseif free == nil then
      free, free_token = i, token
    end
  end
  if free == nil then
    return {2, busy_token, wait}
  end
  return grant(KEYS[free], free_token, free - 1)
end

local rec = KEYS[1]
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
return grant(rec, token, 0)
