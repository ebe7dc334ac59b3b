-- Store the final result of a lease holder, if its fencing token is still the newest.
--
-- KEYS[1]  record hash (see lease_claim.lua)
-- ARGV[1]  fencing token of the holder
-- ARGV[2]  result bytes (msgpack, see idemkit/codec.py)
-- ARGV[3]  retention of the completed record in ms
--
-- Returns 1 when stored, 0 when a newer token was granted or the record is gone: the holder
-- was fenced out and must not assume its result is the stored one.
local rec = KEYS[1]
local h = redis.call('HMGET', rec, 's', 't')
if h[1] ~= 'p' or h[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', rec, 's', 'd', 'r', ARGV[2], 'e', '0')
redis.call('PEXPIRE', rec, tonumber(ARGV[3]))
return 1
