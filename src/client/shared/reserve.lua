-- Books the next request slot of a fleet sharing one quota, and takes in one process's report.
--
-- KEYS[1]  the scope's state, a hash: the theoretical arrival time of each limit ("tat:<interval>:<burst>"),
--          the latest slot booked ("last"), the adaptive limiter ("rate", "before", "cut", "k",
--          "atat"), a pause ("pause"), the fleet's measured rate ("ws", "wc", "meas"), what
--          the service accepted since its bucket was last seen empty ("empty", "ea", "lull"),
--          the share refused lately ("rn", "rr", "rat"), the noise and the quota found
--          ("noise", "quota"), and the probe under way ("pl..." its low phase, "ph..." its high
--          one). Times are microseconds of the server's clock.
-- KEYS[2]  the scope's members, a sorted set of process ids by the time each last booked.
-- ARGV     member id, refunds, sent time of a throttled request (0: none), Retry-After in us
--          (0: none), adaptive (1 or 0), answers accepted since the last call, the adaptive rate
--          this process last saw in thousandths (0: none), the answers since the last call as
--          "sent:refused" pairs (sent in us of the server's clock, refused 1 or 0) joined by
--          commas, the longest pause a Retry-After may cause (us), then an interval in us and a
--          burst for each fixed limit.
--
-- Returns {wait in us, the server's time in us, the adaptive rate in thousandths (-1: not engaged),
-- members, 1 if this report cut the rate, 1 if the state's times were dropped as booked ahead of
-- the clock}.
if redis.replicate_commands then redis.replicate_commands() end

local BETA, SCALE, SCALE_FROM, SMOOTH, MIN_RATE = 0.7, 0.4, 20, 0.8, 0.5
local WINDOW, MEMBER_TTL, IDLE_MS, LEARNED_MS, HOLD = 500000, 10000000, 600000, 86400000, 30
local TAU, SETTLE, MAX_NOISE = 2000000, 2000000, 0.5
local PHASE_LEAST, NOISE_LEAST, PHASE_ANSWERS = 4, 8, 40

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

-- Members are kept while the fleet is idle less than IDLE_MS; those that booked in the last
-- MEMBER_TTL are the fleet's members now.
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - IDLE_MS * 1000)
redis.call('PEXPIRE', KEYS[2], IDLE_MS)
local members = redis.call('ZCOUNT', KEYS[2], now - MEMBER_TTL, '+inf')
-- Every member seen lately, also one waiting long for its slot, counts for a sane wait.
local seen_members = redis.call('ZCARD', KEYS[2])

-- Slots booked further ahead than any wait can sanely be were booked on a clock ahead of this
-- one: Redis's stepped back. What the fleet learned (its rate, the rate it books at, the quota
-- and the noise found) is kept, and every time is dropped, else each request would wait out the
-- step. A wait is sane up to the longest pause and two turns of every member at the slowest
-- limit any process books by.
local slowest = 1000000 / MIN_RATE
for i = 10, #ARGV, 2 do slowest = math.max(slowest, tonumber(ARGV[i])) end
for field in pairs(state) do
  local interval = string.match(field, '^tat:(%d+):')
  if interval then slowest = math.max(slowest, tonumber(interval)) end
end
local most = tonumber(ARGV[9]) + 2 * seen_members * slowest
local stepped = 0
if get('last', now) > now + most or get('pause', 0) > now + most then
  state = {rate = state['rate'], meas = state['meas'], quota = state['quota'], noise = state['noise']}
  if state['rate'] then
    state['before'], state['cut'], state['grow'], state['k'], state['hold'] = state['rate'], now, now, 0, HOLD
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], string.format('(%d', now), '+inf')
  members = redis.call('ZCOUNT', KEYS[2], now - MEMBER_TTL, '+inf')
  stepped = 1
end

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

