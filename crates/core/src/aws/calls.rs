//! Counts AWS calls per `service:Operation` (one per call, whatever its retries), for the scan
//! summary, the demo and the API-budget tests. Cheap enough to stay on in production.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Debug, Clone, Default)]
pub struct ApiCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl ApiCalls {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Calls made since `before` (a snapshot), leaving out operations not called.
    pub fn since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .map(|(op, n)| {
                let d = n - before.get(&op).copied().unwrap_or(0);
                (op, d)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "ApiCalls"
    }

    // Once per operation, after the operation's own configuration (which carries its name) is
    // in the bag; `read_before_execution` on a client interceptor runs before that.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let (Some(meta), Ok(mut counts)) = (cfg.load::<Metadata>(), self.0.lock()) {
            *counts
                .entry(format!("{}:{}", meta.service().to_ascii_lowercase().replace(' ', ""), meta.name()))
                .or_default() += 1;
        }
        Ok(())
    }
}
