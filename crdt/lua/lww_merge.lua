-- Last-writer-wins merge ordered by (HLC wall ms, HLC logical, replica id bytes).
-- KEYS[1] object HASH (#t, w, l, r, v), KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, ARGV[4] wall ms, ARGV[5] logical,
-- ARGV[6] replica id, ARGV[7] value (msgpack)
-- Returns: 1 if the incoming write won, 0 if not; error CRDT_TSREUSE when the same
--   (HLC, replica) arrives with another value (a reused replica id)
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local cur = redis.call('HMGET', h, 'w', 'l', 'r', 'v')
local wins = false
if not cur[1] then
  wins = true
else
  -- Wall ms and logical counters stay far below 2^53, so tonumber is exact here.
  local cw, cl, nw, nl = tonumber(cur[1]), tonumber(cur[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
  if nw ~= cw then wins = nw > cw
  elseif nl ~= cl then wins = nl > cl
  elseif ARGV[6] ~= cur[3] then wins = bytes_lt(cur[3], ARGV[6])
  elseif ARGV[7] ~= cur[4] then
    return redis.error_reply('CRDT_TSREUSE replica ' .. ARGV[6] .. ' wrote two values at one HLC')
  end
end
if wins then
  redis.call('HSET', h, 'w', ARGV[4], 'l', ARGV[5], 'r', ARGV[6], 'v', ARGV[7])
  log_change()
  return 1
end
return 0
