-- Read one object whole (what load() shows); writes nothing.
-- KEYS[1] data HASH, KEYS[2] context HASH, KEYS[3] shard index HASH; ARGV[1] object name.
-- Returns {server now ms, known epoch or false, data fields (flat), context fields (flat)}
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local known = redis.call('HGET', KEYS[3], ARGV[1])
return {now, known, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
