-- Last-writer-wins join ordered by (HLC wall ms, HLC logical, replica id bytes), in exact
-- decimal arithmetic (walls above 2^53 ms would go backwards as Lua doubles).
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] wall ms, ARGV[8] logical, ARGV[9] replica id,
-- ARGV[10] value (canonical msgpack), ARGV[11] max drift ms (decimal).
-- Returns {1 if the incoming write won else 0, epoch, note}; errors CRDT_TSREUSE when the
-- same (HLC, replica) arrives with another value, CRDT_DRIFT when the wall lies more than
-- the max drift ahead of this server's clock, CRDT_ARG for out-of-range parts.
local ok = open()
if type(ok) == 'table' then return ok end
if not ok then return reply(0) end
local w, l, r, v = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
for _, part in ipairs({w, l}) do
  if not is_dec(part) or dec_gt(part, INT64_MAX) then
    return fail('CRDT_ARG', 'HLC parts must be decimals in [0, 2^63)')
  end
end
if dec_gt(w, dec_add(now_ms(), ARGV[11])) then
  return fail('CRDT_DRIFT', 'timestamp ' .. w .. ' ms is more than ' .. ARGV[11] ..
    ' ms ahead of this server clock')
end
local cur = redis.call('HMGET', H, 'w', 'l', 'r', 'v')
local wins = false
if not cur[1] then
  wins = true
elseif w ~= cur[1] then wins = dec_gt(w, cur[1])
elseif l ~= cur[2] then wins = dec_gt(l, cur[2])
elseif r ~= cur[3] then wins = bytes_lt(cur[3], r)
elseif v ~= cur[4] then
  return fail('CRDT_TSREUSE', 'replica ' .. r .. ' wrote two values at one HLC')
end
if wins then
  redis.call('HSET', H, 'w', w, 'l', l, 'r', r, 'v', v)
  log('l', {'w', w, 'l', l, 'r', r, 'val', v})
  return reply(1)
end
return reply(0)
