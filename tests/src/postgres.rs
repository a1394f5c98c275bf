//! Fresh event-store databases for tests.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// The URL of the configured server with another database name.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("postgres url names a database");
    format!("{base}/{database}")
}

/// Creates an empty database named `member_test_<uuid>`, migrates it and returns a pool to it.
/// `make test` drops leftovers of earlier runs.
pub async fn fresh_event_store() -> PgPool {
    fresh_event_store_with_url().await.0
}

/// [`fresh_event_store`], with the database's URL (for child processes).
pub async fn fresh_event_store_with_url() -> (PgPool, String) {
    let settings = crate::settings();
    let name = crate::unique("member_test");
    let mut admin = PgConnection::connect(settings.postgres.url.expose_secret())
        .await
        .expect("the event store answers (is the stack up? make stack-up)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = url_with_database(settings.postgres.url.expose_secret(), &name);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .expect("connect to the test database");
    member_infra::event_store::migrate(&pool)
        .await
        .expect("migrations run");
    (pool, url)
}

/// The number of stored events (all members).
pub async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// Rows of the identity-owner table that currently name an owner.
pub async fn owner_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM identity_owners WHERE member_id IS NOT NULL")
        .fetch_one(pool)
        .await
        .expect("count owners")
}
