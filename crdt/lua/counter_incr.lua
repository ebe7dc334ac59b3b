-- Add to this region's own count (GCounter, PNCounter), in exact decimal arithmetic.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] region id, ARGV[8] fresh incarnation token
-- (used only if a new incarnation is due), ARGV[9] field prefix ('p:' or 'n:'),
-- ARGV[10] amount (canonical non-negative decimal).
-- Returns {the incarnation's new count (decimal), epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not is_dec(ARGV[10]) then return fail('CRDT_ARG', 'amount must be a canonical decimal') end
local field = ARGV[9] .. incarnation(ARGV[7], ARGV[8])
local new = dec_add(redis.call('HGET', H, field) or '0', ARGV[10])
if ARGV[10] ~= '0' then
  redis.call('HSET', H, field, new)
  log('f', {'f:' .. field, new})
end
return reply(new)
