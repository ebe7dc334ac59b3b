-- Store the final result of a lease holder, if its fencing token is still the newest.
--
-- KEYS[1]  record hash (see lease_claim.lua)
-- ARGV[1]  fencing token of the holder
-- ARGV[2]  result bytes (msgpack, see idemkit/codec.py)
-- ARGV[3]  retention of the completed record in ms
--
-- Returns
--    1  stored (or already stored by this holder: a completion retried after a lost reply)
--    0  fenced: a newer token was granted; the holder outlived its lease
--   -1  lost: the record is gone or older than this grant (Redis restarted without the
--       write, failed over, or evicted it); nothing newer holds it, but the grant is gone
local rec = KEYS[1]
local h = redis.call('HMGET', rec, 's', 't')
if h[2] == ARGV[1] then
  if h[1] == 'p' then
    redis.call('HSET', rec, 's', 'd', 'r', ARGV[2], 'e', '0')
    redis.call('PEXPIRE', rec, tonumber(ARGV[3]))
    return 1
  end
  if h[1] == 'd' then
    return 1
  end
  return 0
end
-- Tokens are decimal integers below 2^53 (see lease_claim.lua), exact as Lua numbers.
if h[2] == false or tonumber(h[2]) < tonumber(ARGV[1]) then
  return -1
end
return 0
