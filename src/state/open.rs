//! The one place that turns a state's location into a store (SPEC 4, 11).

use std::sync::Arc;

use super::StateError;
use super::file::FileStore;
use super::object::{ObjectStore, StoreSettings};
use super::store::{Location, StateStore};

/// The store at `location` (the config's `state:`): a [`FileStore`] for a path; for an object
/// store's URL, the object store, reached with `settings` (the config's `state_store:`) over the
/// standard environment.
pub fn open(
    location: &Location,
    settings: Option<&StoreSettings>,
) -> Result<Arc<dyn StateStore>, StateError> {
    match location {
        Location::File(path) => Ok(Arc::new(FileStore::new(path.clone()))),
        Location::Object(url) => {
            let settings = settings.cloned().unwrap_or_default();
            Ok(Arc::new(ObjectStore::open(
                url,
                &settings,
                std::env::vars(),
            )?))
        }
    }
}
