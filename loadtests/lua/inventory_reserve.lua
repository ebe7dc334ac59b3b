-- Reserve stock for an order (the saga's "reserve" step), fenced twice.
--
-- The inventory lock's token guards the product: a lock holder whose lease expired and whose
-- token is older than one already seen is refused. The saga's token guards the order: once a
-- newer orchestrator has touched this order's reservation (say, released it), a paused older
-- one cannot reserve it again behind its back.
--
-- KEYS[1] stock  KEYS[2] the product's lock fence  KEYS[3] reservations (order -> qty)
-- KEYS[4] saga fences (order -> newest saga token)           (all share {inv:<product>})
-- ARGV[1] inventory lock token  ARGV[2] order id  ARGV[3] quantity  ARGV[4] saga token
--
-- Returns 1 reserved (or already reserved by this order), 0 out of stock, -1 fenced off by
-- the inventory lock, -2 fenced off by a newer orchestrator of this order.
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < fence then return -1 end
redis.call('SET', KEYS[2], ARGV[1])
local saga = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
if tonumber(ARGV[4]) < saga then return -2 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 1 end
local qty = tonumber(ARGV[3])
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
if stock < qty then return 0 end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HSET', KEYS[3], ARGV[2], qty)
return 1
