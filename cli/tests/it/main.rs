//! berth's binary, driven as users drive it: one test binary for every scenario (one link,
//! one build), each module a theme. What the modules share is in [`support`]: the `berth`
//! command, foreign clients (the sqlite3 shell, Python's sqlite3) and the steps that make a
//! central and its nodes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod allowlists;
mod authorization;
mod cli;
#[cfg(unix)]
mod crashloop;
mod demo;
mod flow;
mod guard;
mod schema;
mod upgrade;
mod verify;
mod watch;
