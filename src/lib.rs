//! outhook — an outbound event-notification dispatcher in the style of OpenMetadata's webhooks.
//!
//! Data flows one way through the modules:
//! `api` (HTTP, auth, request parsing, views) and `console` (the web pages at `/ui`) →
//! `service` (each action: load, transition,
//! write, tell the dispatcher) → `domain` (validated types, pure rules) → `store`
//! (PostgreSQL or embedded SQLite behind one trait). `app` wires them together and is what
//! both the binary and the tests start.

pub mod api;
pub mod app;
pub mod bus;
pub mod clock;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod domain;
pub mod metrics;
pub mod service;
pub mod store;