-- The adaptive limiter: CUBIC after a cut, never above twice the rate booked. Below SCALE_FROM
-- requests a second its constant shrinks with the rate before the cut (W), so that the curve
-- keeps its shape as a share of W. Each cut is probed: the cut rate is held for a phase, then
-- the rate before it for another, and the shares refused of the requests sent in each are
-- compared. The rule is the one `client::budget::limiter` follows alone; docs/architecture.md
-- says why.
local adaptive = ARGV[5] == '1'
local rate = state['rate']
local noise = get('noise', 0)
local function scale(before) return SCALE * math.min(1, before / SCALE_FROM) end
-- Back at W after K seconds, it holds W for a while ("hold") before it probes above it, when W
-- is what the service was seen to accept: each probe costs throttles.
local function curve()
  local t = (now - get('grow', now)) / 1000000 - get('k', 0)
  if t > 0 then t = math.max(t - get('hold', 0), 0) end
  local before = get('before', MIN_RATE)
  return math.max(math.min(scale(before) * t * t * t + before, 2 * measured), MIN_RATE)
end
-- The curve from now: at `to`, back at `before` K seconds later.
local function set_curve(before, to, hold)
  state['before'], state['grow'], state['hold'] = before, now, hold
  state['k'] = (math.max(before - to, 0) / scale(before)) ^ (1 / 3)
end
-- A new episode at `to`: slots booked before now go out up to the latest of them, each request
-- a moment after its slot, so a throttle sent before one interval of `to` past both speaks of
-- the old rate.
local function new_episode(to)
  state['cut'] = math.max(now, get('last', now)) + 1000000 / to
end
-- How long a probe's phase at `r` lasts: about PHASE_ANSWERS answers, `least` to 3 s, and at
-- low rates long enough for one more answer than can tell noise. A low phase lasts a second
-- at least, for the service's bucket to show its rate; a high phase, often over a quota, no
-- longer than its answers need.
local function phase_length(r, least)
  r = math.max(r, MIN_RATE)
  local length = math.max(math.min(math.max(PHASE_ANSWERS / r, least), 3), (NOISE_LEAST + 1) / r)
  return length * 1000000
end
-- Probes a cut from `from` to `to`, its low phase from `at`.
local function probe(from, to, at)
  state['pl'], state['pll'], state['plr'] = at, phase_length(to, 1), to
  state['phr'] = math.max(from, to)
  state['ph'], state['phl'] = 0, 0
  state['ln'], state['lr'], state['hn'], state['hr'], state['hs'] = 0, 0, 0, 0, 0
end

-- The curve's clock runs only while the fleet uses most of its rate: a fleet that asks for less
-- learns nothing about the quota, and must not come back from a lull at a rate never tried.
if rate ~= nil and measured < 0.8 * rate then
  local lull = math.max(now - get('seen', now), 0)
  state['grow'] = get('grow', now) + lull
  state['lull'] = get('lull', 0) + lull
end
state['seen'] = now
if adaptive and rate ~= nil and get('pl', 0) == 0 then rate = curve() end
-- A state lost (a restarted or failed-over Redis) is taken up again from what a process saw.
local known = tonumber(ARGV[7]) / 1000
if adaptive and rate == nil and known > 0 then
  rate = known
  state['before'], state['cut'], state['grow'], state['k'], state['hold'] = known, now, now, 0, HOLD
end

-- The answers reported: the share refused lately (each answer weighing less by e every TAU),
-- and each counted in the probe's phase its request was sent in.
local keep = math.exp(-math.max(now - get('rat', now), 0) / TAU)
local rn, rr = get('rn', 0) * keep, get('rr', 0) * keep
local pl, ph = get('pl', 0), get('ph', 0)
for at, refused in string.gmatch(ARGV[8], '(%-?%d+):([01])') do
  local t, r = tonumber(at), tonumber(refused)
  rn, rr = rn + 1, rr + r
  local phase = nil
  if ph > 0 and t >= ph and t < ph + get('phl', 0) then
    phase = 'h'
  elseif pl > 0 and t >= pl and t < pl + get('pll', 0) then
    phase = 'l'
  end
  if phase then
    state[phase .. 'n'], state[phase .. 'r'] = get(phase .. 'n', 0) + 1, get(phase .. 'r', 0) + r
  end
