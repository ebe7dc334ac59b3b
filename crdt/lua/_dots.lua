-- Dot-store helpers for ORSet / MVRegister, prepended after the prelude.
-- Layout of the object HASH:
--   v:<replica>  version vector entry (dots 1..n of replica seen)
--   c:<replica>  out-of-order dots of replica beyond v:, comma-separated counters
--   d:<dot>      payload (msgpack element or value) of a live dot; <dot> = "<counter>|<replica>"
--   e:<payload>  comma-separated live dots carrying that payload (index for removes)
-- Dot counters are small (one per write of a region), so tonumber is exact for them.

local function parse_dot(dot)
  local sep = string.find(dot, '|', 1, true)
  return tonumber(string.sub(dot, 1, sep - 1)), string.sub(dot, sep + 1)
end

local function split(list)
  local out = {}
  if list then for item in string.gmatch(list, '[^,]+') do out[#out + 1] = item end end
  return out
end

local function cloud_has(h, counter, replica)
  for _, c in ipairs(split(redis.call('HGET', h, 'c:' .. replica))) do
    if tonumber(c) == counter then return true end
  end
  return false
end

local function local_has(h, dot)
  local c, r = parse_dot(dot)
  local v = tonumber(redis.call('HGET', h, 'v:' .. r) or '0')
  return c <= v or cloud_has(h, c, r)
end

local function add_dot(h, dot, payload)
  redis.call('HSET', h, 'd:' .. dot, payload)
  local idx = redis.call('HGET', h, 'e:' .. payload)
  redis.call('HSET', h, 'e:' .. payload, idx and (idx .. ',' .. dot) or dot)
end

local function drop_dot(h, dot, payload)
  redis.call('HDEL', h, 'd:' .. dot)
  local keep = {}
  for _, d in ipairs(split(redis.call('HGET', h, 'e:' .. payload))) do
    if d ~= dot then keep[#keep + 1] = d end
  end
  if #keep == 0 then redis.call('HDEL', h, 'e:' .. payload)
  else redis.call('HSET', h, 'e:' .. payload, table.concat(keep, ',')) end
end

-- Fold cloud dots of replica r that became contiguous with (or covered by) v:r.
local function compact(h, r)
  local v = tonumber(redis.call('HGET', h, 'v:' .. r) or '0')
  local rest = {}
  local counters = split(redis.call('HGET', h, 'c:' .. r))
  table.sort(counters, function(a, b) return tonumber(a) < tonumber(b) end)
  for _, c in ipairs(counters) do
    local n = tonumber(c)
    if n == v + 1 then v = n elseif n > v then rest[#rest + 1] = c end
  end
  if v > 0 then redis.call('HSET', h, 'v:' .. r, string.format('%d', v)) end
  if #rest == 0 then redis.call('HDEL', h, 'c:' .. r)
  else redis.call('HSET', h, 'c:' .. r, table.concat(rest, ',')) end
end
