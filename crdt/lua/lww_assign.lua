-- Write a value with an HLC taken from the server clock (TIME), always past the stored one,
-- so writers whose own clocks are skewed still order correctly within one region.
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] region id, ARGV[5] value
-- Returns: {wall_ms, logical} of the write
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', h, 'w', 'l')
local w, l = now, 0
if cur[1] and tonumber(cur[1]) >= now then
  w, l = tonumber(cur[1]), tonumber(cur[2]) + 1
end
redis.call('HSET', h, 'w', string.format('%d', w), 'l', string.format('%d', l),
  'r', ARGV[4], 'v', ARGV[5])
log_change()
return {string.format('%d', w), string.format('%d', l)}
