-- Give a lease back without a result, so the next claim may run at once.
--
-- KEYS[1]  record hash (see lease_claim.lua)
-- ARGV[1]  fencing token of the holder
--
-- Returns 1 when released, 0 when the lease was no longer held with this token. The record
-- (and so its token counter) stays until its retention ends, which keeps tokens increasing.
local rec = KEYS[1]
local h = redis.call('HMGET', rec, 's', 't')
if h[1] ~= 'p' or h[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', rec, 's', 'r', 'e', '0')
return 1
