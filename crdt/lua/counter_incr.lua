-- Add to this region's own count (GCounter, PNCounter), in exact decimal arithmetic.
-- KEYS, ARGV[1..5]: see _prelude.lua. ARGV[6] region id, ARGV[7] fresh incarnation token
-- (used only if a new incarnation is due), ARGV[8] field prefix ('p:' or 'n:'),
-- ARGV[9] amount (canonical non-negative decimal).
-- Returns {the incarnation's new count (decimal), epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not is_dec(ARGV[9]) then return fail('CRDT_ARG', 'amount must be a canonical decimal') end
local field = ARGV[8] .. incarnation(ARGV[6], ARGV[7])
local new = dec_add(redis.call('HGET', H, field) or '0', ARGV[9])
if ARGV[9] ~= '0' then
  redis.call('HSET', H, field, new)
  log('f', {'f:' .. field, new})
end
return reply(new)
