// The Lua scripts of history and presence on one Redis (redis-history.ts; SPEC §5). Keys, per channel C:
//   iodine:hseq:C   hash {epoch, seq, size}: the channel's epoch, its last offset, the size it keeps
//                   (expires ttl + 1 day after the last publish: then the next one starts a new epoch)
//   iodine:hist:C   stream, one entry per message, id `<offset>-<ms>` (Redis's clock at the publish,
//                   so a read can tell a message older than ttl), one field: `t` (a text message) or
//                   `b` (binary), its value the message; trimmed to about `size` (MAXLEN ~), expires
//                   ttl after the last message
//   iodine:pres:C   hash clusterId → that cluster's subscriptions to C
//   iodine:alive:I  set (PX 5000) while cluster I lives; it refreshes it every 1.5 s
// A history message is PUBLISHed on C as `\0iodine-h <epoch>:<offset>\n` (`… <offset> b\n` for a
// binary one) followed by its bytes. The scripts build key names from the channel (no KEYS): one
// Redis only, never a Redis Cluster (redis-sharded.ts keeps no history in Redis).

/** An epoch from Redis's clock, in µs. (Offsets stay below 1e14, which Lua's `..` prints whole.) */
const EPOCH_OF_TIME = "t[1] .. string.format('%06d', tonumber(t[2]))";

/**
 * Appends and publishes runs of messages: ARGV is a sequence of runs, each
 * `channel, size, ttlMs, how, n, m1 … mN`; `how` is two characters: '1' to start a new epoch first
 * (this cluster kept messages of the channel while Redis was away) or '0', then the stream field of
 * the run, 't' (text) or 'b' (binary). Returns `epoch, top` per run (the run's offsets end at top).
 */
export const APPEND_SCRIPT = `
local t = redis.call('TIME')
local tail = '-' .. string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
local i = 1
while i <= #ARGV do
  local ch, size, ttl, how, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local hk, sk = 'iodine:hseq:' .. ch, 'iodine:hist:' .. ch
  local epoch = redis.call('HGET', hk, 'epoch')
  if not epoch or string.sub(how, 1, 1) == '1' then
    local new = ${EPOCH_OF_TIME}
    if new == epoch then new = new .. 'b' end
    epoch = new
    redis.call('DEL', sk)
    redis.call('HSET', hk, 'epoch', epoch, 'seq', 0)
  end
  local top = redis.call('HINCRBY', hk, 'seq', n)
  redis.call('HSET', hk, 'size', size)
  local field = string.sub(how, 2, 2)
  local prefix = '\\0iodine-h ' .. epoch .. ':'
  local mark = field == 't' and '\\n' or ' b\\n'
  local off = top - n
  for k = i + 5, i + 4 + n do
    off = off + 1
    local m = ARGV[k]
    redis.call('XADD', sk, off .. tail, field, m)
    redis.call('PUBLISH', ch, prefix .. off .. mark .. m)
  end
  redis.call('XTRIM', sk, 'MAXLEN', '~', size)
  redis.call('PEXPIRE', sk, ttl)
  redis.call('PEXPIRE', hk, ttl + 86400000)
  out[#out + 1] = epoch
  out[#out + 1] = top
  i = i + 5 + n
end
return out`;

/**
 * What a channel retains after an offset: ARGV `channel, after, ttlMs`. Returns
 * `{epoch, top, size, now (ms), oldest offset (0: none), entries from max(after + 1, top - size + 1)}`;
 * a channel never published gets its epoch now, so positions given out before its first message hold.
 */
export const READ_SCRIPT = `
local hk, sk = 'iodine:hseq:' .. ARGV[1], 'iodine:hist:' .. ARGV[1]
local t = redis.call('TIME')
local h = redis.call('HMGET', hk, 'epoch', 'seq', 'size')
local epoch, top, size = h[1], tonumber(h[2] or '0'), tonumber(h[3] or '0')
if not epoch then
  epoch = ${EPOCH_OF_TIME}
  top = 0
  redis.call('DEL', sk)
  redis.call('HSET', hk, 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', hk, tonumber(ARGV[3]) + 86400000)
end
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = tonumber(ARGV[2]) + 1
if size > 0 and top - size + 1 > from then from = top - size + 1 end
local oldest = 0
local o = redis.call('XRANGE', sk, '-', '+', 'COUNT', 1)
if o[1] then oldest = tonumber(string.match(o[1][1], '^(%d+)')) end
local entries = {}
if from <= top then entries = redis.call('XRANGE', sk, string.format('%d', from), '+') end
return {epoch, top, size, now, oldest, entries}`;

/**
 * Subscriptions to a channel in every cluster still alive: ARGV `channel, own clusterId`. The fields
 * of clusters whose alive key expired are dropped on the way.
 */
export const PRESENCE_SCRIPT = `
local key = 'iodine:pres:' .. ARGV[1]
local h = redis.call('HGETALL', key)
local sum = 0
for i = 1, #h, 2 do
  if h[i] == ARGV[2] or redis.call('EXISTS', 'iodine:alive:' .. h[i]) == 1 then
    sum = sum + tonumber(h[i + 1])
  else
    redis.call('HDEL', key, h[i])
  end
end
return sum`;
