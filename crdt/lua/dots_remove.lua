-- Remove an element from an ORSet: drop the dots held here for it. Nothing is kept (no
-- tombstone): the context still remembers the dots, so they never come back.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] payload (msgpack element)
-- Returns {number of dots removed (0 = the element was absent), epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
local dots = split(redis.call('HGET', H, 'e:' .. ARGV[7]))
local entry = {}
for _, dot in ipairs(dots) do
  drop_dot(dot, ARGV[7])
  entry[#entry + 1] = '-' .. dot
  entry[#entry + 1] = ''
end
if #dots > 0 then log('d', entry) end
return reply(#dots)
