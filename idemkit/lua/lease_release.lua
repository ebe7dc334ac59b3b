-- Give a lease back without a result, so the next claim may run at once.
--
-- KEYS[1]  record hash (see lease_claim.lua)
-- KEYS[2]  optional wake-up list under the same hash tag (locks, semaphores): on release one
--          element is pushed, so one waiter blocked in BLPOP takes over in one round trip.
-- ARGV[1]  fencing token of the holder
-- ARGV[2]  with KEYS[2]: how long an unclaimed wake-up stays, in ms
-- ARGV[3]  with KEYS[2]: most wake-ups kept (the number of slots): more would only wake
--          waiters that find nothing free.
--
-- Returns 1 when released, 0 when the lease was no longer held with this token. The record
-- (and so its token counter) stays until its retention ends, which keeps tokens increasing.
local rec = KEYS[1]
local h = redis.call('HMGET', rec, 's', 't')
if h[1] ~= 'p' or h[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', rec, 's', 'r', 'e', '0')
if KEYS[2] then
  -- A list, not PUBLISH: a wake-up sent between a waiter's busy claim and its BLPOP is kept.
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
end
return 1
