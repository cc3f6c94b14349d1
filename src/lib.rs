//! Tally: a video appliance for the edge.
//!
//! Layers depend one way: [`engineio`] (transport) → [`socketio`] (protocol) → [`events`]
//! (the application's real-time events). [`http`] serves them; [`auth`] issues and checks
//! tokens; [`config`] reads settings; [`store`] keeps state, made durable through its one
//! flusher; [`housekeeping`] keeps it bounded; [`app`] assembles the service and
//! [`shutdown`] ends it in bounded time; [`text`] cleans what people type.

pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod conformance;
pub mod device;
pub mod engineio;
pub mod events;
pub mod housekeeping;
pub mod http;
pub mod jobs;
pub mod led;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod socketio;
pub mod store;
pub mod text;
