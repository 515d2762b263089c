import { CURRENT_USED, USAGE_RECORD_COLUMNS, announce, periodStart } from './ledger-sql';

// The ledger's group-committed statements (GroupCommit): many reservations or settlements in
// one statement, under the same locking rules as the statements of ledger-sql.ts.

type Level = 'team' | 'user' | 'key';

/** Each level's ledger table, its key, the table of its holders, and what a group statement reads besides. */
const LEVEL_ACCOUNTS: Record<Level, { table: string; key: string; holder: string; extra: string }> = {
  team: { table: 'team_quota_accounts', key: 'team_id', holder: 'teams', extra: '' },
  user: { table: 'quota_accounts', key: 'user_id', holder: 'users', extra: '' },
  key: { table: 'api_key_quota_accounts', key: 'api_key_id', holder: 'api_keys', extra: ', h.user_id as owner_id' },
};

/**
 * The update of a level's accounts by a group statement: per account, the rows of `rows` grouped
 * by `groupKey` either hold (their amount joins `reserved`) or charge (their amount leaves
 * `reserved`, their charge joins `used`). `locked` is the CTE of those accounts as lockAccounts
 * read them, `used` as of the current period.
 */
function applyToAccounts(level: Level, locked: string, rows: string, groupKey: string, change: 'hold' | 'charge'): string {
  const { table, key } = LEVEL_ACCOUNTS[level];
  const [used, reserved, charged] =
    change === 'hold' ? [`${locked}.used`, 'a.reserved + g.amount', ''] : [`${locked}.used + g.charged`, 'a.reserved - g.amount', ' sum(charged) as charged,'];
  return `update ${table} a
            set used = ${used}, reserved = ${reserved},
                period_start = greatest(a.period_start, ${locked}.period_start), updated_at = now()
           from (select ${groupKey},${charged} sum(amount) as amount from ${rows} group by ${groupKey}) g join ${locked} on ${locked}.${key} = g.${groupKey}
          where a.${key} = g.${groupKey}`;
}

/**
 * The CTEs `<name>_team`, `<name>_user` and `<name>_key` that apply `rows` to the accounts of
 * each level, locked beforehand as `team`, `usr` and `akey`; `keyColumn` names the rows' key.
 */
function applyToEveryLevel(name: string, rows: string, keyColumn: string, change: 'hold' | 'charge'): string {
  return `${name}_team as (
         ${applyToAccounts('team', 'team', rows, 'team_id', change)}
       ), ${name}_user as (
         ${applyToAccounts('user', 'usr', rows, 'user_id', change)}
       ), ${name}_key as (
         ${applyToAccounts('key', 'akey', rows, keyColumn, change)}
       )`;
}

/**
 * The accounts of a level that `ids` names, locked in id order (the order every statement that
 * locks several keeps), after the CTE `after` has taken its locks; each as of the current period.
 */
function lockAccounts(level: Level, ids: string, after: string, condition = ''): string {
  const { table, key, holder, extra } = LEVEL_ACCOUNTS[level];
  return `select a.${key}, h.token_limit, ps.start as period_start, ${CURRENT_USED} as used, a.reserved${extra}
           from ${table} a
           join ${holder} h on h.id = a.${key}
           cross join lateral (select ${periodStart('h.quota_period')} as start) ps
          where a.${key} in (${ids})${condition}${after === '' ? '' : ` and (select count(*) from ${after}) >= 0`}
          order by a.${key}
          for no key update of a`;
}

/**
 * Group commit of reservations that all come with maxTokens: $1 now, then one array per field,
 * item i at index i: $2 request ids, $3 users, $4 API keys (null: an access token), $5 prompt
 * tokens, $6 completion budgets (the clients' maxTokens), $7 least completion budgets, $8 models,
 * $9 interfaces, $10 upstreams, $11 prompt count sources; $12 reservation lifetime in seconds, $13
 * the instance that holds them.
 *
 * An item is granted when it fits at each of its levels together with every item before it in
 * the group at that level, granted or not: a set that never overspends, decided in one pass. The
 * rows returned are the granted items (`ord`, from 1, and the team reserved in); an item not
 * among them (refused, a key that is invalid, a user who is gone, or one that would have fitted
 * without an earlier item) is decided again by RESERVE_SQL alone, which also names the level
 * that refuses it.
 */
