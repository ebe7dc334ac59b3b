-- Check-and-set of a whole encoded state (ORMap, or any type stored as one blob).
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] expected version ('0' = absent), ARGV[8] the
-- new encoded state, ARGV[9] its epoch.
-- Returns {1 if written, 0 if the version or epoch moved (re-read, re-merge, retry), epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not is_dec(ARGV[9]) then return fail('CRDT_ARG', 'epoch must be a decimal') end
local ver = redis.call('HGET', H, '#v') or '0'
if ver ~= ARGV[7] or dec_gt(EPOCH, ARGV[9]) then return reply(0) end
if dec_gt(ARGV[9], EPOCH) then wipe(ARGV[9]) end
redis.call('HSET', H, 'b', ARGV[8], '#v', dec_add(ver, '1'))
log('o', {})
return reply(1)
