-- Apply only an epoch and/or a deadline (replayed 'x' and 't' change-log entries), or run
-- the checks every write runs (outside delete, expiry) without writing anything else.
-- KEYS, ARGV[1..5]: see _prelude.lua.
-- Returns {0, epoch, note, reset}
local ok = open()
if type(ok) == 'table' then return ok end
return reply(0)
