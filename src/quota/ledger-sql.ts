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
function periodStart(period: string): string {
  return `case ${period}
    when 'DAILY' then date_trunc('day', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    when 'MONTHLY' then date_trunc('month', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    else 'epoch'::timestamptz end`;
}

/** `used` as of the current period: an account last touched in an earlier period has spent nothing in this one. */
const CURRENT_USED = 'case when a.period_start >= ps.start then a.used else 0 end';

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
 * run with (1; one per choice of `n`; 0 for embeddings). The team is the user's, read here.
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
         insert into quota_reservations (request_id, user_id, team_id, api_key_id, amount, expires_at)
         select $6::uuid, b.user_id, b.team_id, b.api_key_id, $5::bigint + b.completion, now() + make_interval(secs => $7::double precision)
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
       ), team as (
         ${lockTeam('$16::uuid', 'res')}
       ), usr as (
         ${lockUser('$2::uuid', 'team')}
       ), akey as (
         ${lockKey('$4::uuid', 'usr')}
       ), rec as (
         insert into usage_records (request_id, user_id, api_key_id, team_id, model, interface, prompt_tokens, completion_tokens,
                                    total_tokens, charged_tokens, usage_source, prompt_count_source, status, latency_ms, created_at, upstream,
                                    cached_tokens)
         select $3::uuid, usr.user_id, $4::uuid, team.team_id, $5, $6, $7::bigint, $8::bigint, $9::bigint,
                least($9::bigint, coalesce((select amount from res), 0) +
                      coalesce(least(${room('team')}, ${room('usr')}, ${room('akey')}), $9::bigint)),
                $10, $11, $12, $13::bigint, $1::timestamptz, $15, $17::bigint
           from usr
           left join team on true
           left join akey on true
         on conflict (request_id) do nothing
         returning charged_tokens
       ), charged_team as (
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
              case when exists (select 1 from rec) then pg_notify('${USAGE_CHANNEL}', ($14::jsonb || jsonb_build_object(
                'used', f.used,
                'rem', ${remainingAfter('f.token_limit', 'f.used', 'f.reserved')},
                'tu', f.team_used,
                'trem', ${remainingAfter('f.team_limit', 'f.team_used', 'f.team_reserved')},
                'ku', f.key_used,
                'krem', ${remainingAfter('f.key_limit', 'f.key_used', 'f.key_reserved')},
                'at', to_char($1::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))::text) end as notified
         from figures f`;

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

/** $1 reservation lifetime in seconds, $2 request id. */
export const EXTEND_SQL = 'update quota_reservations set expires_at = now() + make_interval(secs => $1::double precision) where request_id = $2::uuid';

/**
 * Reservations whose process died (older than their lifetime), given back in one statement.
 * Several accounts of a level are locked in id order, all teams before any user, all users
 * before any key: the order every other statement keeps too.
 */
export const REAP_SQL = `with res as (
         delete from quota_reservations where expires_at < now() returning user_id, team_id, api_key_id, amount
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
