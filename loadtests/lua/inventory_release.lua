-- Release an order's reservation (the compensation of "reserve"), fenced like the reserve.
--
-- KEYS[1] stock  KEYS[2] the product's lock fence  KEYS[3] reservations (order -> qty)
-- KEYS[4] saga fences (order -> newest saga token)           (all share {inv:<product>})
-- ARGV[1] inventory lock token  ARGV[2] order id  ARGV[3] saga token
--
-- Returns the quantity given back (0 when the order holds nothing: never reserved, or
-- released before), -1 fenced off by the inventory lock, -2 by a newer orchestrator.
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < fence then return -1 end
redis.call('SET', KEYS[2], ARGV[1])
local saga = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
if tonumber(ARGV[3]) < saga then return -2 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
local held = redis.call('HGET', KEYS[3], ARGV[2])
if not held then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('INCRBY', KEYS[1], held)
return tonumber(held)
