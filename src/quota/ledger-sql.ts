import { USAGE_CHANNEL } from '../usage/usage-wire';

/**
 * The ledger's statements. A request is bound by up to three accounts: its team's
 * (`team_quota_accounts`), its user's (`quota_accounts`) and, when it came with an API key,
 * the key's (`api_key_quota_accounts`). Each statement holds the lock of every account it
 * touches for its whole change, so `used + reserved <= limit` holds at every level however
 * many requests and gateway instances run at once.
 *
 * Locks are always taken in one order, reservation rows first, then team, user, key, so that
 * no two statements can wait on each other. Within one statement PostgreSQL gives no order to
 * its CTEs, so each lock CTE names its predecessor in an uncorrelated `(select count(*) …) >= 0`:
 * that sub-select runs, taking the predecessor's locks, before the CTE's own rows are locked.
 */

/**
 * The start of the current period of a quota whose period is in `period`, at `$1` (the
 * clock's now), so that the period rolls over inside the statement that reserves or settles:
 * no cron, no race.
 */
export function periodStart(period: string): string {
  return `case ${period}
    when 'DAILY' then date_trunc('day', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    when 'MONTHLY' then date_trunc('month', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    else 'epoch'::timestamptz end`;
}

/** `used` as of the current period: an account last touched in an earlier period has spent nothing in this one. */
export const CURRENT_USED = 'case when a.period_start >= ps.start then a.used else 0 end';

/** The team's account row, locked, as of the current period; `after` names the CTE that must lock first. */
function lockTeam(teamId: string, after: string): string {
  return `select a.team_id, t.token_limit, t.quota_period, ps.start as period_start, ${CURRENT_USED} as used, a.reserved
           from team_quota_accounts a
           join teams t on t.id = a.team_id
           cross join lateral (select ${periodStart('t.quota_period')} as start) ps
          where a.team_id = ${teamId}${after === '' ? '' : ` and (select count(*) from ${after}) >= 0`}
          for no key update of a`;
}

/**
 * The user's account row, locked, as of the current period; the user's limit and period are
 * read from `users`, or from a CTE named `member` that read that user's row already.
 */
function lockUser(userId: string, after: string, limitsFrom: 'users' | 'member' = 'users'): string {
  return `select a.user_id, u.token_limit, u.quota_period, ps.start as period_start, ${CURRENT_USED} as used, a.reserved
           from quota_accounts a
           join ${limitsFrom === 'users' ? 'users u on u.id = a.user_id' : 'member u on true'}
           cross join lateral (select ${periodStart('u.quota_period')} as start) ps
          where a.user_id = ${userId} and (select count(*) from ${after}) >= 0
          for no key update of a`;
}

/** The API key's account row, locked, as of the current period. */
function lockKey(apiKeyId: string, after: string, condition = ''): string {
  return `select a.api_key_id, k.token_limit, k.quota_period, ps.start as period_start, ${CURRENT_USED} as used, a.reserved
           from api_key_quota_accounts a
           join api_keys k on k.id = a.api_key_id
           cross join lateral (select ${periodStart('k.quota_period')} as start) ps
          where a.api_key_id = ${apiKeyId}${condition} and (select count(*) from ${after}) >= 0
          for no key update of a`;
}

/** What can still be reserved at a level; null when the level is unlimited or absent (least() skips nulls). */
const free = (level: string): string => `${level}.token_limit - ${level}.used - ${level}.reserved`;

/** What is left at a level beyond everything reserved, never below 0; null when unlimited or absent (greatest() would make that 0). */
const room = (level: string): string => `case when ${level}.token_limit is not null then greatest(${free(level)}, 0) end`;

/** Whether `amount` more fits at a level (an absent level has no limit). */
const fits = (level: string, amount: string): string =>
  `(${level}.token_limit is null or ${level}.used + ${level}.reserved + ${amount} <= ${level}.token_limit)`;

