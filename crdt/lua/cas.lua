-- Check-and-set of a whole encoded state (ORMap, or any type through update()).
-- KEYS[1] object HASH (#t, b = envelope bytes, ver = decimal version), KEYS[2] optional stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] expected version
-- ("0" = absent), ARGV[5] new encoded state
-- Returns: 1 if written, 0 if the version moved (the caller re-reads, re-merges, retries)
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local ver = redis.call('HGET', h, 'ver') or '0'
if ver ~= ARGV[4] then return 0 end
redis.call('HSET', h, 'b', ARGV[5], 'ver', dec_add(ver, '1'))
log_change()
return 1
