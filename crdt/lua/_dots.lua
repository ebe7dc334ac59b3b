-- Dot-store helpers for ORSet / MVRegister, prepended after the prelude.
-- Data HASH: d:<dot> -> payload (msgpack element or value) of a live dot;
--            e:<payload> -> the live dots carrying that payload, comma-separated (for removes)
-- Context HASH: v:<replica> -> n (dots 1..n of replica seen);
--               c:<dot> -> '1' for a dot seen out of order (beyond v:<replica>)
-- <dot> is '<counter>|<replica>'. Counters grow by one per write of one incarnation, so they
-- stay far below 2^53 and tonumber is exact for them. Every context check is O(1): no
-- script ever scans the set or the context.

local function parse_dot(dot)
  local sep = string.find(dot, '|', 1, true)
  return tonumber(string.sub(dot, 1, sep - 1)), string.sub(dot, sep + 1)
end

local function valid_dot(dot)
  local counter = string.match(dot, '^([1-9]%d*)|[%w_.%-]+$')
  return counter ~= nil and #counter <= 15
end

local function split(list)
  local out = {}
  if list then for item in string.gmatch(list, '[^,]+') do out[#out + 1] = item end end
  return out
end

local function seen(dot)
  local c, r = parse_dot(dot)
  if c <= tonumber(redis.call('HGET', C, 'v:' .. r) or '0') then return true end
  return redis.call('HEXISTS', C, 'c:' .. dot) == 1
end

-- Move v:<replica> up to `v`, folding in the cloud dots that became contiguous: at most
-- FOLD of them per call, so no script runs long (a left-over cloud dot stays valid: seen()
-- finds it either way, and the next call that moves v folds on).
local FOLD = 1000
local function raise_to(r, v)
  for _ = 1, FOLD do
    if redis.call('HDEL', C, 'c:' .. string.format('%d', v + 1) .. '|' .. r) ~= 1 then break end
    v = v + 1
  end
  redis.call('HSET', C, 'v:' .. r, string.format('%d', v))
end

-- Add a dot to the context. Returns true when the dot was new.
local function mark_seen(dot)
  local c, r = parse_dot(dot)
  local v = tonumber(redis.call('HGET', C, 'v:' .. r) or '0')
  if c <= v then return false end
  if c ~= v + 1 then return redis.call('HSETNX', C, 'c:' .. dot, '1') == 1 end
  redis.call('HDEL', C, 'c:' .. dot)
  raise_to(r, c)
  return true
end

local function add_dot(dot, payload)
  redis.call('HSET', H, 'd:' .. dot, payload)
  local idx = redis.call('HGET', H, 'e:' .. payload)
  redis.call('HSET', H, 'e:' .. payload, idx and (idx .. ',' .. dot) or dot)
end

-- A dropped dot is always marked seen: a live dot may lack its context for a while (the
-- middle of a chunked join), and a dot dropped unseen would come back with the next copy.
local function drop_dot(dot, payload)
  mark_seen(dot)
  redis.call('HDEL', H, 'd:' .. dot)
  local keep = {}
  for _, d in ipairs(split(redis.call('HGET', H, 'e:' .. payload))) do
    if d ~= dot then keep[#keep + 1] = d end
  end
  if #keep == 0 then redis.call('HDEL', H, 'e:' .. payload)
  else redis.call('HSET', H, 'e:' .. payload, table.concat(keep, ',')) end
end
