//! The wire layer: framing, version negotiation and connections. Message codecs come from
//! `kafka-protocol`.

mod conn;
pub mod frame;
pub mod versions;

pub use conn::{Connection, ConnectionConfig};
