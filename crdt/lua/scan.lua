-- One bounded chunk of an object's data or context HASH, with the object's head, so a
-- chunked copy notices when the object changes epoch under it; writes nothing.
-- KEYS[1] data HASH, KEYS[2] the HASH to scan (data or context)
-- ARGV[1] HSCAN cursor, ARGV[2] COUNT, ARGV[3] MATCH pattern
-- Returns {type tag or false, epoch or false, deadline or false, next cursor, fields (flat)}
local head = redis.call('HMGET', KEYS[1], '#t', '#E', '#X')
local page = redis.call('HSCAN', KEYS[2], ARGV[1], 'MATCH', ARGV[3], 'COUNT', ARGV[2])
return {head[1], head[2], head[3], page[1], page[2]}
