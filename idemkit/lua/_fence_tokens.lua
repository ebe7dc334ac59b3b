-- Fencing tokens as exact decimal strings, shared by the fence scripts (included by
-- idemkit.lease.load_script where a script says `--!include _fence_tokens`).
--
-- Tokens are compared exactly, at any size: Redis Lua numbers are doubles, which cannot tell
-- 2^53 from 2^53 + 1 and overflow at 2^63, so tokens never go through tonumber(). Canonical
-- decimals (no sign, no leading zeros) order by length first, then byte by byte.
local function canonical(s)
  return s == '0' or string.find(s, '^[1-9]%d*$') ~= nil
end

local function older(a, b)  -- a < b, both canonical
  if #a ~= #b then return #a < #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

-- The caller's token and the newest the resource has seen, checked; or an error reply.
local function fence_tokens(key, token)
  if not canonical(token) then
    return nil, redis.error_reply(
      'ERR fencing token must be a decimal integer >= 0 without leading zeros')
  end
  local newest = redis.call('HGET', key, '_fence') or '0'
  if not canonical(newest) then
    return nil, redis.error_reply('ERR ' .. key .. ' holds a _fence that is not a decimal integer')
  end
  return newest, nil
end
