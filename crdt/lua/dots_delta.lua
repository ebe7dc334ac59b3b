-- Join a dot-set delta into an ORSet / MVRegister: the delta holds live dots (with their
-- payloads) and a context given as explicit dots, never as a version vector, so the cost is
-- O(size of the delta) whatever the size of the stored set. With option 'l' (first phase of
-- a chunked join) the live dots are added without being marked seen: dots copied in hash
-- order would pile up in the cloud; the join's ctx_union brings the context in one step.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] n = number of live dots, then n pairs
-- dot, payload, then the delta's other context dots (seen there, not live there).
-- Returns {1 if the stored state changed else 0, epoch, note}; CRDT_DOTREUSE when a dot
-- arrives with another payload than the one stored for it (a replica id was reused).
local ok = open()
if type(ok) == 'table' then return ok end
if not ok then return reply(0) end
local n = tonumber(ARGV[7])
local live, rest = {}, {}
local i = 8
for _ = 1, n do
  if not valid_dot(ARGV[i]) then return fail('CRDT_ARG', 'bad dot ' .. ARGV[i]) end
  live[#live + 1] = {ARGV[i], ARGV[i + 1]}
  i = i + 2
end
local holds = {}
for _, pair in ipairs(live) do holds[pair[1]] = true end
while i <= #ARGV do
  if not valid_dot(ARGV[i]) then return fail('CRDT_ARG', 'bad dot ' .. ARGV[i]) end
  if not holds[ARGV[i]] then rest[#rest + 1] = ARGV[i] end
  i = i + 1
end
local changed = false
-- 1. Drop stored dots the delta has seen but does not hold (removed there).
for _, dot in ipairs(rest) do
  local payload = redis.call('HGET', H, 'd:' .. dot)
  if payload then drop_dot(dot, payload); changed = true end
end
-- 2. Add delta dots never seen here; a dot stored here must carry the same payload.
for _, pair in ipairs(live) do
  local stored = redis.call('HGET', H, 'd:' .. pair[1])
  if stored then
    if stored ~= pair[2] then
      return fail('CRDT_DOTREUSE', 'dot ' .. pair[1] .. ' names two different payloads: ' ..
        'a replica id was reused after losing state')
    end
  elseif not seen(pair[1]) then
    add_dot(pair[1], pair[2]); changed = true
  end
end
-- 3. Join the contexts last: joined earlier, unseen delta dots would look seen-and-removed.
if not string.find(OPTIONS, 'l', 1, true) then
  for _, pair in ipairs(live) do if mark_seen(pair[1]) then changed = true end end
end
for _, dot in ipairs(rest) do if mark_seen(dot) then changed = true end end
if changed then
  local entry = {}
  for _, pair in ipairs(live) do entry[#entry + 1] = '+' .. pair[1]; entry[#entry + 1] = pair[2] end
  for _, dot in ipairs(rest) do entry[#entry + 1] = '-' .. dot; entry[#entry + 1] = '' end
  log('d', entry)
end
return reply(changed and 1 or 0)
