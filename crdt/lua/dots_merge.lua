-- Causal join of an ORSet / MVRegister state or delta into the stored one (see _dots.lua).
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen,
-- ARGV[4] n = number of version-vector entries, then n pairs replica, counter,
-- then m = number of cloud dots, then m dots, then pairs dot, payload (the remote entries)
-- Cost: O(delta) when the remote context is dots only (every delta); a remote version
-- vector (full states) makes it scan the stored dots once.
-- Returns: 1 if the stored state changed, else 0
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local i = 4
local nvv = tonumber(ARGV[i]); i = i + 1
local rvv = {}
for _ = 1, nvv do rvv[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end
local ncloud = tonumber(ARGV[i]); i = i + 1
local rcloud = {}
for _ = 1, ncloud do rcloud[ARGV[i]] = true; i = i + 1 end
local rentries = {}
while i <= #ARGV do rentries[ARGV[i]] = ARGV[i + 1]; i = i + 2 end

local function remote_has(dot)
  if rcloud[dot] then return true end
  local c, r = parse_dot(dot)
  return rvv[r] ~= nil and c <= rvv[r]
end

local changed = 0
-- 1. Drop stored dots the remote has seen but no longer holds (it removed them).
if nvv > 0 then
  local all = redis.call('HGETALL', h)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 2) == 'd:' then
      local dot = string.sub(all[j], 3)
      if remote_has(dot) and not rentries[dot] then drop_dot(h, dot, all[j + 1]); changed = 1 end
    end
  end
else
  for dot in pairs(rcloud) do
    if not rentries[dot] then
      local payload = redis.call('HGET', h, 'd:' .. dot)
      if payload then drop_dot(h, dot, payload); changed = 1 end
    end
  end
end
-- 2. Add remote dots this side never saw (before the contexts are joined).
for dot, payload in pairs(rentries) do
  if not local_has(h, dot) then add_dot(h, dot, payload); changed = 1 end
end
-- 3. Join the contexts last: joined earlier, unseen remote dots would look seen-and-removed.
local touched = {}
for r, n in pairs(rvv) do
  local cur = tonumber(redis.call('HGET', h, 'v:' .. r) or '0')
  if n > cur then
    redis.call('HSET', h, 'v:' .. r, string.format('%d', n)); touched[r] = true; changed = 1
  end
end
for dot in pairs(rcloud) do
  if not local_has(h, dot) then
    local c, r = parse_dot(dot)
    local cur = redis.call('HGET', h, 'c:' .. r)
    redis.call('HSET', h, 'c:' .. r, cur and (cur .. ',' .. c) or string.format('%d', c))
    touched[r] = true; changed = 1
  end
end
for r in pairs(touched) do compact(h, r) end
if changed == 1 then log_change() end
return changed
