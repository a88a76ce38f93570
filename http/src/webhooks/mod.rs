//! Webhooks (stub).
pub(crate) mod delivery;
