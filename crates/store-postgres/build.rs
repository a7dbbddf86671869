//! `sqlx::migrate!` embeds the migrations at compile time, but Cargo only knows to rebuild this
//! crate when its own sources change: without this line a new migration file would be missing
//! from a build made in an existing target directory (sqlx documents the same build script).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
