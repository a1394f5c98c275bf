-- `member_identity_key` was declared STRICT, and PostgreSQL does not inline a STRICT SQL function
-- whose body is not itself strict (a CASE). So the identity trigger (0002) called it through the
-- SQL-function executor for every bind and unbind, parsing and planning its body each time: about
-- a tenth of PostgreSQL's CPU on the command path (perf, docs/benchmarks.md). Without STRICT it is
-- inlined into the trigger's cached expression plans. Its result is unchanged, NULL for NULL
-- included (`NULL ->> 'kind'` is NULL, and so is the concatenation); the test
-- `sql_and_rust_agree_on_identity_keys` checks every kind against the domain crate.
CREATE OR REPLACE FUNCTION member_identity_key(identity jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$
SELECT CASE
           WHEN identity ->> 'kind' = 'wechat_openid'
               THEN 'wechat_openid:' || (identity ->> 'app') || ':' || (identity ->> 'value')
           ELSE (identity ->> 'kind') || ':' || (identity ->> 'value')
           END
$$;