/**
 * $1 now, $2 user, $3 the client's maxTokens (null: what remains), $4 the model's completion
 * limit, $5 prompt tokens, $6 request id, $7 reservation lifetime in seconds, $8 the API key
 * the request came with (null: an access token), $9 the least completion budget the request can
 * run with (1; one per choice of `n`; 0 for embeddings), $10 the instance that holds it, $11 model,
 * $12 interface, $13 upstream, $14 prompt count source (what an orphan's record needs). The team
 * is the user's, read here.
 *
 * Without maxTokens the completion is capped to the least that remains across the levels. The
 * request is reserved at every level or at none. Every level's figures are returned either way,
 * so a refusal can name the level that refused.
 */
export const RESERVE_SQL = `with member as (
         select u.team_id, u.token_limit, u.quota_period from users u where u.id = $2::uuid and u.disabled = false
       ), team as (
         ${lockTeam('(select team_id from member)', '')}
       ), usr as (
         ${lockUser('$2::uuid', 'team', 'member')}
       ), akey as (
         ${lockKey('$8::uuid', 'usr', ' and k.user_id = $2::uuid and k.revoked_at is null')}
       ), budget as (
         select usr.user_id, team.team_id, akey.api_key_id, c.completion,
                ($8::uuid is null or akey.api_key_id is not null) as key_valid,
                ($8::uuid is null or akey.api_key_id is not null) and c.completion >= $9::bigint
                  and ${fits('team', '$5::bigint + c.completion')} and ${fits('usr', '$5::bigint + c.completion')}
                  and ${fits('akey', '$5::bigint + c.completion')} as granted
           from usr
           left join team on true
           left join akey on true
           cross join lateral (
             select case when $3::bigint is not null then $3::bigint
                         else least($4::bigint, ${free('team')} - $5::bigint, ${free('usr')} - $5::bigint, ${free('akey')} - $5::bigint) end
                    as completion) c
       ), held_team as (
         update team_quota_accounts a
            set used = team.used, reserved = a.reserved + $5::bigint + b.completion,
                period_start = greatest(a.period_start, team.period_start), updated_at = now()
           from budget b join team on team.team_id = b.team_id
          where b.granted and a.team_id = team.team_id
         returning a.team_id
       ), held_user as (
         update quota_accounts a
            set used = usr.used, reserved = a.reserved + $5::bigint + b.completion,
                period_start = greatest(a.period_start, usr.period_start), updated_at = now()
           from budget b join usr on usr.user_id = b.user_id
          where b.granted and a.user_id = usr.user_id
         returning a.user_id
       ), held_key as (
         update api_key_quota_accounts a
            set used = akey.used, reserved = a.reserved + $5::bigint + b.completion,
                period_start = greatest(a.period_start, akey.period_start), updated_at = now()
           from budget b join akey on akey.api_key_id = b.api_key_id
          where b.granted and a.api_key_id = akey.api_key_id
         returning a.api_key_id
       ), ins as (
         insert into quota_reservations (request_id, user_id, team_id, api_key_id, amount, expires_at, instance_id, model, interface, upstream,
                                         prompt_count_source, prompt_tokens)
         select $6::uuid, b.user_id, b.team_id, b.api_key_id, $5::bigint + b.completion, now() + make_interval(secs => $7::double precision),
                $10::uuid, $11, $12, $13, $14, $5::bigint
           from budget b where b.granted
         returning request_id
       )
       select b.granted and exists (select 1 from ins) as granted, b.key_valid, b.completion, b.team_id,
              usr.token_limit, usr.quota_period, usr.used, usr.reserved,
              team.token_limit as team_limit, team.quota_period as team_period, team.used as team_used, team.reserved as team_reserved,
              akey.token_limit as key_limit, akey.quota_period as key_period, akey.used as key_used, akey.reserved as key_reserved
         from budget b
         join usr on true
         left join team on true
         left join akey on true`;

