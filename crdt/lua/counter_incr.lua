-- Add to this region's own counter field, in exact decimal arithmetic.
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] field ("r" or "p:r"/"n:r"),
-- ARGV[5] amount (canonical non-negative decimal)
-- Returns: the field's new value (decimal string)
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local new = dec_add(redis.call('HGET', h, ARGV[4]) or '0', ARGV[5])
redis.call('HSET', h, ARGV[4], new)
if ARGV[5] ~= '0' then log_change() end
return new
