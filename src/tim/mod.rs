//! Tencent Cloud Chat (TIM): everything that knows the service's wire format.
pub mod wire;
