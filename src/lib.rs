//! Tally: a video appliance for the edge.
//!
//! Layers depend one way: [`engineio`] (transport) → [`socketio`] (protocol) → [`events`]
//! (the application's real-time events). [`http`] serves them; [`auth`] issues and checks
//! tokens; [`config`] reads settings; [`app`] assembles the service.

pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod conformance;
pub mod device;
pub mod engineio;
pub mod events;
pub mod http;
pub mod jobs;
pub mod led;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod service;
pub mod socketio;
pub mod store;
