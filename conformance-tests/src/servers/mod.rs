//! Test servers, started in-process on 127.0.0.1 with port 0.
//!
//! Each runs on threads of its own, records what it received, and stops when
//! dropped. A case starts its own servers, so cases never share state.

mod listener;
mod origin;
mod raw;

pub use listener::Stats;
pub use origin::{
    body_pattern, encode, encoded_body, max_overlap, Origin, RecordedRequest, BOMB_DECODED_BYTES,
};
pub use raw::{RawRequest, RawServer, Step};
