//! Delivery (stub).
use std::sync::Arc;

use pgbroker::Broker;

use crate::metrics::ServerMetrics;
use crate::server::Settings;
use crate::Result;

pub(crate) struct Deliveries;

impl Deliveries {
    pub(crate) fn start(_b: Broker, _s: Settings, _m: Arc<ServerMetrics>) -> Result<Deliveries> {
        Ok(Deliveries)
    }
    pub(crate) fn stop(self) {}
}
