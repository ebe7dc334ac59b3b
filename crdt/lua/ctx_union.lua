-- Add a piece of another replica's causal context to the stored one, without dropping any
-- live dot: the last step of a chunked full-state join, after its live dots were added and
-- the dots it removed were dropped (see crdt/object_merge.py). Logged as kind 'u': a
-- context growth cannot be replayed as a delta, so peers compare the whole object instead.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] n = version-vector entries, then n pairs
-- replica, counter; then single dots.
-- Returns {1 if the context grew else 0, epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not ok then return reply(0) end
local n = tonumber(ARGV[7])
local grew = false
local i = 8
for _ = 1, n do
  local r, count = ARGV[i], ARGV[i + 1]
  if not valid_dot(count .. '|' .. r) then return fail('CRDT_ARG', 'bad context entry') end
  local v = tonumber(redis.call('HGET', C, 'v:' .. r) or '0')
  if tonumber(count) > v then
    raise_to(r, tonumber(count))
    grew = true
  end
  i = i + 2
end
while i <= #ARGV do
  if not valid_dot(ARGV[i]) then return fail('CRDT_ARG', 'bad dot ' .. ARGV[i]) end
  if mark_seen(ARGV[i]) then grew = true end
  i = i + 1
end
if grew then log('u', {}) end
return reply(grew and 1 or 0)
