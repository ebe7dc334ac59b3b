-- Add an element to an ORSet (mode 'add') or assign an MVRegister (mode 'assign') with a
-- fresh dot of this region's incarnation; the new dot replaces the element's dots (add) or
-- every dot (assign) held here.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] region id, ARGV[8] fresh incarnation token,
-- ARGV[9] payload (msgpack), ARGV[10] mode: 'add' | 'assign'
-- Returns {the new dot '<counter>|<replica>', epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
local id = incarnation(ARGV[7], ARGV[8])
local payload = ARGV[9]
local old = {}
if ARGV[10] == 'assign' then
  -- A register holds only its concurrent values: a handful of fields.
  local all = redis.call('HGETALL', H)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 2) == 'd:' then old[#old + 1] = {string.sub(all[j], 3), all[j + 1]} end
  end
else
  for _, dot in ipairs(split(redis.call('HGET', H, 'e:' .. payload))) do
    old[#old + 1] = {dot, payload}
  end
end
local entry = {}
for _, pair in ipairs(old) do
  drop_dot(pair[1], pair[2])
  entry[#entry + 1] = '-' .. pair[1]
  entry[#entry + 1] = ''
end
local n = tonumber(redis.call('HGET', C, 'v:' .. id) or '0') + 1
local dot = string.format('%d', n) .. '|' .. id
mark_seen(dot)
add_dot(dot, payload)
entry[#entry + 1] = '+' .. dot
entry[#entry + 1] = payload
log('d', entry)
return reply(dot)
