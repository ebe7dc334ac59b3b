-- Shared helpers, prepended to every crdt script when it is registered.
-- Convention for every script: KEYS[1] = the object's HASH, KEYS[2] (optional) = the
-- region's change stream; ARGV[1] = type tag, ARGV[2] = object name (logged), ARGV[3] =
-- stream MAXLEN (approximate).
--
-- Numbers: Redis Lua numbers are doubles, exact only below 2^53. Counts are therefore kept
-- as decimal strings and compared / added digit by digit, never through tonumber().

local function guard_type(h, tag)
  local t = redis.call('HGET', h, '#t')
  if t and t ~= tag then
    return redis.error_reply('CRDT_TYPE key holds type tag ' .. t .. ', not ' .. tag)
  end
  if not t then redis.call('HSET', h, '#t', tag) end
  return nil
end

local function log_change()
  if KEYS[2] then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'n', ARGV[2], 't', ARGV[1])
  end
end

-- Byte-wise a < b (string '<' in Redis Lua goes through strcoll, i.e. the locale).
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- Canonical non-negative decimals (no leading zeros): longer is larger, else byte order.
local function dec_gt(a, b)
  if #a ~= #b then return #a > #b end
  return bytes_lt(b, a)
end

local function dec_add(a, b)
  local out = {}
  local i, j, carry = #a, #b, 0
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48 end
    if j > 0 then s = s + string.byte(b, j) - 48 end
    out[#out + 1] = string.char(48 + s % 10)
    carry = math.floor(s / 10)
    i, j = i - 1, j - 1
  end
  local r = string.reverse(table.concat(out)):gsub('^0+', '')
  if r == '' then return '0' end
  return r
end