/** What remains at a level after a change, as events report it: null when the level is unlimited or absent. */
const remainingAfter = (limit: string, used: string, reserved: string): string =>
  `case when ${limit} is null then null else greatest(${limit} - ${used} - ${reserved}, 0) end`;

/** The columns a settlement writes of its usage record. */
export const USAGE_RECORD_COLUMNS = `(request_id, user_id, api_key_id, team_id, model, interface, prompt_tokens, completion_tokens, total_tokens,
                                    charged_tokens, usage_source, prompt_count_source, status, latency_ms, created_at, upstream, cached_tokens)`;

/** The CTEs `team`, `usr` and `akey` of a settlement: each level's account locked, in order, after the reservation row `res`. */
function lockLevelsAfterReservation(teamId: string, userId: string, apiKeyId: string): string {
  return `team as (
         ${lockTeam(teamId, 'res')}
       ), usr as (
         ${lockUser(userId, 'team')}
       ), akey as (
         ${lockKey(apiKeyId, 'usr')}
       )`;
}

/**
 * The NOTIFY of a settled request's UsageEvent: `event` (its fixed fields, jsonb) with the
 * figures of the CTE row `f` after the charge (used, reserved and limit at each level), at $1.
 */
export function announce(event: string): string {
  return `pg_notify('${USAGE_CHANNEL}', (${event} || jsonb_build_object(
                'used', f.used,
                'rem', ${remainingAfter('f.token_limit', 'f.used', 'f.reserved')},
                'tu', f.team_used,
                'trem', ${remainingAfter('f.team_limit', 'f.team_used', 'f.team_reserved')},
                'ku', f.key_used,
                'krem', ${remainingAfter('f.key_limit', 'f.key_used', 'f.key_reserved')},
                'at', to_char($1::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))::text)`;
}

/**
 * The end every settlement shares, after its CTEs `res` (the reservation deleted), `team`,
 * `usr`, `akey` (the accounts locked) and `rec` (the usage record inserted, or nothing when the
 * request was settled already): each level is charged the record's tokens and given back the
 * reservation, and the record is announced with every level's figures after the change, so the
 * event is heard exactly when the record commits. `event` is the event's JSON before those figures.
 */
function chargeLevelsAndAnnounce(event: string): string {
  return `       ), charged_team as (
         update team_quota_accounts a
            set used = team.used + coalesce((select charged_tokens from rec), 0),
                reserved = a.reserved - coalesce((select amount from res), 0),
                period_start = greatest(a.period_start, team.period_start), updated_at = now()
           from team
          where a.team_id = team.team_id
         returning a.used, a.reserved
       ), charged_user as (
         update quota_accounts a
            set used = usr.used + coalesce((select charged_tokens from rec), 0),
                reserved = a.reserved - coalesce((select amount from res), 0),
                period_start = greatest(a.period_start, usr.period_start), updated_at = now()
           from usr
          where a.user_id = usr.user_id
         returning a.used, a.reserved
       ), charged_key as (
         update api_key_quota_accounts a
            set used = akey.used + coalesce((select charged_tokens from rec), 0),
                reserved = a.reserved - coalesce((select amount from res), 0),
                period_start = greatest(a.period_start, akey.period_start), updated_at = now()
           from akey
          where a.api_key_id = akey.api_key_id
         returning a.used, a.reserved
       ), figures as (
         select u.used, u.reserved, (select token_limit from usr) as token_limit,
                t.used as team_used, t.reserved as team_reserved, (select token_limit from team) as team_limit,
                k.used as key_used, k.reserved as key_reserved, (select token_limit from akey) as key_limit
           from charged_user u
           left join charged_team t on true
           left join charged_key k on true
       )
       select f.*, (select charged_tokens from rec) as charged,
              case when exists (select 1 from rec) then ${announce(event)} end as notified
         from figures f`;
}