end
state['rn'], state['rr'], state['rat'] = rn, rr, now

-- The verdict of a probe: the refusals were noise when, sent more, the service refused no
-- larger share and accepted more; else the rate goes to what the service accepted.
local function judge()
  local ln, lr, hn, hr = get('ln', 0), get('lr', 0), get('hn', 0), get('hr', 0)
  local plr, phr = get('plr', MIN_RATE), get('phr', MIN_RATE)
  local lo_len, hi_len = get('pll', 1) / 1000000, math.max(get('phl', 0), 1000) / 1000000
  state['pl'], state['ph'] = 0, 0
  if ln < PHASE_LEAST or hn < PHASE_LEAST then
    -- Too few answers to tell: carry on as from the cut.
    set_curve(math.max(get('before', plr), plr), plr, get('hold', 0))
    new_episode(plr)
    return plr
  end
  local s_lo, s_hi = lr / ln, hr / hn
  local a_lo, a_hi = (ln - lr) / lo_len, (hn - hr) / hi_len
  local n_lo, n_hi = ln / lo_len, hn / hi_len
  local pooled = (lr + hr) / (ln + hn)
  local spread = math.sqrt(pooled * (1 - pooled) * (1 / ln + 1 / hn))
  local same_share = s_hi <= s_lo + 2 * spread + 0.02
  -- Sent no more in the high phase: the shares alone tell. Else the service accepted more, by
  -- more than chance explains (one standard deviation of the accepted counts).
  local chance = ln * s_lo * (1 - s_lo) / lo_len ^ 2 + hn * s_hi * (1 - s_hi) / hi_len ^ 2
  local accepted_more = n_hi < 1.15 * n_lo
    or a_hi - a_lo >= 0.3 * (n_hi - n_lo) * (1 - s_lo) + math.sqrt(chance)
  -- Every phase's share is at most the noise's and the quota's together.
  noise = math.min(noise, s_lo + 2 * math.sqrt(s_lo * (1 - s_lo) / ln))
  if ln >= NOISE_LEAST and hn >= NOISE_LEAST and lr > 0 and same_share and accepted_more then
    noise = math.min(s_lo, s_hi, MAX_NOISE)
    if state['quota'] then state['quota'] = math.max(state['quota'], phr) end
    set_curve(phr, phr, 0)
    new_episode(phr)
    return phr
  end
  -- Never below what the service was seen to accept.
  local quota = math.min(math.max(a_hi, a_lo) / (1 - noise), phr)
  state['quota'] = quota
  local to = math.max(math.min(0.9 * quota, plr), MIN_RATE)
  set_curve(math.max(quota, to), to, HOLD)
  new_episode(to)
  return to
end

-- No token saved up: the service's own bucket is empty.
local function empty_bucket(to)
  local interval = 1000000 / to
  state['atat'] = math.max(get('atat', now), now + interval + interval * (math.max(to, 1) - 1))
end

local cut = 0
-- The probe under way moves on: from its low phase to its high one, and from that to a verdict.
-- Far over a quota (most of the low phase refused), it cuts again at once, to what the service
-- accepted.
if adaptive and rate ~= nil and get('pl', 0) > 0 then
  local plr, phr, pll = get('plr', MIN_RATE), get('phr', MIN_RATE), get('pll', 0)
  if get('ph', 0) == 0 then
    local ln, lr = get('ln', 0), get('lr', 0)
    local span = math.min(math.max(now - get('pl', 0), WINDOW / 10), pll) / 1000000
    local got = math.max((ln - lr) / span, accepted)
    if ln >= 4 * PHASE_LEAST and lr > 0.5 * ln + math.sqrt(ln) and got > 0 then
      rate = math.max(math.min(got / (1 - noise), plr * BETA), MIN_RATE)
      set_curve(plr, rate, 0)
      probe(math.min(plr, rate / BETA), rate, math.max(now, get('last', now)))
      new_episode(rate)
      empty_bucket(rate)
      cut = 1
    elseif now >= get('pl', 0) + pll then
      -- The slots booked so far keep the low rate: the high phase starts after the latest.
      state['ph'], state['phl'] = math.max(now, get('last', now)), phase_length(phr, 0)
      rate = phr
    else
      rate = plr
    end
  else
    local hn, hr, ln, lr = get('hn', 0), get('hr', 0), get('ln', 0), get('lr', 0)
    local high_end = get('ph', 0) + get('phl', 0)
    local over = now >= high_end and (hn >= get('hs', 0) or now >= high_end + SETTLE)
    local worse = hn >= 2 * PHASE_LEAST and hr / hn > lr / math.max(ln, 1) + 0.4
    if over or worse then
      if now < high_end then state['phl'] = now - get('ph', 0) end
      rate = judge()
    else
      rate = phr
    end
  end
