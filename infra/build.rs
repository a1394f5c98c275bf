//! `sqlx::migrate!` embeds `migrations/` at compile time: rebuild when a migration is added or
//! changed (sqlx's recommendation), not only when Rust sources change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
