-- Append a batch of outbox events to a stream, if the relay's fencing token is not stale.
--
-- KEYS[1]  the stream (idemkit:outbox:{topic})
-- KEYS[2]  the stream's fence: newest relay token seen (a string key, same hash tag)
-- ARGV[1]  the relay's fencing token
-- ARGV[2]  approximate MAXLEN for the stream, or '0' for no trimming
-- ARGV[3..] 5 values per event, in order: event id, key, payload, outbox row id, topic
--
-- Returns {1, n} when the n events were appended in order, {0, newest} when a newer relay
-- token has published here: the caller lost its lease and must stop (nothing was appended).
local token = tonumber(ARGV[1])
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if token < newest then
  return {0, string.format('%d', newest)}
end
if token > newest then
  redis.call('SET', KEYS[2], ARGV[1])
end
local maxlen = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 5 do
  local fields = {'event_id', ARGV[i], 'key', ARGV[i + 1], 'payload', ARGV[i + 2],
                  'outbox_id', ARGV[i + 3], 'topic', ARGV[i + 4], 'fence', ARGV[1]}
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(fields))
  else
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
  n = n + 1
end
return {1, n}
