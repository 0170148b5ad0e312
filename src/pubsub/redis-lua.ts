// The Lua scripts of history and presence on one Redis (redis-history.ts; SPEC §5). Keys, per channel C:
//   iodine:hseq:C   hash {epoch, seq, size, exp}: the channel's epoch, its last offset, the size it
//                   keeps, when the expiries were last pushed back (ms; every ttl / 4, at most hourly)
//                   (expires a day after the lists: then the next publish starts a new epoch)
//   iodine:hist:C   list of the last `size` messages as published (raw bytes), oldest first: the last
//                   one has offset seq
//   iodine:hrun:C   list of the runs of messages appended together: `<last offset>:<ms>:<t|b>` (Redis's
//                   clock, so a read leaves out messages older than ttl; t: text, b: binary)
//   (both lists expire about ttl after the last message: ttl + ttl / 4 at most)
//   iodine:pres:C   hash clusterId → that cluster's subscriptions to C
//   iodine:alive:I  set (PX 5000) while cluster I lives; it refreshes it every 1.5 s
// A history message is PUBLISHed on C as `\0iodine-h <epoch>:<offset>\n` (`… <offset> b\n` for a
// binary one) followed by its bytes. The scripts build key names from the channel (no KEYS): one
// Redis only, never a Redis Cluster (redis-sharded.ts keeps no history in Redis). Lists rather than
// a stream: one RPUSH per run costs Redis far less than an XADD per message (bench/redis-history.ts).

/** An epoch from Redis's clock, in µs. (Offsets stay below 1e14, which Lua's `..` prints whole.) */
const EPOCH_OF_TIME = "t[1] .. string.format('%06d', tonumber(t[2]))";

/**
 * Appends and publishes runs of messages: ARGV is a sequence of runs, each
 * `channel, size, ttlMs, how, n, m1 … mN`; `how` is two characters: '1' to start a new epoch first
 * (this cluster kept messages of the channel while Redis was away) or '0', then the run's kind, 't'
 * (text) or 'b' (binary). Returns `epoch, top` per run (the run's offsets end at top).
 */
export const APPEND_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stamp = ':' .. string.format('%d', now) .. ':'
local out = {}
local i = 1
while i <= #ARGV do
  local ch, size, ttl, how, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local hk, lk, rk = 'iodine:hseq:' .. ch, 'iodine:hist:' .. ch, 'iodine:hrun:' .. ch
  local h = redis.call('HMGET', hk, 'epoch', 'size', 'exp')
  local epoch = h[1]
  local every = math.min(math.floor(ttl / 4), 3600000)
  local renew = not h[3] or now - tonumber(h[3]) >= every
  if not epoch or string.sub(how, 1, 1) == '1' then
    local new = ${EPOCH_OF_TIME}
    if new == epoch then new = new .. 'b' end
    epoch = new
    redis.call('DEL', lk, rk)
    redis.call('HSET', hk, 'epoch', epoch, 'seq', 0, 'size', size)
    renew = true
  elseif tonumber(h[2]) ~= size then
    redis.call('HSET', hk, 'size', size)
  end
  local top = redis.call('HINCRBY', hk, 'seq', n)
  local kind = string.sub(how, 2, 2)
  local prefix = '\\0iodine-h ' .. epoch .. ':'
  local mark = kind == 't' and '\\n' or ' b\\n'
  local off = top - n
  for k = i + 5, i + 4 + n do
    off = off + 1
    redis.call('PUBLISH', ch, prefix .. off .. mark .. ARGV[k])
  end
  local len = redis.call('RPUSH', lk, unpack(ARGV, i + 5, i + 4 + n))
  if len > size then redis.call('LTRIM', lk, -size, -1) end
  local runs = redis.call('RPUSH', rk, top .. stamp .. kind)
  if runs > size then redis.call('LTRIM', rk, -size, -1) end
  -- Expiries are pushed back every ttl / 4 (at most hourly), and set on a list just made.
  if renew then
    redis.call('HSET', hk, 'exp', now)
    redis.call('PEXPIRE', hk, ttl + every + 86400000)
  end
  if renew or len == n then redis.call('PEXPIRE', lk, ttl + every) end
  if renew or runs == 1 then redis.call('PEXPIRE', rk, ttl + every) end
  out[#out + 1] = epoch
  out[#out + 1] = top
  i = i + 5 + n
end
return out`;

/**
 * What a channel retains after an offset: ARGV `channel, after, ttlMs`. Returns
 * `{epoch, top, now (ms), first (the oldest offset in the list; top + 1: none), runs, messages}`:
 * the messages from max(after + 1, first) to top, and the runs that cover them, newest first. A
 * channel never published gets its epoch now, so positions given out before its first message hold.
 */
export const READ_SCRIPT = `
local hk, lk, rk = 'iodine:hseq:' .. ARGV[1], 'iodine:hist:' .. ARGV[1], 'iodine:hrun:' .. ARGV[1]
local t = redis.call('TIME')
local h = redis.call('HMGET', hk, 'epoch', 'seq')
local epoch, top = h[1], tonumber(h[2] or '0')
if not epoch then
  epoch = ${EPOCH_OF_TIME}
  top = 0
  redis.call('DEL', lk, rk)
  redis.call('HSET', hk, 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', hk, tonumber(ARGV[3]) + 86400000)
end
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first = top - redis.call('LLEN', lk) + 1
local from = math.max(tonumber(ARGV[2]) + 1, first)
local messages, runs = {}, {}
if from <= top then
  messages = redis.call('LRANGE', lk, from - first, -1)
  for k = -1, -1 - top, -1 do
    local run = redis.call('LINDEX', rk, k)
    if not run then break end
    runs[#runs + 1] = run
    if tonumber(string.match(run, '^%d+')) < from then break end
  end
end
return {epoch, top, now, first, runs, messages}`;

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
