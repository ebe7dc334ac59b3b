-- Remove an element from an ORSet: drop the dots this region holds for it. Nothing is kept
-- (no tombstone): the context still remembers the dots, so they never come back.
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] payload (msgpack element)
-- Returns: the number of dots removed (0 = the element was absent)
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local dots = split(redis.call('HGET', h, 'e:' .. ARGV[4]))
for _, dot in ipairs(dots) do drop_dot(h, dot, ARGV[4]) end
if #dots > 0 then log_change() end
return #dots
