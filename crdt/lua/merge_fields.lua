-- Field-wise max merge for GCounter, PNCounter, GSet and TwoPSet.
-- KEYS[1] object HASH, KEYS[2] optional change stream
-- ARGV[1] type tag, ARGV[2] name, ARGV[3] stream maxlen, then field, value pairs where
--   values are canonical decimals (counts) or "1" (set membership flags)
-- Returns: number of fields that grew (0 = nothing changed, nothing logged)
local h = KEYS[1]
local err = guard_type(h, ARGV[1])
if err then return err end
local changed = 0
for i = 4, #ARGV, 2 do
  local cur = redis.call('HGET', h, ARGV[i])
  if (not cur) or dec_gt(ARGV[i + 1], cur) then
    redis.call('HSET', h, ARGV[i], ARGV[i + 1])
    changed = changed + 1
  end
end
if changed > 0 then log_change() end
return changed
