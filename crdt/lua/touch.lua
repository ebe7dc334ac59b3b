-- Apply only an epoch and/or a deadline (replayed 'x' and 't' change-log entries, the first
-- step of a chunked join), or run the checks every write runs (outside delete, expiry)
-- without writing anything else.
-- KEYS, ARGV[1..6]: see _prelude.lua.
-- Returns {number of type fields the object holds (0 = empty), epoch, note, reset}
local ok = open()
if type(ok) == 'table' then return ok end
if ok and string.find(OPTIONS, 's', 1, true) then log('u', {}) end
local bookkeeping = 0
for _, v in ipairs(redis.call('HMGET', H, '#t', '#E', '#X', '#i', '#r', '#v')) do
  if v then bookkeeping = bookkeeping + 1 end
end
return reply(redis.call('HLEN', H) - bookkeeping)
