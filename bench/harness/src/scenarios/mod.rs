//! The benchmark scenarios; each returns tables of samples for the report.

pub mod durability;
pub mod footprint;
pub mod media;
pub mod realtime;
pub mod rendition;
pub mod soak;
pub mod streaming;