/**
 * $1 now, $2 user, $3 request id, $4 API key, $5 model, $6 interface, $7 prompt, $8 completion,
 * $9 total, $10 usage source, $11 prompt count source, $12 status, $13 latency ms, $14 NOTIFY
 * payload, $15 the upstream's name, $16 the team the reservation was made in, $17 cached prompt tokens.
 *
 * Every level is charged the same: what the upstream reported, or when that is more than was
 * reserved (a tiktoken estimate came out low), the reservation plus as much of the excess as the
 * tightest level allows, so that `used` never passes the limit at any level.
 */
export const SETTLE_SQL = `with res as (
         delete from quota_reservations where request_id = $3::uuid returning amount
       ), ${lockLevelsAfterReservation('$16::uuid', '$2::uuid', '$4::uuid')}, rec as (
         insert into usage_records ${USAGE_RECORD_COLUMNS}
         select $3::uuid, usr.user_id, $4::uuid, team.team_id, $5, $6, $7::bigint, $8::bigint, $9::bigint,
                least($9::bigint, coalesce((select amount from res), 0) +
                      coalesce(least(${room('team')}, ${room('usr')}, ${room('akey')}), $9::bigint)),
                $10, $11, $12, $13::bigint, $1::timestamptz, $15, $17::bigint
           from usr
           left join team on true
           left join akey on true
         on conflict (request_id) do nothing
         returning charged_tokens
${chargeLevelsAndAnnounce('$14::jsonb')}`;

/** $1 request id. Gives the whole reservation back at every level it was made in. */
export const RELEASE_SQL = `with res as (
         delete from quota_reservations where request_id = $1::uuid returning user_id, team_id, api_key_id, amount
       ), freed_team as (
         update team_quota_accounts a set reserved = a.reserved - r.amount, updated_at = now()
           from res r where a.team_id = r.team_id
         returning a.team_id
       ), freed_user as (
         update quota_accounts a set reserved = a.reserved - r.amount, updated_at = now()
           from res r where a.user_id = r.user_id and (select count(*) from freed_team) >= 0
         returning a.user_id
       )
       update api_key_quota_accounts a set reserved = a.reserved - r.amount, updated_at = now()
         from res r where a.api_key_id = r.api_key_id and (select count(*) from freed_user) >= 0`;

/**
 * $1 now, $2 request id. Settles the reservation of an instance that is gone, from what the row
 * itself holds: one record charging its prompt and the completion tokens its stream had
 * delivered at the last checkpoint, status `interrupted`, estimated; the rest is given back. A
 * reservation another reaper is settling at the same moment is skipped, not waited for; one
 * settled already finds no row and changes nothing.
 */
export const SETTLE_ORPHAN_SQL = `with res as (
         delete from quota_reservations
          where request_id = (select request_id from quota_reservations where request_id = $2::uuid for update skip locked)
         returning request_id, user_id, team_id, api_key_id, amount, model, interface, upstream, prompt_count_source,
                   prompt_tokens, least(delivered_tokens, greatest(amount - prompt_tokens, 0)) as delivered_tokens, created_at
       ), ${lockLevelsAfterReservation('(select team_id from res)', '(select user_id from res)', '(select api_key_id from res)')}, rec as (
         insert into usage_records ${USAGE_RECORD_COLUMNS}
         select res.request_id, usr.user_id, res.api_key_id, team.team_id, res.model, res.interface, res.prompt_tokens, res.delivered_tokens,
                res.prompt_tokens + res.delivered_tokens, least(res.prompt_tokens + res.delivered_tokens, res.amount),
                'estimated', res.prompt_count_source, 'interrupted',
                greatest(0, round(extract(epoch from $1::timestamptz - res.created_at) * 1000))::bigint, $1::timestamptz, res.upstream, 0
           from res
           join usr on true
           left join team on true
           left join akey on true
         on conflict (request_id) do nothing
         returning charged_tokens
${chargeLevelsAndAnnounce(`(select jsonb_build_object('r', request_id, 'u', user_id, 'k', api_key_id, 't', team_id, 'm', left(model, 256),
                                   'p', prompt_tokens, 'c', delivered_tokens, 'ct', 0) from res)`)}`;

