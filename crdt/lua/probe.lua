-- An object's head, and which of the given dots are live in it; writes nothing.
-- KEYS[1] data HASH; ARGV the dots ('<counter>|<replica>'), possibly none
-- Returns {type tag or false, epoch or false, deadline or false, {1 or 0 per dot}}
local head = redis.call('HMGET', KEYS[1], '#t', '#E', '#X')
local live = {}
for i = 1, #ARGV do live[i] = redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[i]) end
return {head[1], head[2], head[3], live}
