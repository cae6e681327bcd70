//! The one place that turns the config's `state:` into a store (SPEC 4, 11).

use std::sync::Arc;

use super::StateError;
use super::file::FileStore;
use super::object::ObjectStore;
use super::store::{Location, StateStore};
use crate::config::Config;

/// The store the config's `state:` names: a [`FileStore`] for a path; for an object store's URL,
/// the object store (with `state_store:` and `lock_ttl`).
pub fn open(config: &Config) -> Result<Arc<dyn StateStore>, StateError> {
    match &config.state {
        Location::File(path) => Ok(Arc::new(FileStore::new(path.clone()))),
        Location::Object(url) => {
            let settings = config.state_store.clone().unwrap_or_default();
            Ok(Arc::new(ObjectStore::open(
                url,
                &settings,
                std::env::vars(),
            )?))
        }
    }
}
