-- Check-and-set of a whole encoded state (ORMap, or any type stored as one blob).
-- KEYS, ARGV[1..5]: see _prelude.lua. ARGV[6] expected version ('0' = absent), ARGV[7] the
-- new encoded state, ARGV[8] its epoch.
-- Returns {1 if written, 0 if the version or epoch moved (re-read, re-merge, retry), epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not is_dec(ARGV[8]) then return fail('CRDT_ARG', 'epoch must be a decimal') end
local ver = redis.call('HGET', H, '#v') or '0'
if ver ~= ARGV[6] or dec_gt(EPOCH, ARGV[8]) then return reply(0) end
if dec_gt(ARGV[8], EPOCH) then wipe(ARGV[8]) end
redis.call('HSET', H, 'b', ARGV[7], '#v', dec_add(ver, '1'))
log('o', {})
return reply(1)
