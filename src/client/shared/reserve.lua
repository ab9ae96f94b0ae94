-- Books the next request slot of a fleet sharing one quota, and takes in one process's report.
--
-- KEYS[1]  the scope's state, a hash: the theoretical arrival time of each limit ("tat:<interval>:<burst>"),
--          the latest slot booked ("last"), the adaptive limiter ("rate", "before", "cut", "k",
--          "atat"), a pause ("pause"), the fleet's measured rate ("ws", "wc", "meas"), and what
--          the service accepted since its bucket was last seen empty ("empty", "ea", "lull").
--          Times are microseconds of the server's clock.
-- KEYS[2]  the scope's members, a sorted set of process ids by the time each last booked.
-- ARGV     member id, refunds, sent time of a throttled request (0: none), Retry-After in us
--          (0: none), adaptive (1 or 0), answers accepted since the last call, the adaptive rate
--          this process last saw in thousandths (0: none), then an interval in us and a burst for
--          each fixed limit.
--
-- Returns {wait in us, the server's time in us, the adaptive rate in thousandths (-1: not engaged),
-- members, 1 if this report cut the rate}.
if redis.replicate_commands then redis.replicate_commands() end

local BETA, SCALE, SMOOTH, MIN_RATE = 0.7, 0.4, 0.8, 0.5
local WINDOW, MEMBER_TTL, IDLE_MS, HOLD = 500000, 10000000, 600000, 30

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local state = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do state[flat[i]] = tonumber(flat[i + 1]) end
local function get(field, default)
  local value = state[field]
  if value == nil then return default end
  return value
end

redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - MEMBER_TTL)
redis.call('PEXPIRE', KEYS[2], IDLE_MS)
local members = redis.call('ZCARD', KEYS[2])

-- The rate the fleet books at, over half-second windows, the latest weighing SMOOTH.
local ws, wc, meas = get('ws', now), get('wc', 0), get('meas', 0)
if now - ws >= WINDOW then
  meas = SMOOTH * wc * 1000000 / (now - ws) + (1 - SMOOTH) * meas
  ws, wc = now, 0
end
local measured = meas
if measured <= 0 then measured = wc * 1000000 / math.max(now - ws, WINDOW / 10) end

-- The rate the service accepted over the last second, from the answers processes report.
local acs, acc, acp = get('acs', now), get('acc', 0) + tonumber(ARGV[6]), get('acp', 0)
if now - acs >= 1000000 then
  acp, acs, acc = acc * 1000000 / (now - acs), now, 0
end
local accepted = acc + acp * (1 - (now - acs) / 1000000)
state['ea'] = get('ea', 0) + tonumber(ARGV[6])

-- The adaptive limiter: CUBIC after a cut, never above twice the rate booked.
local adaptive = ARGV[5] == '1'
local rate = state['rate']
-- Back at the rate before the cut (W) after K seconds, it holds W for a while ("hold") before
-- it probes above it, when W is what the service accepted over a whole second: each probe
-- costs throttles.
local function curve()
  local t = (now - get('grow', now)) / 1000000 - get('k', 0)
  if t > 0 then t = math.max(t - get('hold', 0), 0) end
  return math.max(math.min(SCALE * t * t * t + get('before', MIN_RATE), 2 * measured), MIN_RATE)
end
-- The curve's clock runs only while the fleet uses most of its rate: a fleet that asks for less
-- learns nothing about the quota, and must not come back from a lull at a rate never tried.
if rate ~= nil and measured < 0.8 * rate then
  local lull = math.max(now - get('seen', now), 0)
  state['grow'] = get('grow', now) + lull
  state['lull'] = get('lull', 0) + lull
end
state['seen'] = now
if adaptive and rate ~= nil then rate = curve() end
-- A state lost (a restarted or failed-over Redis) is taken up again from what a process saw.
local known = tonumber(ARGV[7]) / 1000
if adaptive and rate == nil and known > 0 then
  rate = known
  state['before'], state['cut'], state['grow'], state['k'], state['hold'] = known, now, now, 0, HOLD
