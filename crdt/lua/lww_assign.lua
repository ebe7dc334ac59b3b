-- Write a value with an HLC taken from the server clock (TIME), always past the stored one,
-- so writers whose own clocks are skewed still order correctly within one region.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] region id, ARGV[8] fresh incarnation token,
-- ARGV[9] value (canonical msgpack), ARGV[10] max drift ms (decimal).
-- Returns {{wall_ms, logical, replica}, epoch, note}; CRDT_DRIFT when the stored timestamp
-- lies further ahead of this server's clock than the max drift (the clock jumped back).
local ok = open()
if type(ok) == 'table' then return ok end
local id = incarnation(ARGV[7], ARGV[8])
local now = now_ms()
local cur = redis.call('HMGET', H, 'w', 'l')
local w, l = now, '0'
if cur[1] and not dec_gt(now, cur[1]) then
  if dec_gt(cur[1], dec_add(now, ARGV[10])) then
    return fail('CRDT_DRIFT', 'stored timestamp ' .. cur[1] .. ' ms is more than ' .. ARGV[10] ..
      ' ms ahead of this server clock')
  end
  w, l = cur[1], dec_add(cur[2], '1')
end
redis.call('HSET', H, 'w', w, 'l', l, 'r', id, 'v', ARGV[9])
log('l', {'w', w, 'l', l, 'r', id, 'val', ARGV[9]})
return reply({w, l, id})
