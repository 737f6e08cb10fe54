//! The object-store tier: completed matches' final objects, durable in JetStream.

use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use match_stats_commands::MatchId;
use match_stats_commands::view::stored;

use super::{CacheError, KV_TIMEOUT_FACTOR};
use crate::read_model::MatchSnapshot;

/// Completed matches' final objects in the JetStream object store.
#[derive(Clone)]
pub struct CompletedStore {
    store: ObjectStore,
    timeout: Duration,
}

impl std::fmt::Debug for CompletedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletedStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CompletedStore {
    /// Wraps an object store; `timeout` bounds every read.
    pub fn new(store: ObjectStore, timeout: Duration) -> Self {
        CompletedStore { store, timeout }
    }

    /// Wraps an object store, its reads bounded by [`KV_TIMEOUT_FACTOR`] Redis timeouts
    /// (an object of a large match takes several NATS requests).
    pub fn with_redis_timeout(store: ObjectStore, redis_timeout: Duration) -> Self {
        Self::new(store, redis_timeout * KV_TIMEOUT_FACTOR)
    }

    /// Reads a completed match (refusing an object over the decoded-size limit).
    pub async fn get(&self, id: &MatchId) -> Result<Option<MatchSnapshot>, CacheError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut object = match self.store.get(id.as_str()).await {
                Ok(object) => object,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(CacheError::Kv(e.to_string())),
            };
            if object.info().size > stored::MAX_DECODED_BYTES {
                return Err(CacheError::Corrupt(format!(
                    "object of {} bytes",
                    object.info().size
                )));
            }
            let mut bytes = Vec::with_capacity(object.info().size);
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| CacheError::Kv(e.to_string()))?;
            Ok(Some(bytes))
        };
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))??;
        Ok(bytes
            .map(|v| stored::decode(&v).map(MatchSnapshot::from_view))
            .transpose()?)
    }

    /// The ids of every completed match stored.
    pub async fn ids(&self) -> Result<Vec<MatchId>, CacheError> {
        use futures::StreamExt;
        let mut list = self
            .store
            .list()
            .await
            .map_err(|e| CacheError::Kv(e.to_string()))?;
        let mut ids = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| CacheError::Kv(e.to_string()))?;
            if let Ok(id) = MatchId::parse(&info.name)
                && !info.deleted
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}
