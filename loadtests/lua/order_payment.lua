-- Charge or refund an order's payment (the saga's "charge" step and its compensation).
--
-- The payment remembers every idempotency key it executed and what it answered, so a step
-- called again with the same key (a retry, an orchestrator resuming the saga) gets that
-- answer instead of a second charge. The saga's token fences the payment: an orchestrator
-- paused past its lease, after a newer one touched this order, is refused.
--
-- KEYS[1] the order's payment hash: 'fence', 'charges', 'refunds', 'amount', 'key:<key>'
-- ARGV[1] saga token  ARGV[2] idempotency key ('' = none: the broken variant)
-- ARGV[3] 'charge' or 'refund'  ARGV[4] amount
--
-- Returns the number of charges (charge) or refunds (refund) standing after the call, or -1
-- when fenced off. A refund with nothing left to refund changes nothing.
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if tonumber(ARGV[1]) < fence then return -1 end
redis.call('HSET', KEYS[1], 'fence', ARGV[1])
local marker = 'key:' .. ARGV[2]
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[1], marker)
  if done then return tonumber(done) end
end
local n
if ARGV[3] == 'charge' then
  n = redis.call('HINCRBY', KEYS[1], 'charges', 1)
  redis.call('HSET', KEYS[1], 'amount', ARGV[4])
else
  local charges = tonumber(redis.call('HGET', KEYS[1], 'charges') or '0')
  local refunds = tonumber(redis.call('HGET', KEYS[1], 'refunds') or '0')
  if refunds < charges then
    n = redis.call('HINCRBY', KEYS[1], 'refunds', 1)
  else
    n = refunds
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], marker, n) end
return n
