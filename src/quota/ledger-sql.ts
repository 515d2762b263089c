import { USAGE_CHANNEL } from '../usage/usage-wire';

/**
 * The ledger's statements. Each holds the account row's lock for its whole change, so
 * `used + reserved <= limit` holds however many requests and gateway instances run at once.
 */

/**
 * The period start of the user's quota at `$1` (the clock's now), in SQL, so that the period
 * rolls over inside the same statement that reserves or settles: no cron, no race.
 */
const PERIOD_START_SQL = `case u.quota_period
    when 'DAILY' then date_trunc('day', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    when 'MONTHLY' then date_trunc('month', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    else 'epoch'::timestamptz end`;

/** The user's account row, locked, with `used` as of the current period. */
const CURRENT_ACCOUNT_SQL = `select q.user_id, u.token_limit, u.quota_period, ps.start as period_start,
                case when q.period_start >= ps.start then q.used else 0 end as used, q.reserved
           from quota_accounts q
           join users u on u.id = q.user_id
           cross join lateral (select ${PERIOD_START_SQL} as start) ps
          where q.user_id = $2`;

/**
 * $1 now, $2 user, $3 the client's maxTokens (null: what remains), $4 the model's completion
 * limit, $5 prompt tokens, $6 request id, $7 reservation lifetime in seconds.
 */
export const RESERVE_SQL = `with cur as (
         ${CURRENT_ACCOUNT_SQL} and u.disabled = false
          for update of q
       ), budget as (
         select cur.*,
                case when $3::bigint is not null then $3::bigint
                     when cur.token_limit is null then $4::bigint
                     else least($4::bigint, cur.token_limit - cur.used - cur.reserved - $5::bigint) end as completion
           from cur
       ), upd as (
         update quota_accounts q
            set used = b.used, reserved = q.reserved + $5::bigint + b.completion,
                period_start = greatest(q.period_start, b.period_start), updated_at = now()
           from budget b
          where q.user_id = b.user_id and b.completion >= 1
            and (b.token_limit is null or b.used + b.reserved + $5::bigint + b.completion <= b.token_limit)
         returning q.user_id
       ), ins as (
         insert into quota_reservations (request_id, user_id, amount, expires_at)
         select $6::uuid, b.user_id, $5::bigint + b.completion, now() + make_interval(secs => $7::double precision)
           from budget b where exists (select 1 from upd)
         returning request_id
       )
       select b.token_limit, b.quota_period, b.used, b.reserved, b.completion, exists (select 1 from ins) as granted from budget b`;

/**
 * $1 now, $2 user, $3 request id, $4 API key, $5 model, $6 interface, $7 prompt, $8 completion,
 * $9 total, $10 usage source, $11 prompt count source, $12 status, $13 latency ms, $14 NOTIFY
 * payload, $15 the upstream's name. When the upstream reports more than was reserved (a tiktoken estimate came out low),
 * the excess is charged as far as the limit allows, so `used` still never passes it.
 */
export const SETTLE_SQL = `with res as (
         delete from quota_reservations where request_id = $3::uuid returning user_id, amount
       ), acct as (
         ${CURRENT_ACCOUNT_SQL}
          for update of q
       ), rec as (
         insert into usage_records (request_id, user_id, api_key_id, model, interface, prompt_tokens, completion_tokens,
                                    total_tokens, charged_tokens, usage_source, prompt_count_source, status, latency_ms, created_at, upstream)
         select $3::uuid, a.user_id, $4::uuid, $5, $6, $7::bigint, $8::bigint, $9::bigint,
                least($9::bigint, coalesce((select amount from res), 0) +
                      case when a.token_limit is null then $9::bigint else greatest(a.token_limit - a.used - a.reserved, 0) end),
                $10, $11, $12, $13::bigint, $1::timestamptz, $15
           from acct a
         on conflict (request_id) do nothing
         returning charged_tokens
       ), upd as (
         update quota_accounts q
            set used = a.used + coalesce((select charged_tokens from rec), 0),
                reserved = q.reserved - coalesce((select amount from res), 0),
                period_start = greatest(q.period_start, a.period_start), updated_at = now()
           from acct a
          where q.user_id = a.user_id
         returning q.used, q.reserved
       )
       select upd.used, upd.reserved, (select token_limit from acct) as token_limit, (select charged_tokens from rec) as charged,
              case when exists (select 1 from rec) then pg_notify('${USAGE_CHANNEL}', ($14::jsonb || jsonb_build_object(
                'used', upd.used,
                'rem', case when (select token_limit from acct) is null then null
                            else greatest((select token_limit from acct) - upd.used - upd.reserved, 0) end,
                'at', to_char($1::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))::text) end as notified
         from upd`;

export const RELEASE_SQL = `with res as (delete from quota_reservations where request_id = $1::uuid returning user_id, amount)
       update quota_accounts q set reserved = q.reserved - res.amount, updated_at = now() from res where q.user_id = res.user_id`;

/** $1 reservation lifetime in seconds, $2 request id. */
export const EXTEND_SQL = 'update quota_reservations set expires_at = now() + make_interval(secs => $1::double precision) where request_id = $2::uuid';

/** Reservations whose process died (older than their lifetime), given back in one statement. */
export const REAP_SQL = `with res as (delete from quota_reservations where expires_at < now() returning user_id, amount),
            per_user as (select user_id, sum(amount) as amount from res group by user_id)
       update quota_accounts q set reserved = q.reserved - p.amount, updated_at = now()
         from per_user p where q.user_id = p.user_id
       returning q.user_id`;