end

local sent = tonumber(ARGV[3])
-- A throttle cuts once per episode (requests sent before the last cut, or in a slot booked
-- before it, speak of the old rate), not while a probe is under way, and only when more were
-- refused lately than the noise explains (three standard deviations and one refusal over it).
local beyond = noise <= 0 or rr > noise * rn + 3 * math.sqrt(noise * (1 - noise) * rn) + 1
if adaptive and sent > 0 and get('pl', 0) == 0
  and (rate == nil or (sent >= get('cut', 0) and beyond)) then
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
  local quota = state['quota']
  if rate ~= nil and quota ~= nil and from > 1.1 * quota then
    -- Above the quota found: back under it, no probe needed. The quota is what the service
    -- accepted, if more.
    local found = math.min(math.max(accepted / (1 - noise), 0.9 * quota), from)
    state['quota'] = found
    rate = math.max(0.9 * found, MIN_RATE)
    set_curve(found, rate, HOLD)
  else
    rate = math.max(from * beta, MIN_RATE)
    set_curve(from, rate, hold)
    -- A start from what got through is probed above it too, up to the rate booked (at most
    -- four times as high): a gateway refusing some at any rate lets little through before its
    -- first refusal, and over a quota the high phase ends as soon as it is clearly worse.
    local above = from
    if beta >= 1 then above = math.min(math.max(measured, rate), 4 * rate) end
    if rate < above then probe(above, rate, math.max(now, get('last', now))) end
  end
  new_episode(rate)
  state['empty'], state['ea'], state['lull'] = sent, 0, 0
  empty_bucket(rate)
  cut = 1
end
state['noise'] = noise
local retry_after = tonumber(ARGV[4])
if retry_after > 0 then
  state['pause'] = math.max(get('pause', 0), now + math.min(retry_after, tonumber(ARGV[9])))
end

-- GCRA over every limit: the slot is the first time each allows, and each limit's theoretical
-- arrival time moves one interval past it. Refunds move them back, never before now.
local refunds = tonumber(ARGV[2])
local limits = {}
for i = 10, #ARGV, 2 do
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
-- The slots of a probe's high phase: its verdict waits for their answers.
local high = get('ph', 0)
if high > 0 and at >= high and at < high + get('phl', 0) then state['hs'] = get('hs', 0) + 1 end

state['ws'], state['wc'], state['meas'] = ws, wc + 1, meas
state['acs'], state['acc'], state['acp'] = acs, acc, acp
if adaptive and rate ~= nil then state['rate'] = rate end
local out = {}
for field, value in pairs(state) do
  out[#out + 1] = field
  out[#out + 1] = string.format('%.17g', value)
end
redis.call('HSET', KEYS[1], unpack(out))
-- Kept a day: a fleet that starts again within it (the next CI run, the next deployment)
-- starts at the rate it learned, not with a burst into the quota. Its curve's clock stopped
-- while it was idle.
redis.call('PEXPIRE', KEYS[1], LEARNED_MS)

local thousandths = -1
if adaptive and rate ~= nil then thousandths = math.floor(rate * 1000) end
return {math.floor(at - now), now, thousandths, members, cut, stepped}
