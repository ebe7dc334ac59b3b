-- Field-wise max join for GCounter, PNCounter (counts), GSet and TwoPSet (flags).
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7..] field, value pairs; values are canonical
-- decimals (counts) or '1' (membership flags).
-- Returns {number of fields that grew, epoch, note}; logs the grown fields.
local ok = open()
if type(ok) == 'table' then return ok end
if not ok then return reply(0) end
local grown = {}
for i = 7, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if string.sub(field, 1, 1) == '#' or not is_dec(value) then
    return fail('CRDT_ARG', 'bad field ' .. field .. ' or value')
  end
  local current = redis.call('HGET', H, field)
  if (not current) or dec_gt(value, current) then
    redis.call('HSET', H, field, value)
    grown[#grown + 1] = 'f:' .. field
    grown[#grown + 1] = value
  end
end
if #grown > 0 then log('f', grown) end
return reply(#grown / 2)
