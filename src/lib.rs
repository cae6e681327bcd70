//! marksync keeps the marks of Tencent Cloud Chat audio-video group members equal to what a set of
//! YAML files says: it plans the difference against what it last applied and sends the fewest
//! `modify_user_info` calls that close it.
//!
//! # Layout
//! - [`model`]: group IDs, accounts, marks and the service's limits (validating newtypes).
//! - [`tim`]: the only code that knows the service's wire format: UserSig, client, error codes.
//! - [`emulator`]: a local stand-in for the service (HTTP on loopback) with a control API for
//!   tests and demos.
pub mod emulator;
pub mod model;
pub mod tim;