end
local cut = 0
local sent = tonumber(ARGV[3])
-- A throttle cuts once per episode: requests sent before the last cut, or in a slot booked
-- before it, speak of the old rate.
if adaptive and sent > 0 and (rate == nil or sent >= get('cut', 0)) then
  local from = measured
  if rate ~= nil and (measured <= 0 or rate < measured) then from = rate end
  local hold, beta = 0, BETA
  -- The service's bucket was empty at the last cut's throttle and is empty again at this one:
  -- what it accepted in between, over that time, is at most its rate, and short of it only by
  -- tokens its bucket could not keep. Over a second or more in which the fleet asked for most
  -- of its rate (lulls a quarter of the time at most), it is the measure to hold.
  local span = sent - get('empty', sent)
  local shown = get('ea', 0) * 1000000 / math.max(span, 1)
  if span >= 1000000 and get('lull', 0) <= span / 4 and shown < from then
    from, hold = shown, HOLD
  -- Else what it accepted in the last second, when that is less. Counted over a whole second,
  -- it is a rate worth holding; counted over a fleet's first moments, it is what the service
  -- let through at once, a rate to start from, not to cut.
  elseif accepted > 0 and accepted < from then
    from = accepted
    if acp > 0 then hold = HOLD else beta = 1 end
  end
  from = math.max(from, MIN_RATE)
  rate = math.max(from * beta, MIN_RATE)
  -- Slots booked before this cut go out up to the latest of them, each request a moment after
  -- its slot: a throttle sent before one interval of the new rate past both speaks of the old.
  local booked = math.max(now, get('last', now))
  state['before'], state['cut'], state['grow'] = from, booked + 1000000 / rate, now
  state['k'], state['hold'] = (from * (1 - beta) / SCALE) ^ (1 / 3), hold
  state['empty'], state['ea'], state['lull'] = sent, 0, 0
  -- No token saved up: the service's own bucket is empty.
  local interval = 1000000 / rate
  local tolerance = interval * (math.max(rate, 1) - 1)
  state['atat'] = math.max(get('atat', now), now + interval + tolerance)
  cut = 1
end
local retry_after = tonumber(ARGV[4])
if retry_after > 0 then state['pause'] = math.max(get('pause', 0), now + retry_after) end

-- GCRA over every limit: the slot is the first time each allows, and each limit's theoretical
-- arrival time moves one interval past it. Refunds move them back, never before now.
local refunds = tonumber(ARGV[2])
local limits = {}
for i = 8, #ARGV, 2 do
  local interval, burst = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  limits[#limits + 1] = {'tat:' .. ARGV[i] .. ':' .. ARGV[i + 1], interval, interval * (burst - 1)}
end
if adaptive and rate ~= nil then
  local interval = 1000000 / rate
  limits[#limits + 1] = {'atat', interval, interval * (math.max(rate, 1) - 1)}
end
local at = math.max(now, get('pause', 0))
for _, limit in ipairs(limits) do
  local tat = math.max(get(limit[1], now) - refunds * limit[2], now)
  state[limit[1]] = tat
  at = math.max(at, tat - limit[3])
end
for _, limit in ipairs(limits) do
  state[limit[1]] = math.max(state[limit[1]], at) + limit[2]
end
state['last'] = math.max(get('last', at), at)

state['ws'], state['wc'], state['meas'] = ws, wc + 1, meas
state['acs'], state['acc'], state['acp'] = acs, acc, acp
if adaptive and rate ~= nil then state['rate'] = rate end
local out = {}
for field, value in pairs(state) do
  out[#out + 1] = field
  out[#out + 1] = string.format('%.17g', value)
end
redis.call('HSET', KEYS[1], unpack(out))
redis.call('PEXPIRE', KEYS[1], IDLE_MS)

local thousandths = -1
if adaptive and rate ~= nil then thousandths = math.floor(rate * 1000) end
return {math.floor(at - now), now, thousandths, members, cut}
