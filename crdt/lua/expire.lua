-- Give the object's current epoch a deadline (server clock + ttl); the deadline travels with
-- the object and only ever moves later. Once it has passed, the next script that touches
-- the object in any region empties it into the next epoch, the same one everywhere.
-- KEYS, ARGV[1..6]: see _prelude.lua. ARGV[7] ttl ms (canonical decimal).
-- Returns {the deadline in effect, epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
if not is_dec(ARGV[7]) then return fail('CRDT_ARG', 'ttl must be a canonical decimal') end
local deadline = dec_add(now_ms(), ARGV[7])
local current = redis.call('HGET', H, '#X')
if not current or dec_gt(deadline, current) then
  redis.call('HSET', H, '#X', deadline)
  log('t', {'X', deadline})
  current = deadline
end
return reply(current)
