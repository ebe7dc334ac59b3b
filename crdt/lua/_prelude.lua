-- Shared by every crdt write script (prepended when the script is registered).
--
-- KEYS[1] the object's data HASH, KEYS[2] its causal-context HASH (dotted types only),
-- KEYS[3] the shard's index HASH (object name -> epoch), KEYS[4] (optional) the shard's
-- change stream. All four share the shard's hash tag, so a script touches one Cluster slot.
-- ARGV[1] type tag ('' = any), ARGV[2] object name, ARGV[3] stream MAXLEN (approximate),
-- ARGV[4] epoch of the incoming state ('' for a local write), ARGV[5] its expiry deadline
-- (ms on the server clock, '' for none), ARGV[6] options: 'u' logs a change as kind 'u'
-- ("compare the whole object with me") instead of the delta, which keeps the entries of a
-- chunked join small; 'n' logs nothing (a chunk of a copy whose last step logs 'u');
-- 'l' (dots_delta) adds live dots without their context, which the join's last step
-- (ctx_union) brings; 's' (touch) logs 'u'. Script arguments proper start at ARGV[7].
-- Every write script returns {result, epoch, note, reset}: note is '' or one of
-- 'outside-delete' (the data key had been deleted outside the API: turned into a delete),
-- 'expired' (the deadline had passed: the object was emptied into the next epoch) or 'stale'
-- (the incoming state belongs to an older epoch and was ignored); reset is 1 when the call
-- changed the epoch or the deadline.
--
-- Data HASH bookkeeping fields start with '#': #t type tag, #E epoch, #X deadline, #i the
-- incarnation id this region mints under, #r the server run id it was minted in, #v the
-- check-and-set version (blob types). Type fields never start with '#'.
--
-- Numbers: Lua numbers are doubles, exact only below 2^53. Counts, epochs, deadlines and
-- HLC parts are canonical decimal strings, compared and added digit by digit.

local H, C, IDX, LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local TAG, NAME, OPTIONS = ARGV[1], ARGV[2], ARGV[6]
local SUMMARY = string.find(OPTIONS, 'u', 1, true) ~= nil
local SILENT = string.find(OPTIONS, 'n', 1, true) ~= nil
local TYPE, EPOCH, NOTE, CHANGED = '', '0', '', false
local INT64_MAX = '9223372036854775807'

local function fail(code, message)
  return redis.error_reply(code .. ' ' .. message)
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

local function is_dec(s)
  return s == '0' or (string.match(s, '^[1-9]%d*$') ~= nil)
end

-- Canonical non-negative decimals: longer is larger, else byte order.
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

local function now_ms()
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Append one entry to the shard's change stream: what changed, enough to replay it.
local function log(kind, extra)
  if not LOG then return end
  if kind ~= 'x' and kind ~= 't' then
    if SILENT then return end
    if SUMMARY then kind, extra = 'u', {} end
  end
  local args = {'XADD', LOG, 'MAXLEN', '~', ARGV[3], '*',
    'v', '1', 'n', NAME, 't', (TYPE ~= '' and TYPE) or '0', 'e', EPOCH, 'k', kind}
  for _, x in ipairs(extra) do args[#args + 1] = x end
  redis.call(unpack(args))
end

-- Empty the object into `epoch`; UNLINK frees a large object off the main thread.
local function wipe(epoch)
  redis.call('UNLINK', H, C)
  EPOCH = epoch
  redis.call('HSET', H, '#E', epoch)
  if TYPE ~= '' then redis.call('HSET', H, '#t', TYPE) end
  redis.call('HSET', IDX, NAME, epoch)
  CHANGED = true
  log('x', {})
end

-- Bring the object to the state a write builds on. Returns an error reply, or false when
-- the incoming state is of an older epoch (nothing to do), else true. The type is checked
-- within one epoch only: a newer epoch may reuse the name for another type.
local function open()
  local head = redis.call('HMGET', H, '#t', '#E', '#X')
  local known = redis.call('HGET', IDX, NAME)
  TYPE = head[1] or ''
  if not head[2] then
    if known then
      -- The index remembers the object but its data key is gone: someone deleted it outside
      -- the API. Honour that as a delete (next epoch) instead of letting sync undo it.
      NOTE = 'outside-delete'
      wipe(dec_add(known, '1'))
    else
      EPOCH = '0'
      redis.call('HSET', H, '#E', '0')
      redis.call('HSET', IDX, NAME, '0')
    end
  else
    EPOCH = head[2]
    if known ~= EPOCH then redis.call('HSET', IDX, NAME, EPOCH) end
    if head[3] and not dec_gt(head[3], now_ms()) then
      NOTE = 'expired'
      wipe(dec_add(EPOCH, '1'))
    end
  end
  local incoming, deadline = ARGV[4], ARGV[5]
  if incoming ~= '' then
    if not is_dec(incoming) then return fail('CRDT_ARG', 'epoch must be a decimal') end
    if dec_gt(EPOCH, incoming) then NOTE = 'stale'; return false end
    if dec_gt(incoming, EPOCH) then
      TYPE = TAG
      wipe(incoming)
    end
  end
  if TAG ~= '' then
    if TYPE ~= '' and TYPE ~= TAG then
      return fail('CRDT_TYPE', 'key holds type tag ' .. TYPE .. ', not ' .. TAG)
    end
    if TYPE == '' then
      TYPE = TAG
      redis.call('HSET', H, '#t', TAG)
    end
  end
  if deadline ~= '' then
    if not is_dec(deadline) then return fail('CRDT_ARG', 'deadline must be a decimal') end
    local current = redis.call('HGET', H, '#X')
    if not current or dec_gt(deadline, current) then
      redis.call('HSET', H, '#X', deadline)
      CHANGED = true
      log('t', {'X', deadline})
    end
    if not dec_gt(deadline, now_ms()) then
      -- Dead on arrival: every region empties it into the same next epoch.
      NOTE = 'expired'
      wipe(dec_add(EPOCH, '1'))
      return false
    end
  end
  return true
end

-- The replica id this region mints under for this object. A new one whenever the server
-- may have lost state since the last one was minted: a restart (new run id, so also a
-- restore from an older snapshot or a failover) or a lost data key (no #i).
local function incarnation(region, token)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local current = redis.call('HMGET', H, '#i', '#r')
  if current[1] and current[2] == run then return current[1] end
  local id = region .. '.' .. token
  redis.call('HSET', H, '#i', id, '#r', run)
  return id
end

local function reply(result)
  return {result, EPOCH, NOTE, CHANGED and 1 or 0}
end