export const RESERVE_GROUP_SQL = `with req as (
         select * from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], $7::bigint[],
                              $8::text[], $9::text[], $10::text[], $11::text[])
                with ordinality as r(request_id, user_id, api_key_id, prompt, completion, least_completion, model, interface, upstream, source, ord)
       ), member as (
         select r.*, u.team_id from req r join users u on u.id = r.user_id and u.disabled = false
       ), team as (
         ${lockAccounts('team', 'select team_id from member', '')}
       ), usr as (
         ${lockAccounts('user', 'select user_id from member', 'team')}
       ), akey as (
         ${lockAccounts('key', 'select api_key_id from member', 'usr', ' and h.revoked_at is null')}
       ), judged as (
         select m.*, m.prompt + m.completion as amount, k.api_key_id as valid_key_id,
                team.token_limit is null or team.used + team.reserved
                  + sum(m.prompt + m.completion) over (partition by m.team_id order by m.ord) <= team.token_limit as team_fits,
                usr.token_limit is null or usr.used + usr.reserved
                  + sum(m.prompt + m.completion) over (partition by m.user_id order by m.ord) <= usr.token_limit as user_fits,
                k.token_limit is null or k.used + k.reserved
                  + sum(m.prompt + m.completion) over (partition by m.api_key_id order by m.ord) <= k.token_limit as key_fits
           from member m
           join usr on usr.user_id = m.user_id
           left join team on team.team_id = m.team_id
           left join akey k on k.api_key_id = m.api_key_id and k.owner_id = m.user_id
          where m.api_key_id is null or k.api_key_id is not null
       ), granted as (
         select * from judged where completion >= least_completion and team_fits and user_fits and key_fits
       ), ${applyToEveryLevel('held', 'granted', 'valid_key_id', 'hold')}, ins as (
         insert into quota_reservations (request_id, user_id, team_id, api_key_id, amount, expires_at, instance_id, model, interface, upstream,
                                         prompt_count_source, prompt_tokens)
         select g.request_id, g.user_id, (select team.team_id from team where team.team_id = g.team_id), g.valid_key_id, g.amount,
                now() + make_interval(secs => $12::double precision), $13::uuid, g.model, g.interface, g.upstream, g.source, g.prompt
           from granted g
         returning request_id
       )
       select g.ord, (select team.team_id from team where team.team_id = g.team_id) as team_id
         from granted g join ins on ins.request_id = g.request_id`;

/**
 * Group commit of settlements that each charge no more than their reservation holds: $1 now,
 * then one array per field, item i at index i: $2 request ids, $3 users, $4 API keys, $5 teams
 * reserved in, $6 models, $7 interfaces, $8 prompt, $9 completion, $10 total tokens, $11 usage
 * sources, $12 prompt count sources, $13 statuses, $14 latencies in ms, $15 NOTIFY payloads, $16
 * upstreams, $17 cached prompt tokens.
 *
 * Each item is charged its total, as SETTLE_SQL would, and announced with every level's figures
 * as they stand after it: the items are applied in their order, so each event reads as if the
 * settlements had committed one by one. An item whose reservation row is gone or holds less than
 * its total is not touched and not returned: SETTLE_SQL alone settles it, exactly as before.
 */
export const SETTLE_GROUP_SQL = `with req as (
         select * from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],
                              $10::bigint[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::jsonb[], $16::text[], $17::bigint[])
                with ordinality as r(request_id, user_id, api_key_id, team_id, model, interface, prompt, completion, total, usage_source,
                                     count_source, status, latency, payload, upstream, cached, ord)
       ), res as (
         delete from quota_reservations q using req r where q.request_id = r.request_id and q.amount >= r.total
         returning q.request_id, q.amount
       ), done as (
         select r.*, res.amount from req r join res on res.request_id = r.request_id
       ), team as (
         ${lockAccounts('team', 'select team_id from done', 'res')}
       ), usr as (
         ${lockAccounts('user', 'select user_id from done', 'team')}
       ), akey as (
         ${lockAccounts('key', 'select api_key_id from done', 'usr')}
       ), rec as (
         insert into usage_records ${USAGE_RECORD_COLUMNS}
         select d.request_id, d.user_id, d.api_key_id, team.team_id, d.model, d.interface, d.prompt, d.completion, d.total,
                d.total, d.usage_source, d.count_source, d.status, d.latency, $1::timestamptz, d.upstream, d.cached
           from done d
           join usr on usr.user_id = d.user_id
           left join team on team.team_id = d.team_id
         on conflict (request_id) do nothing
         returning request_id, charged_tokens
       ), outcome as (
         select d.*, rec.request_id is not null as recorded, coalesce(rec.charged_tokens, 0) as charged
           from done d left join rec on rec.request_id = d.request_id
       ), ${applyToEveryLevel('charged', 'outcome', 'api_key_id', 'charge')}, figures as (
         select o.ord, o.recorded, o.charged, o.payload,
                usr.used + sum(o.charged) over (partition by o.user_id order by o.ord) as used,
                usr.reserved - sum(o.amount) over (partition by o.user_id order by o.ord) as reserved, usr.token_limit,
                team.used + sum(o.charged) over (partition by o.team_id order by o.ord) as team_used,
                team.reserved - sum(o.amount) over (partition by o.team_id order by o.ord) as team_reserved, team.token_limit as team_limit,
                akey.used + sum(o.charged) over (partition by o.api_key_id order by o.ord) as key_used,
                akey.reserved - sum(o.amount) over (partition by o.api_key_id order by o.ord) as key_reserved, akey.token_limit as key_limit
           from outcome o
           join usr on usr.user_id = o.user_id
           left join team on team.team_id = o.team_id
           left join akey on akey.api_key_id = o.api_key_id
       )
       select f.ord, f.used, f.reserved, f.token_limit, case when f.recorded then f.charged end as charged,
              case when f.recorded then ${announce('f.payload')} end as notified
         from figures f
        order by f.ord`;