/**
 * $1 this instance, $2 seconds an instance must have gone unseen, $3 the advisory lock space of
 * instances. The reservations of instances that are gone: no session holds their lock (it ends
 * with the process, however it dies) and they have not been seen for $2 seconds (a lost
 * connection alone does not make a live instance look dead).
 */
export const ORPHANS_SQL = `select r.request_id from quota_reservations r
         left join gateway_instances i on i.id = r.instance_id
        where r.instance_id is not null and r.instance_id <> $1::uuid
          and (i.id is null or (i.seen_at < now() - make_interval(secs => $2::double precision) and not exists (
                 select 1 from pg_locks l
                  where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                    and l.database = (select oid from pg_database where datname = current_database())
                    and l.classid = $3::integer::oid and l.objid = i.lock_key::oid)))
        order by r.created_at
        limit 1000`;

/**
 * $1 this instance, $2 its lock key, $3 host, $4 pid, then the open streams' request ids ($5)
 * and the completion tokens each has delivered ($6). Says the instance is alive and checkpoints
 * its streams, in one statement; it registers the instance again if its row was taken away.
 */
export const HEARTBEAT_SQL = `with seen as (
         insert into gateway_instances (id, lock_key, host, pid) values ($1::uuid, $2::integer, $3, $4::integer)
         on conflict (id) do update set seen_at = now()
       )
       update quota_reservations r set delivered_tokens = c.delivered
         from unnest($5::uuid[], $6::bigint[]) as c(request_id, delivered)
        where r.request_id = c.request_id and r.instance_id = $1::uuid`;

/**
 * Reservations of instances from before instances were tracked, older than their lifetime,
 * given back in one statement. Several accounts of a level are locked in id order, all teams
 * before any user, all users before any key: the order every other statement keeps too.
 */
export const REAP_SQL = `with res as (
         delete from quota_reservations where instance_id is null and expires_at < now() returning user_id, team_id, api_key_id, amount
       ), per_team as (
         select team_id, sum(amount) as amount from res where team_id is not null group by team_id
       ), per_user as (
         select user_id, sum(amount) as amount from res group by user_id
       ), per_key as (
         select api_key_id, sum(amount) as amount from res where api_key_id is not null group by api_key_id
       ), locked_teams as (
         select a.team_id from team_quota_accounts a join per_team p on p.team_id = a.team_id order by a.team_id for no key update of a
       ), freed_teams as (
         update team_quota_accounts a set reserved = a.reserved - p.amount, updated_at = now()
           from per_team p where a.team_id = p.team_id and (select count(*) from locked_teams) >= 0
         returning a.team_id
       ), locked_users as (
         select a.user_id from quota_accounts a join per_user p on p.user_id = a.user_id
          where (select count(*) from freed_teams) >= 0
          order by a.user_id for no key update of a
       ), freed_users as (
         update quota_accounts a set reserved = a.reserved - p.amount, updated_at = now()
           from per_user p where a.user_id = p.user_id and (select count(*) from locked_users) >= 0
         returning a.user_id
       ), locked_keys as (
         select a.api_key_id from api_key_quota_accounts a join per_key p on p.api_key_id = a.api_key_id
          where (select count(*) from freed_users) >= 0
          order by a.api_key_id for no key update of a
       ), freed_keys as (
         update api_key_quota_accounts a set reserved = a.reserved - p.amount, updated_at = now()
           from per_key p where a.api_key_id = p.api_key_id and (select count(*) from locked_keys) >= 0
         returning a.api_key_id
       )
       select (select count(*) from res) as reservations, (select count(*) from freed_users) as users,
              (select count(*) from freed_keys) as keys`;
