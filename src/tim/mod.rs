//! Tencent Cloud Chat (TIM): everything that knows the service's wire format.
//!
//! - [`endpoint`]: the regions, their domains, and the rule every base URL passes.
//! - [`wire`]: the JSON bodies and paths.
//! - [`usersig`]: the secret key and the UserSig derived from it.
//! - [`codes`]: what each error code means and what to do about it.
//! - [`pace`]: the pace of request starts (limiter, start window, slowdown).
//! - [`client`]: the REST client: pacing, retries, UserSig renewal, errors without secrets.
//! - [`callback`]: the callbacks the service sends: query, `Sign`, bodies, reply.
pub mod callback;
pub mod client;
pub mod codes;
pub mod endpoint;
pub mod pace;
pub mod usersig;
pub mod wire;
