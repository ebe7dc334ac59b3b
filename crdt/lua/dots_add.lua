-- Add an element to an ORSet (mode "add") or assign an MVRegister (mode "assign") with a
-- fresh dot of this region; the new dot replaces the dots of that element (add) or every
-- dot (assign) this region holds.
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] region id,
-- ARGV[5] payload (msgpack), ARGV[6] mode: "add" | "assign"
-- Returns: the new dot's counter
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local region, payload = ARGV[4], ARGV[5]
local old = {}
if ARGV[6] == 'assign' then
  local all = redis.call('HGETALL', h)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 2) == 'd:' then old[#old + 1] = {string.sub(all[j], 3), all[j + 1]} end
  end
else
  for _, dot in ipairs(split(redis.call('HGET', h, 'e:' .. payload))) do
    old[#old + 1] = {dot, payload}
  end
end
for _, pair in ipairs(old) do drop_dot(h, pair[1], pair[2]) end
compact(h, region)
local n = redis.call('HINCRBY', h, 'v:' .. region, 1)
add_dot(h, string.format('%d', n) .. '|' .. region, payload)
log_change()
return n
